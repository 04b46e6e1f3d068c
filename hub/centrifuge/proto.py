"""A small table-driven Protobuf codec for the Centrifuge client protocol (client.proto beside it).

Only what the hub needs: client `Command`s are decoded into the same dict shape the JSON
encoding gives (field names as in the schema), server `Reply`s are encoded from that shape. A
hand-written codec instead of generated code: no generated module to keep in step with the
runtime, exact control over hostile input (every refusal is ProtoError), and a publication push
encodes in a few byte joins. Pure, no Django.
"""
from __future__ import annotations

from typing import Any

import orjson

Field = tuple[str, str, str | None]  # (name, kind, message type of msg/rep/map values)

# Field number -> (name, kind, message). Kinds: scalar types, "msg", "rep" (repeated message),
# "rep_string", "map" (map<string, message or string>). Mirrors client.proto.
SCHEMA: dict[str, dict[int, Field]] = {
    "Error": {1: ("code", "uint32", None), 2: ("message", "string", None), 3: ("temporary", "bool", None)},
    "Command": {1: ("id", "uint32", None), 4: ("connect", "msg", "ConnectRequest"),
                5: ("subscribe", "msg", "SubscribeRequest"), 6: ("unsubscribe", "msg", "UnsubscribeRequest"),
                7: ("publish", "msg", "PublishRequest"), 8: ("presence", "msg", "PresenceRequest"),
                9: ("presence_stats", "msg", "PresenceStatsRequest"), 10: ("history", "msg", "HistoryRequest"),
                11: ("ping", "msg", "PingRequest"), 12: ("send", "msg", "SendRequest"),
                13: ("rpc", "msg", "RPCRequest"), 14: ("refresh", "msg", "RefreshRequest"),
                15: ("sub_refresh", "msg", "SubRefreshRequest")},
    "Reply": {1: ("id", "uint32", None), 2: ("error", "msg", "Error"), 4: ("push", "msg", "Push"),
              5: ("connect", "msg", "ConnectResult"), 6: ("subscribe", "msg", "SubscribeResult"),
              7: ("unsubscribe", "msg", "UnsubscribeResult"), 8: ("publish", "msg", "PublishResult"),
              9: ("presence", "msg", "PresenceResult"), 10: ("presence_stats", "msg", "PresenceStatsResult"),
              11: ("history", "msg", "HistoryResult"), 12: ("ping", "msg", "PingResult"),
              13: ("rpc", "msg", "RPCResult"), 14: ("refresh", "msg", "RefreshResult"),
              15: ("sub_refresh", "msg", "SubRefreshResult")},
    "Push": {1: ("id", "int64", None), 2: ("channel", "string", None), 4: ("pub", "msg", "Publication"),
             5: ("join", "msg", "Join"), 6: ("leave", "msg", "Leave"), 7: ("unsubscribe", "msg", "Unsubscribe"),
             8: ("message", "msg", "Message"), 9: ("subscribe", "msg", "Subscribe"),
             10: ("connect", "msg", "Connect"), 11: ("disconnect", "msg", "Disconnect"),
             12: ("refresh", "msg", "Refresh")},
    "ClientInfo": {1: ("user", "string", None), 2: ("client", "string", None), 3: ("conn_info", "bytes", None),
                   4: ("chan_info", "bytes", None)},
    "Publication": {4: ("data", "bytes", None), 5: ("info", "msg", "ClientInfo"), 6: ("offset", "uint64", None),
                    7: ("tags", "map", "string"), 8: ("delta", "bool", None), 9: ("time", "int64", None),
                    10: ("channel", "string", None)},
    "Join": {1: ("info", "msg", "ClientInfo")},
    "Leave": {1: ("info", "msg", "ClientInfo")},
    "Unsubscribe": {2: ("code", "uint32", None), 3: ("reason", "string", None)},
    "Subscribe": {1: ("recoverable", "bool", None), 4: ("epoch", "string", None), 5: ("offset", "uint64", None),
                  6: ("positioned", "bool", None), 7: ("data", "bytes", None)},
    "Message": {1: ("data", "bytes", None)},
    "Connect": {1: ("client", "string", None), 2: ("version", "string", None), 3: ("data", "bytes", None),
                4: ("subs", "map", "SubscribeResult"), 5: ("expires", "bool", None), 6: ("ttl", "uint32", None),
                7: ("ping", "uint32", None), 8: ("pong", "bool", None), 9: ("session", "string", None),
                10: ("node", "string", None), 11: ("time", "int64", None)},
    "Disconnect": {1: ("code", "uint32", None), 2: ("reason", "string", None), 3: ("reconnect", "bool", None)},
    "Refresh": {1: ("expires", "bool", None), 2: ("ttl", "uint32", None)},
    "ConnectRequest": {1: ("token", "string", None), 2: ("data", "bytes", None),
                       3: ("subs", "map", "SubscribeRequest"), 4: ("name", "string", None),
                       5: ("version", "string", None), 6: ("headers", "map", "string"), 7: ("flag", "int64", None)},
    "ConnectResult": {1: ("client", "string", None), 2: ("version", "string", None), 3: ("expires", "bool", None),
                      4: ("ttl", "uint32", None), 5: ("data", "bytes", None), 6: ("subs", "map", "SubscribeResult"),
                      7: ("ping", "uint32", None), 8: ("pong", "bool", None), 9: ("session", "string", None),
                      10: ("node", "string", None), 11: ("time", "int64", None)},
    "RefreshRequest": {1: ("token", "string", None)},
    "RefreshResult": {1: ("client", "string", None), 2: ("version", "string", None), 3: ("expires", "bool", None),
                      4: ("ttl", "uint32", None)},
    "SubscribeRequest": {1: ("channel", "string", None), 2: ("token", "string", None), 3: ("recover", "bool", None),
                         6: ("epoch", "string", None), 7: ("offset", "uint64", None), 8: ("data", "bytes", None),
                         9: ("positioned", "bool", None), 10: ("recoverable", "bool", None),
                         11: ("join_leave", "bool", None), 12: ("delta", "string", None),
                         13: ("tf", "msg", "FilterNode"), 14: ("flag", "int64", None)},
    "SubscribeResult": {1: ("expires", "bool", None), 2: ("ttl", "uint32", None), 3: ("recoverable", "bool", None),
                        6: ("epoch", "string", None), 7: ("publications", "rep", "Publication"),
                        8: ("recovered", "bool", None), 9: ("offset", "uint64", None),
                        10: ("positioned", "bool", None), 11: ("data", "bytes", None),
                        12: ("was_recovering", "bool", None), 13: ("delta", "bool", None), 14: ("id", "int64", None)},
    "SubRefreshRequest": {1: ("channel", "string", None), 2: ("token", "string", None)},
    "SubRefreshResult": {1: ("expires", "bool", None), 2: ("ttl", "uint32", None)},
    "UnsubscribeRequest": {1: ("channel", "string", None)},
    "UnsubscribeResult": {},
    "PublishRequest": {1: ("channel", "string", None), 2: ("data", "bytes", None)},
    "PublishResult": {},
    "PresenceRequest": {1: ("channel", "string", None)},
    "PresenceResult": {1: ("presence", "map", "ClientInfo")},
    "PresenceStatsRequest": {1: ("channel", "string", None)},
    "PresenceStatsResult": {1: ("num_clients", "uint32", None), 2: ("num_users", "uint32", None)},
    "StreamPosition": {1: ("offset", "uint64", None), 2: ("epoch", "string", None)},
    "HistoryRequest": {1: ("channel", "string", None), 7: ("limit", "int32", None),
                       8: ("since", "msg", "StreamPosition"), 9: ("reverse", "bool", None)},
    "HistoryResult": {1: ("publications", "rep", "Publication"), 2: ("epoch", "string", None),
                      3: ("offset", "uint64", None)},
    "PingRequest": {},
    "PingResult": {},
    "RPCRequest": {1: ("data", "bytes", None), 2: ("method", "string", None)},
    "RPCResult": {1: ("data", "bytes", None)},
    "SendRequest": {1: ("data", "bytes", None)},
    "FilterNode": {1: ("op", "string", None), 2: ("key", "string", None), 3: ("cmp", "string", None),
                   4: ("val", "string", None), 5: ("vals", "rep_string", None), 6: ("nodes", "rep", "FilterNode")},
}
# Name -> (number, kind, message), for encoding.
BY_NAME: dict[str, dict[str, tuple[int, str, str | None]]] = {
    msg: {name: (num, kind, sub) for num, (name, kind, sub) in fields.items()} for msg, fields in SCHEMA.items()}

