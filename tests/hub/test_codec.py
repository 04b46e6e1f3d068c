import json

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hub import codec


def test_parses_json_and_msgpack_alike():
    frame = {"id": 7, "cmd": "publish", "channel": "chat:r1", "data": {"text": "hi", "n": [1, 2.5, None]}}
    assert codec.parse(json.dumps(frame)) == frame
    assert codec.parse(msgpack.packb(frame)) == frame


@pytest.mark.parametrize("frame,message", [
    ("{not json", "not valid JSON"),
    (b"\xc1\xc1", "not valid MessagePack"),
    ("[1, 2]", "must be an object"),
    ('{"cmd": "connect", "token": "t"}', "id must be"),
    ('{"id": -1, "cmd": "connect", "token": "t"}', "id must be"),
    ('{"id": 1.5, "cmd": "connect", "token": "t"}', "id must be"),
    ('{"id": true, "cmd": "connect", "token": "t"}', "id must be"),
    ('{"id": 99999999999999999999999, "cmd": "connect", "token": "t"}', "not valid JSON|id must be"),
    ('{"id": 9007199254740992, "cmd": "connect", "token": "t"}', "id must be"),
    ('{"id": 1, "cmd": "explode"}', "unknown command"),
    ('{"id": 1, "cmd": 5}', "cmd must be a string"),
    ('{"id": 1, "cmd": "subscribe"}', "missing field"),
    ('{"id": 1, "cmd": "subscribe", "channel": 5}', "must be a string"),
    ('{"id": 1, "cmd": "subscribe", "channel": "nocolon"}', "namespace:id"),
    ('{"id": 1, "cmd": "subscribe", "channel": "chat:r", "since": {"offset": "1", "epoch": "e"}}', "since.offset"),
    ('{"id": 1, "cmd": "publish", "channel": "chat:r", "data": 1, "key": ""}', "key must be"),
    ('{"id": 1, "cmd": "publish", "channel": "chat:r", "data": 123456789012345678901}',
     "integers|not valid JSON|finite"),
    ('{"id": 1, "cmd": "publish", "channel": "chat:r", "data": NaN}', "not valid JSON|finite"),
    ('{"id": 1, "cmd": "history", "channel": "chat:r", "limit": -3}', "non-negative"),
    ('{"id": 1, "cmd": "rpc", "method": "x", "params": [1]}', "must be an object"),
])
def test_refusals(frame, message):
    with pytest.raises(codec.FrameError, match=message):
        codec.parse(frame)


def test_refusal_keeps_the_id_when_it_was_readable():
    with pytest.raises(codec.FrameError) as info:
        codec.parse('{"id": 4, "cmd": "nope"}')
    assert info.value.id == 4


def test_deep_nesting_is_refused():
    deep = {"id": 1, "cmd": "publish", "channel": "chat:r", "data": 0}
    inner: object = 0
    for _ in range(40):
        inner = [inner]
    deep["data"] = inner
    with pytest.raises(codec.FrameError, match="nested"):
        codec.parse(json.dumps(deep))
    with pytest.raises(codec.FrameError):
        codec.parse("[" * 100000 + "]" * 100000)


def test_msgpack_bytes_and_nonstring_keys_are_refused():
    with pytest.raises(codec.FrameError, match="unsupported"):
        codec.parse(msgpack.packb({"id": 1, "cmd": "publish", "channel": "chat:r", "data": b"raw"}))
    with pytest.raises(codec.FrameError):
        codec.parse(msgpack.packb({"id": 1, "cmd": "publish", "channel": "chat:r", "data": {1: 2}}))
    with pytest.raises(codec.FrameError):
        codec.parse(msgpack.packb({"id": 1, "cmd": "publish", "channel": "chat:r", "data": 2**63}))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4),
    max_leaves=20)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_never_crash(blob):
    try:
        codec.parse(blob)
    except codec.FrameError:
        pass
    try:
        codec.parse(blob.decode("utf-8", "replace"))
    except codec.FrameError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["id", "cmd", "channel", "data", "since", "key", "token", "limit",
                                        "method", "params"]), json_values, max_size=6))
def test_random_commands_never_crash(obj):
    frames: list[str | bytes] = [json.dumps(obj)]
    try:
        frames.append(msgpack.packb(obj, use_bin_type=True))
    except OverflowError:
        pass  # beyond what MessagePack can carry at all
    for frame in frames:
        try:
            parsed = codec.parse(frame)
        except codec.FrameError:
            continue
        assert type(parsed["id"]) is int and parsed["cmd"] in codec.COMMANDS


@pytest.mark.parametrize("channel", ["chat:r\n", "user:alice\n", "chat:r\r\n", "chat:r\n\n"])
def test_a_channel_with_a_trailing_newline_is_refused(channel):
    # `$` matched before a final newline: "chat:r\n" passed as a channel of its own, checked as room "r".
    with pytest.raises(codec.FrameError, match="namespace:id"):
        codec.parse(json.dumps({"id": 1, "cmd": "subscribe", "channel": channel}))
    assert codec.CHANNEL_RE.match(channel) is None
