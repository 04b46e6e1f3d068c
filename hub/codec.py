"""Frame codec and command parser: JSON text and MessagePack binary frames. Pure, no Django.

Every refusal raises FrameError with the command id when one could be read, so the caller can
answer `bad_request` to that id or, without one, just count the bad frame.
"""
from __future__ import annotations

import math
import re
from typing import Any

import msgpack
import orjson

MAX_SAFE_INT = 2**53 - 1  # what every JSON client (JavaScript included) reads exactly
MAX_DEPTH = 32
# \Z, not $: `$` also matches before a final newline, which would let "chat:r\n" through as a channel
# distinct from "chat:r" but checked as room "r".
CHANNEL_RE = re.compile(r"^([a-z][a-z0-9_]{0,31}):([A-Za-z0-9_.@=-][A-Za-z0-9_.@=:-]{0,159})\Z")

_STR, _INT, _OBJ, _ANY, _SINCE = "string", "integer", "object", "any", "since"

# Field -> (kind, required). Anything not listed is ignored (clients may add fields).
COMMANDS: dict[str, dict[str, tuple[str, bool]]] = {
    "connect": {"token": (_STR, True)},
    "refresh": {"token": (_STR, True)},
    "subscribe": {"channel": (_STR, True), "since": (_SINCE, False)},
    "unsubscribe": {"channel": (_STR, True)},
    "publish": {"channel": (_STR, True), "data": (_ANY, True), "key": (_STR, False)},
    "history": {"channel": (_STR, True), "after": (_INT, False), "before": (_INT, False),
                "limit": (_INT, False)},
    "presence": {"channel": (_STR, True)},
    "signal": {"channel": (_STR, True), "data": (_ANY, True)},
    "rpc": {"method": (_STR, True), "params": (_OBJ, False)},
}


class FrameError(Exception):
    def __init__(self, message: str, id: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.id = id


def decode(frame: str | bytes) -> Any:
    """Bytes of a frame to a Python value; FrameError if it is not JSON / MessagePack."""
    try:
        if isinstance(frame, str):
            return orjson.loads(frame)
        return msgpack.unpackb(frame, raw=False, strict_map_key=True, use_list=True)
    except (orjson.JSONDecodeError, ValueError, TypeError, msgpack.UnpackException,
            msgpack.ExtraData, RecursionError, OverflowError) as exc:
        kind = "JSON" if isinstance(frame, str) else "MessagePack"
        raise FrameError(f"frame is not valid {kind}") from exc


def parse(frame: str | bytes) -> dict[str, Any]:
    """Decode and validate one client command. Returns the frame object with a checked `id`."""
    obj = decode(frame)
    if not isinstance(obj, dict):
        raise FrameError("a command must be an object")
    cid = obj.get("id")
    if not isinstance(cid, int) or type(cid) is not int or cid <= 0 or cid > MAX_SAFE_INT:
        raise FrameError("id must be a positive integer below 2^53")
    cmd = obj.get("cmd")
    if not isinstance(cmd, str):
        raise FrameError("cmd must be a string", cid)
    spec = COMMANDS.get(cmd)
    if spec is None:
        raise FrameError(f"unknown command {cmd[:40]!r}", cid)
    for field, (kind, required) in spec.items():
        if field not in obj or (obj[field] is None and not required):
            if required:
                raise FrameError(f"{cmd}: missing field {field!r}", cid)
            continue
        _check_field(cmd, field, kind, obj[field], cid)
    return obj


def _check_field(cmd: str, field: str, kind: str, value: Any, cid: int) -> None:
    if kind == _STR:
        if not isinstance(value, str):
            raise FrameError(f"{cmd}: {field} must be a string", cid)
        if field == "channel" and CHANNEL_RE.match(value) is None:
            raise FrameError(f"{cmd}: channel must look like namespace:id", cid)
        if field == "key" and not (0 < len(value) <= 64):
            raise FrameError(f"{cmd}: key must be 1 to 64 characters", cid)
        if field in ("token", "method") and len(value) > 4096:
            raise FrameError(f"{cmd}: {field} too long", cid)
    elif kind == _INT:
        if type(value) is not int or value < 0 or value > MAX_SAFE_INT:
            raise FrameError(f"{cmd}: {field} must be a non-negative integer below 2^53", cid)
    elif kind == _OBJ:
        if not isinstance(value, dict):
            raise FrameError(f"{cmd}: {field} must be an object", cid)
        check_data(value, cid)
    elif kind == _SINCE:
        if not isinstance(value, dict):
            raise FrameError(f"{cmd}: since must be an object {{offset, epoch}}", cid)
        off, epoch = value.get("offset"), value.get("epoch")
        if type(off) is not int or off < 0 or off > MAX_SAFE_INT:
            raise FrameError(f"{cmd}: since.offset must be a non-negative integer", cid)
        if not isinstance(epoch, str) or len(epoch) > 64:
            raise FrameError(f"{cmd}: since.epoch must be a string", cid)
    else:
        check_data(value, cid)


def check_data(value: Any, cid: int | None = None, depth: int = 0) -> None:
    """Only what both JSON and MessagePack clients can read: no bytes, NaN, huge ints, deep nests."""
    t = type(value)
    if t is str or t is bool or value is None:
        return
    if t is int:
        if -MAX_SAFE_INT <= value <= MAX_SAFE_INT:
            return
        raise FrameError("integers must be within +/-(2^53-1)", cid)
    if t is float:
        # Huge JSON integers arrive as floats (lossy): refuse magnitudes beyond exact integers too.
        if math.isfinite(value) and -MAX_SAFE_INT <= value <= MAX_SAFE_INT:
            return
        raise FrameError("numbers must be finite and within +/-(2^53-1) (huge integers are refused)", cid)
    if depth >= MAX_DEPTH:
        raise FrameError(f"data nested deeper than {MAX_DEPTH} levels", cid)
    if t is dict:
        for k, v in value.items():
            if type(k) is not str:
                raise FrameError("object keys must be strings", cid)
            check_data(v, cid, depth + 1)
        return
    if t is list:
        for v in value:
            check_data(v, cid, depth + 1)
        return
    raise FrameError(f"unsupported value type {t.__name__}", cid)


def encode(obj: Any, binary: bool) -> bytes:
    return msgpack.packb(obj, use_bin_type=True) if binary else orjson.dumps(obj)