_VARINT_KINDS = frozenset({"uint32", "uint64", "int32", "int64", "bool"})
_LEN_KINDS = frozenset({"string", "bytes", "msg", "rep", "rep_string", "map"})
MAX_DEPTH = 8  # FilterNode nests; nothing the hub reads needs more
MASK64 = (1 << 64) - 1


class ProtoError(Exception):
    pass


def read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    end = len(buf)
    while True:
        if pos >= end:
            raise ProtoError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise ProtoError("varint too long")


_ONE_BYTE = [bytes((i,)) for i in range(0x80)]


def varint(n: int) -> bytes:
    if n < 0:
        n &= MASK64  # negative int64/int32 go out as ten-byte two's complement, as protobuf does
    if n < 0x80:
        return _ONE_BYTE[n]
    out = []
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def decode(msg: str, buf: bytes, depth: int = 0) -> dict[str, Any]:
    """One message of type `msg` from `buf`; unknown fields are skipped, malformed ones refused."""
    if depth > MAX_DEPTH:
        raise ProtoError("message nested too deep")
    fields = SCHEMA[msg]
    out: dict[str, Any] = {}
    pos, end = 0, len(buf)
    while pos < end:
        key = buf[pos]
        if key < 0x80:
            pos += 1
        else:
            key, pos = read_varint(buf, pos)
        num, wire = key >> 3, key & 7
        if num == 0:
            raise ProtoError("field number 0")
        spec = fields.get(num)
        if wire == 0:
            value, pos = read_varint(buf, pos)
            if spec is None:
                continue
            name, kind, _ = spec
            if kind not in _VARINT_KINDS:
                raise ProtoError(f"{msg}.{name}: wrong wire type")
            if kind == "bool":
                out[name] = value != 0
            elif kind == "uint32":
                out[name] = value & 0xFFFFFFFF
            elif kind == "int32":
                value &= 0xFFFFFFFF
                out[name] = value - (1 << 32) if value >= 1 << 31 else value
            elif kind == "int64":
                value &= MASK64
                out[name] = value - (1 << 64) if value >= 1 << 63 else value
            else:
                out[name] = value & MASK64
        elif wire == 2:
            size, pos = read_varint(buf, pos)
            stop = pos + size
            if stop > end:
                raise ProtoError("truncated field")
            chunk = buf[pos:stop]
            pos = stop
            if spec is None:
                continue
            name, kind, sub = spec
            if kind not in _LEN_KINDS:
                raise ProtoError(f"{msg}.{name}: wrong wire type")
            if kind == "string" or kind == "rep_string":
                try:
                    text = chunk.decode()
                except UnicodeDecodeError as exc:
                    raise ProtoError(f"{msg}.{name}: not UTF-8") from exc
                if kind == "string":
                    out[name] = text
                else:
                    out.setdefault(name, []).append(text)
            elif kind == "bytes":
                out[name] = chunk
            elif kind == "msg":
                assert sub is not None
                out[name] = decode(sub, chunk, depth + 1)
            elif kind == "rep":
                assert sub is not None
                out.setdefault(name, []).append(decode(sub, chunk, depth + 1))
            else:  # map entry: key = 1 (string), value = 2
                assert sub is not None
                entry = _decode_entry(chunk, sub, depth + 1)
                out.setdefault(name, {})[entry[0]] = entry[1]
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        else:
            raise ProtoError(f"unsupported wire type {wire}")
        if pos > end:
            raise ProtoError("truncated field")
    return out


