"""hub.centrifuge.ws (the endpoint, through hub.centrifuge.connection.opener): which encoding a socket
speaks, from the handshake when the SDK says, else from its first frame."""
from __future__ import annotations

from typing import Any

import pytest

from hub.centrifuge import ws
from hub.centrifuge.connection import PROTOBUF_SUBPROTOCOL, opener


class Engine:
    loop: Any = None


@pytest.mark.parametrize(("scope", "binary", "chosen", "subprotocol"), [
    ({"subprotocols": [PROTOBUF_SUBPROTOCOL]}, True, True, PROTOBUF_SUBPROTOCOL),
    ({"query_string": b"cf_protocol=protobuf"}, True, True, None),
    ({"query_string": b"format=protobuf"}, True, True, None),
    ({"query_string": b"cf_protocol=json"}, False, True, None),
    ({"query_string": b""}, False, False, None),
])
def test_the_handshake_picks_the_encoding(monkeypatch: pytest.MonkeyPatch, scope: dict[str, Any], binary: bool,
                                          chosen: bool, subprotocol: str | None) -> None:
    made: list[tuple[bool, bool]] = []
    monkeypatch.setattr("hub.centrifuge.connection.CentrifugeConnection",
                        lambda engine, sink, binary, chosen=True: made.append((binary, chosen)))
    factory, accepted = opener(scope)
    factory(Engine(), "sink")
    assert accepted == subprotocol and made == [(binary, chosen)]
    assert callable(ws.centrifuge_app)
