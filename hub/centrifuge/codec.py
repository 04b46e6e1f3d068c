"""Centrifuge frames, both encodings, and the hub's errors and close codes in Centrifuge numbers.

JSON: a text frame holds one or more commands (replies), one JSON object per line; `data` fields
are JSON values. Protobuf: a binary frame holds varint-length-delimited `Command`s (`Reply`s);
`data` fields are bytes, which for this hub always hold JSON (the hub's publications and rpc
params are JSON), so a Protobuf client sends and receives UTF-8 JSON in every `data`.

Both are decoded into one dict shape (schema field names), so the connection logic is one.
"""
from __future__ import annotations

from typing import Any

import orjson

from core.errors import (
    BAD_REQUEST,
    CONFLICT,
    FORBIDDEN,
    INTERNAL,
    NOT_FOUND,
    RATE_LIMITED,
    TOO_LARGE,
    UNAUTHORIZED,
    UNAVAILABLE,
    HubError,
)
from hub import codec as v1codec
from hub.centrifuge import proto

JSON, PROTOBUF = 2, 3  # the connections' wire formats (hub.pubs: 0 and 1 are protocol v1's)

MAX_COMMANDS_PER_FRAME = 100
COMMANDS = frozenset({"connect", "subscribe", "unsubscribe", "publish", "presence", "presence_stats",
                      "history", "ping", "send", "rpc", "refresh", "sub_refresh"})

# --- error codes (replies) ---------------------------------------------------------------------

E_INTERNAL, E_UNAUTHORIZED, E_UNKNOWN_CHANNEL, E_PERMISSION_DENIED = 100, 101, 102, 103
E_METHOD_NOT_FOUND, E_ALREADY_SUBSCRIBED, E_LIMIT_EXCEEDED, E_BAD_REQUEST = 104, 105, 106, 107
E_NOT_AVAILABLE, E_TOKEN_EXPIRED, E_EXPIRED, E_TOO_MANY_REQUESTS, E_UNRECOVERABLE = 108, 109, 110, 111, 112
# Hub errors with no Centrifuge counterpart, in the range Centrifuge leaves to applications.
E_NOT_FOUND, E_CONFLICT = 404, 409

_BY_HUB_CODE = {
    BAD_REQUEST: E_BAD_REQUEST, UNAUTHORIZED: E_UNAUTHORIZED, FORBIDDEN: E_PERMISSION_DENIED,
    NOT_FOUND: E_NOT_FOUND, CONFLICT: E_CONFLICT, RATE_LIMITED: E_TOO_MANY_REQUESTS,
    TOO_LARGE: E_LIMIT_EXCEEDED, UNAVAILABLE: E_NOT_AVAILABLE, INTERNAL: E_INTERNAL,
}
# Worth retrying as they are: the SDKs retry temporary errors (subscribe, refresh) with backoff.
_TEMPORARY = frozenset({E_INTERNAL, E_NOT_AVAILABLE, E_TOO_MANY_REQUESTS})


def error_of(err: HubError, kind: str | None) -> dict[str, Any]:
    """A hub refusal as a Centrifuge `Error`: same message, the protocol's number."""
    code = _BY_HUB_CODE.get(err.code, E_INTERNAL)
    msg = err.message
    if err.code == UNAUTHORIZED and "expired" in msg:
        code = E_TOKEN_EXPIRED
    elif err.code == BAD_REQUEST and msg.startswith("unknown namespace"):
        code = E_UNKNOWN_CHANNEL
    elif err.code == BAD_REQUEST and msg.startswith("unknown method"):
        code = E_METHOD_NOT_FOUND
    elif err.code == CONFLICT and kind == "subscribe":
        code = E_ALREADY_SUBSCRIBED
    out: dict[str, Any] = {"code": code, "message": msg}
    if code in _TEMPORARY:
        out["temporary"] = True
    return out


# --- disconnect codes (WebSocket close) ---------------------------------------------------------

D_SHUTDOWN, D_SERVER_ERROR, D_EXPIRED, D_SLOW = 3001, 3004, 3005, 3008
D_INVALID_TOKEN, D_BAD_REQUEST, D_STALE, D_CONNECTION_LIMIT = 3500, 3501, 3502, 3504

# protocol v1 close code -> Centrifuge disconnect code. 3000-3499: the SDKs reconnect; 3500-3999:
# they do not.
CLOSE_CODES = {
    1012: D_SHUTDOWN,  # drain or restart: reconnect (to another process) and recover
    4001: D_INVALID_TOKEN,  # bad or revoked token: do not reconnect with it
    4002: D_EXPIRED,  # token expired without a refresh: reconnect, the SDK gets a new token
    4009: D_SLOW,  # slow consumer: reconnect and recover
    4010: D_BAD_REQUEST,  # too many malformed frames
    4029: D_CONNECTION_LIMIT,  # too many sockets for this user
}


# --- input --------------------------------------------------------------------------------------

