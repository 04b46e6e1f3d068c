"""notify.urls: the VAPID public key for browsers."""
from __future__ import annotations


def test_vapid_public_key_is_served_for_browsers() -> None:
    from django.test import Client

    from notify import vapid

    resp = Client().get("/api/push/vapid-public-key")
    assert resp.status_code == 200 and resp.json() == {"public_key": vapid.public_key_b64()}
    key = vapid.public_key_b64()
    assert key is not None and len(key) == 87  # 65 bytes, base64url without padding
    assert Client().post("/api/push/vapid-public-key").status_code == 405
