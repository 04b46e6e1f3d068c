"""Agora tokens verified offline: the "006" format decoded and its HMAC recomputed by hand."""
from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import struct
import time
import zlib
from dataclasses import dataclass

import pytest
from django.test import override_settings

from core.errors import HubError
from hub.channels import check_signal, check_subscribe
from hub.rpc import Caller
from rooms import agora
from rooms.actions import calls, chat
from tests.support import uid

APP_ID = "0123456789abcdef0123456789abcdef"  # real App IDs are 32 hex characters
CERT = "fedcba9876543210fedcba9876543210"
REAL = {"AGORA_APP_ID": APP_ID, "AGORA_APP_CERTIFICATE": CERT, "AGORA_USING_DEV": False}


@dataclass
class Decoded:
    signature: bytes
    crc_channel: int
    crc_uid: int
    message: bytes
    salt: int
    ts: int
    privileges: dict[int, int]


def decode(token: str, app_id: str) -> Decoded:
    """"006" + app_id + base64(packString(sig) + u32 crc(channel) + u32 crc(uid) + packString(m)),
    m = u32 salt + u32 ts + u16 n + n * (u16 privilege, u32 expiry); all little-endian."""
    assert token.startswith("006" + app_id)
    raw = base64.b64decode(token[3 + len(app_id):])
    pos = 0

    def take(fmt: str) -> int:
        nonlocal pos
        (value,) = struct.unpack_from(fmt, raw, pos)
        pos += struct.calcsize(fmt)
        return int(value)

    def take_bytes() -> bytes:
        nonlocal pos
        n = take("<H")
        out = raw[pos:pos + n]
        pos += n
        return out

    signature = take_bytes()
    crc_channel, crc_uid = take("<I"), take("<I")
    message = take_bytes()
    assert pos == len(raw)
    salt, ts, count = struct.unpack_from("<IIH", message, 0)
    privileges = {}
    for i in range(count):
        key, value = struct.unpack_from("<HI", message, 10 + i * 6)
        privileges[key] = value
    assert 10 + count * 6 == len(message)
    return Decoded(signature, crc_channel, crc_uid, message, salt, ts, privileges)


def verify(token: str, app_id: str, cert: str, channel: str, uid_: int) -> Decoded:
    """Recompute the signature: HMAC-SHA256(cert, app_id + channel + str(uid) + m)."""
    d = decode(token, app_id)
    expected = hmac.new(cert.encode(), app_id.encode() + channel.encode() + str(uid_).encode() + d.message,
                        hashlib.sha256).digest()
    assert hmac.compare_digest(d.signature, expected), "signature mismatch"
    assert d.crc_channel == zlib.crc32(channel.encode()) & 0xFFFFFFFF
    assert d.crc_uid == zlib.crc32(str(uid_).encode()) & 0xFFFFFFFF
    return d


def test_token_verifies_offline_with_publisher_privileges() -> None:
    now = time.time()
    with override_settings(**REAL, AGORA_TOKEN_TTL_S=3600):
        out = agora.build_token("call_abc", 7, now=now)
    assert out["app_id"] == APP_ID and out["channel"] == "call_abc" and out["uid"] == 7
    assert "development" not in out
    assert out["expires_at"] == int(now) + 3600
    d = verify(out["token"], APP_ID, CERT, "call_abc", 7)
    # join (1) and publish audio/video/data (2, 3, 4), all expiring at expires_at
    assert d.privileges == {1: out["expires_at"], 2: out["expires_at"], 3: out["expires_at"],
                            4: out["expires_at"]}


def test_wrong_certificate_or_uid_does_not_verify() -> None:
    with override_settings(**REAL):
        out = agora.build_token("call_x", 3)
    with pytest.raises(AssertionError):
        verify(out["token"], APP_ID, "0" * 32, "call_x", 3)
    with pytest.raises(AssertionError):
        verify(out["token"], APP_ID, CERT, "call_x", 4)
    with pytest.raises(AssertionError):
        verify(out["token"], APP_ID, CERT, "call_y", 3)


def test_ttl_is_clamped_to_a_day() -> None:
    now = time.time()
    with override_settings(**REAL, AGORA_TOKEN_TTL_S=10 * 24 * 3600):
        out = agora.build_token("c", 1, now=now)
    assert out["expires_at"] == int(now) + 24 * 3600


def test_development_credentials_are_marked_and_refused_outside_development() -> None:
    with override_settings(AGORA_USING_DEV=True, DEVELOPMENT=True):
        out = agora.build_token("c", 1)
    assert out["development"] is True
    with override_settings(AGORA_USING_DEV=True, DEVELOPMENT=False), pytest.raises(HubError) as err:
        agora.build_token("c", 1)
    assert err.value.code == "unavailable"


def test_uids_are_nonzero_32_bit() -> None:
    with pytest.raises(ValueError):
        agora.build_token("c", 0)
    with pytest.raises(ValueError):
        agora.build_token("c", 2**32)
    for i in range(200):
        u = agora.stable_uid(f"call{i}", f"user{i}")
        assert 0 < u < 2**32
    assert agora.stable_uid("a", "b") == agora.stable_uid("a", "b")


def test_call_tokens_verify_and_strangers_get_none() -> None:
    tenant = uid("t")
    alice, bob, eve = (Caller(uid(n), "customer", tenant) for n in ("alice", "bob", "eve"))
    room = chat.create_room(alice, members=[bob.user], kind="direct")["room"]
    with override_settings(**REAL):
        started = calls.start(alice, room_id=room, media="video")
        accepted = calls.accept(bob, call_id=started["call"])
        renewed = calls.renew(bob, call_id=started["call"])
        call_id = started["call"]
        for got in (started["agora"], accepted["agora"], renewed):
            verify(got["token"], APP_ID, CERT, got["channel"], got["uid"])
        assert started["agora"]["uid"] != accepted["agora"]["uid"]
        assert accepted["agora"]["uid"] == renewed["uid"]  # stable per user per call
        assert started["agora"]["channel"] == accepted["agora"]["channel"]
        for fn in (calls.accept, calls.renew):
            with pytest.raises(HubError) as err:
                fn(eve, call_id=call_id)
            assert err.value.code == "forbidden"

    async def refused(check: object) -> str:
        try:
            await check(eve, f"call:{call_id}")  # type: ignore[operator]
        except HubError as exc:
            return exc.code
        return "allowed"

    assert asyncio.run(refused(check_subscribe)) == "forbidden"
    assert asyncio.run(refused(check_signal)) == "forbidden"
    # a participant may subscribe
    ns, via_admin = asyncio.run(check_subscribe(bob, f"call:{call_id}"))
    assert ns.name == "call" and not via_admin
