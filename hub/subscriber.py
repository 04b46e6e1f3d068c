"""What the engine and the group-commit writer need of a socket, and nothing more.

The engine writes publications and events to `Subscriber`s and cuts off the ones that fall
behind; the writer answers a publish through an opaque `Completion`. Both protocols' connections
(hub.connection, hub.centrifuge.connection) are subscribers; so is a test's fake, which lets the
engine, store, broker and presence run in-process without a server.

Deliveries go at >100k/s: the engine reads `sink`, `fmt` and `binary` as plain attributes and
writes to the sink itself, no call through the subscriber per delivery.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from core.errors import HubError
    from hub.pubs import Pub
    from hub.rpc import Caller
    from hub.sink import Sink


@runtime_checkable  # for tests; the engine never asks isinstance on its paths
class Subscriber(Protocol):
    @property
    def sink(self) -> Sink:
        """Where frames go; `sink.pending()` is what the slow-consumer cut-off measures."""

    @property
    def fmt(self) -> int:
        """The wire format publications are written in (hub.pubs: 0, 1 v1 JSON and MessagePack;
        2, 3 Centrifuge JSON and Protobuf)."""

    @property
    def binary(self) -> bool:
        """Whether frames go out as binary WebSocket messages."""

    @property
    def caller(self) -> Caller | None:
        """Who is connected (None before `connect`): revocations match on its tenant and user."""

    @property
    def iat(self) -> int | None:
        """The current token's issue time, for revocations."""

    @property
    def jti(self) -> str | None:
        """The current token's id, for revocations."""

    def wants_event(self, channel: str, frame: dict[str, Any]) -> bool:
        """Whether an ephemeral event (join, leave, signal) goes to this socket (asked for formats > 1)."""

    def close(self, code: int) -> None:
        """Close with `code` (4009 for a slow consumer, 4001 revoked, 1012 drain); idempotent."""


# Called by the writer, on the loop, once the batch holding a publication ends: with the tag the
# submitter gave (a socket's command id), the result (publication, duplicate) or the error, and the
# `time.perf_counter()` of the submit. A socket passes the same callable for all its publishes, so a
# publish allocates nothing for its answer: objects alive until their batch commits would make the
# garbage collector run more often (measured: a third more CPU per publish with one per publish).
Completion = Callable[[int, "tuple[Pub, bool] | None", "HubError | None", float], None]