def _v(buf: bytes, pos: int) -> tuple[int, int]:
    """read_varint with the one- and two-byte cases inline (ids, lengths): the publish fast path."""
    b = buf[pos]
    if b < 0x80:
        return b, pos + 1
    c = buf[pos + 1]
    if c < 0x80:
        return (b & 0x7F) | (c << 7), pos + 2
    return read_varint(buf, pos)


def decode_command(buf: bytes) -> dict[str, Any]:
    """A `Command`; the commonest one (id, then publish with channel and data, in field order, as
    every SDK writes it) read directly, anything else by the generic decoder."""
    try:
        if buf[0] == 0x08:
            cid, pos = _v(buf, 1)
            if buf[pos] == 0x3A:  # publish = 7
                size, pos = _v(buf, pos + 1)
                end = pos + size
                if end == len(buf) and buf[pos] == 0x0A:  # channel = 1
                    n, start = _v(buf, pos + 1)
                    stop = start + n
                    if stop < end and buf[stop] == 0x12:  # data = 2
                        m, dstart = _v(buf, stop + 1)
                        if dstart + m == end:
                            return {"id": cid & 0xFFFFFFFF,
                                    "publish": {"channel": buf[start:stop].decode(), "data": buf[dstart:end]}}
    except (IndexError, UnicodeDecodeError, ProtoError):
        pass  # the generic decoder says what is wrong
    return decode("Command", buf)


