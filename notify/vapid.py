"""The hub's VAPID key pair (Web Push): from the environment, a key file, or, in development,
generated on first start and kept under var/ so Web Push works out of the box."""
from __future__ import annotations

import base64
import logging
import os
import threading
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from django.conf import settings

log = logging.getLogger("notify.vapid")
_lock = threading.Lock()
_key: ec.EllipticCurvePrivateKey | None = None


def _load_pem(pem: bytes) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise ValueError("the VAPID key must be a P-256 (prime256v1) EC private key")
    return key


def private_key() -> ec.EllipticCurvePrivateKey | None:
    """The key, or None when Web Push is not configured (no key, not development)."""
    global _key
    if _key is not None:
        return _key
    with _lock:
        if _key is not None:
            return _key
        if settings.WEBPUSH_VAPID_PRIVATE_KEY:
            _key = _load_pem(settings.WEBPUSH_VAPID_PRIVATE_KEY.encode())
            return _key
        path = settings.WEBPUSH_VAPID_KEY_FILE
        if not path:
            return None
        file = Path(path)
        if file.exists():
            _key = _load_pem(file.read_bytes())
            return _key
        if not settings.DEVELOPMENT:
            log.error("WEBPUSH_VAPID_KEY_FILE does not exist; Web Push is off")
            return None
        key = ec.generate_private_key(ec.SECP256R1())
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        file.parent.mkdir(parents=True, exist_ok=True)
        # Created readable by this user only; a concurrent first start keeps whichever file won.
        try:
            fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            _key = _load_pem(file.read_bytes())
            return _key
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
        log.info("generated a development VAPID key pair (public key at /api/push/vapid-public-key)")
        _key = key
        return _key


def public_key_b64() -> str | None:
    """The public key as browsers want it for `applicationServerKey` (base64url, uncompressed point)."""
    key = private_key()
    if key is None:
        return None
    raw = key.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def reset() -> None:
    """Forget the loaded key (tests that change the settings)."""
    global _key
    _key = None