def parse(frame: str | bytes, binary: bool) -> list[dict[str, Any]]:
    """The commands of one frame; FrameError if the frame as a whole cannot be read. A command that
    decodes but is malformed comes back as {"id": n, "_bad": reason} so it can be answered."""
    if binary:
        if not isinstance(frame, bytes):
            raise v1codec.FrameError("a Protobuf connection sends binary frames")
        try:
            # One command whose length fits a byte (a publish, usually): no split.
            raws = [frame[1:]] if frame and frame[0] + 1 == len(frame) else proto.split(frame)
        except proto.ProtoError as exc:
            raise v1codec.FrameError(f"bad Protobuf framing: {exc}") from exc
        if len(raws) > MAX_COMMANDS_PER_FRAME:
            raise v1codec.FrameError(f"at most {MAX_COMMANDS_PER_FRAME} commands per frame")
        out = []
        for raw in raws:
            try:
                out.append(proto.decode_command(raw))
            except proto.ProtoError as exc:
                raise v1codec.FrameError(f"bad Protobuf command: {exc}") from exc
        return out
    if not isinstance(frame, str):
        raise v1codec.FrameError("a JSON connection sends text frames")
    lines = [line for line in frame.split("\n") if line.strip()] if "\n" in frame else [frame]
    if len(lines) > MAX_COMMANDS_PER_FRAME:
        raise v1codec.FrameError(f"at most {MAX_COMMANDS_PER_FRAME} commands per frame")
    cmds = []
    for line in lines:
        obj = v1codec.decode(line)
        if not isinstance(obj, dict):
            raise v1codec.FrameError("a command must be an object")
        cmds.append(obj)
    return cmds


def reencode(cmds: list[dict[str, Any]], binary: bool) -> str | bytes:
    """Decoded commands back into one frame (to hold the rest of a frame while connect runs)."""
    if binary:
        return b"".join(proto.delimited(proto.encode("Command", c)) for c in cmds)
    return "\n".join(orjson.dumps(c).decode() for c in cmds)


def command_kind(cmd: dict[str, Any]) -> tuple[int, str | None, dict[str, Any]]:
    """(id, kind, request) of a decoded command; kind None for an empty command (a pong).
    FrameError (with the id when usable) for anything malformed."""
    cid = cmd.get("id", 0)
    if type(cid) is not int or cid < 0 or cid > 0xFFFFFFFF:
        raise v1codec.FrameError("id must be an unsigned 32-bit integer")
    found = [k for k in cmd if k in COMMANDS]
    if not found:
        if cid:
            raise v1codec.FrameError("no method in the command", cid)
        return 0, None, {}
    if len(found) > 1:
        raise v1codec.FrameError("one method per command", cid or None)
    kind = found[0]
    if cid == 0 and kind != "send":
        raise v1codec.FrameError(f"{kind} needs an id")
    req = cmd[kind]
    if req is None:
        req = {}
    if not isinstance(req, dict):
        raise v1codec.FrameError(f"{kind} must be an object", cid or None)
    return cid, kind, req


def load_data(raw: Any, binary: bool, cid: int | None) -> Any:
    """A `data` field as the JSON value the hub works with; FrameError if it is not JSON."""
    if binary:
        if not isinstance(raw, bytes):
            raise v1codec.FrameError("data must be bytes", cid)
        try:
            value = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise v1codec.FrameError("data must be UTF-8 JSON (this hub carries JSON)", cid) from exc
    else:
        value = raw
    v1codec.check_data(value, cid)
    return value


# --- output -------------------------------------------------------------------------------------

def encode(reply: dict[str, Any], binary: bool) -> bytes:
    if binary:
        return proto.delimited(proto.encode("Reply", reply))
    return orjson.dumps(reply)


PING_JSON = b"{}"
PING_PROTOBUF = b"\x00"  # an empty Reply, length-delimited


def publication(item: dict[str, Any]) -> dict[str, Any]:
    """A hub publication (Pub.as_item shape) as a Centrifuge `Publication`."""
    pub: dict[str, Any] = {"data": item["data"], "offset": item["offset"]}
    sender = item.get("from")
    if sender:
        pub["info"] = {"user": sender, "client": ""}
    return pub


def pub_push(channel: str, offset: int, sender: str | None, data_json: bytes, binary: bool) -> bytes:
    """A publication push, built by hand: it is the fan-out's hot path (one per publication and format).
    No `time` (the SDKs do not expose it)."""
    if binary:
        v = proto.varint
        pub = b"\x22" + v(len(data_json)) + data_json  # data = 4
        if sender:
            user = sender.encode()
            info = b"\x0a" + v(len(user)) + user
            pub += b"\x2a" + v(len(info)) + info  # info = 5
        pub += b"\x30" + v(offset)  # offset = 6
        ch = channel.encode()
        push = b"\x12" + v(len(ch)) + ch + b"\x22" + v(len(pub)) + pub  # channel = 2, pub = 4
        reply = b"\x22" + v(len(push)) + push  # Reply.push = 4
        return v(len(reply)) + reply
    info = b',"info":{"user":%s,"client":""}' % orjson.dumps(sender) if sender else b""
    return b'{"push":{"channel":%s,"pub":{"data":%s,"offset":%d%s}}}' % (
        orjson.dumps(channel), data_json, offset, info)


def event_push(frame: dict[str, Any], binary: bool) -> bytes:
    """A v1 event as a Centrifuge push: join and leave as such; anything else (a call `signal`) as
    a publication without offset on its channel, carrying the v1 frame as data."""
    kind = frame.get("push")
    channel = frame["channel"]
    if kind in ("join", "leave"):
        push: dict[str, Any] = {"channel": channel, kind: {"info": {"user": frame["user"], "client": ""}}}
    else:
        pub: dict[str, Any] = {"data": frame}
        if frame.get("from"):
            pub["info"] = {"user": frame["from"], "client": ""}
        push = {"channel": channel, "pub": pub}
    return encode({"push": push}, binary)


def ephemeral_pub(channel: str, obj: Any, binary: bool) -> bytes:
    """A publication without offset (not stored, not recovered): how pushes outside channels reach SDKs."""
    return encode({"push": {"channel": channel, "pub": {"data": obj}}}, binary)