def _decode_entry(buf: bytes, sub: str, depth: int) -> tuple[str, Any]:
    key = ""
    value: Any = {} if sub != "string" else ""
    pos, end = 0, len(buf)
    while pos < end:
        tag, pos = read_varint(buf, pos)
        if tag & 7 != 2:
            raise ProtoError("map entry: wrong wire type")
        size, pos = read_varint(buf, pos)
        stop = pos + size
        if stop > end:
            raise ProtoError("truncated map entry")
        chunk = buf[pos:stop]
        pos = stop
        try:
            if tag >> 3 == 1:
                key = chunk.decode()
            elif tag >> 3 == 2:
                value = chunk.decode() if sub == "string" else decode(sub, chunk, depth)
        except UnicodeDecodeError as exc:
            raise ProtoError("map entry: not UTF-8") from exc
    return key, value


def encode(msg: str, obj: dict[str, Any]) -> bytes:
    """`obj` (the JSON shape) as a message of type `msg`. Zero values are left out, as proto3 does.
    A `bytes` field given anything but bytes carries that value as JSON (the hub's data is JSON)."""
    fields = BY_NAME[msg]
    parts: list[bytes] = []
    for name, value in obj.items():
        spec = fields.get(name)
        if spec is None or value is None:
            continue
        num, kind, sub = spec
        if kind in _VARINT_KINDS:
            if value:
                parts.append(varint(num << 3))
                parts.append(varint(int(value)))
        elif kind == "string":
            if value:
                raw = value.encode()
                parts += (varint(num << 3 | 2), varint(len(raw)), raw)
        elif kind == "bytes":
            raw = value if isinstance(value, bytes) else orjson.dumps(value)
            if raw:
                parts += (varint(num << 3 | 2), varint(len(raw)), raw)
        elif kind == "msg":
            assert sub is not None
            raw = encode(sub, value)
            parts += (varint(num << 3 | 2), varint(len(raw)), raw)
        elif kind == "rep":
            assert sub is not None
            for item in value:
                raw = encode(sub, item)
                parts += (varint(num << 3 | 2), varint(len(raw)), raw)
        elif kind == "map":
            assert sub is not None
            for k, v in value.items():
                kraw = k.encode()
                vraw = v.encode() if sub == "string" else encode(sub, v)
                entry = b"".join((b"\x0a", varint(len(kraw)), kraw, b"\x12", varint(len(vraw)), vraw))
                parts += (varint(num << 3 | 2), varint(len(entry)), entry)
    return b"".join(parts)


def delimited(raw: bytes) -> bytes:
    """One message as it goes in a frame: varint length, then the bytes."""
    return varint(len(raw)) + raw


def split(frame: bytes) -> list[bytes]:
    """The length-delimited messages of one binary frame."""
    out: list[bytes] = []
    pos, end = 0, len(frame)
    while pos < end:
        size, pos = read_varint(frame, pos)
        stop = pos + size
        if stop > end:
            raise ProtoError("truncated message")
        out.append(frame[pos:stop])
        pos = stop
    return out
