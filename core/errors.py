"""The protocol's error codes as one exception type, shared by the socket and HTTP."""
from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

BAD_REQUEST = "bad_request"
UNAUTHORIZED = "unauthorized"
FORBIDDEN = "forbidden"
NOT_FOUND = "not_found"
CONFLICT = "conflict"
RATE_LIMITED = "rate_limited"
TOO_LARGE = "too_large"
UNAVAILABLE = "unavailable"
INTERNAL = "internal"

HTTP_STATUS = {
    BAD_REQUEST: 400,
    UNAUTHORIZED: 401,
    FORBIDDEN: 403,
    NOT_FOUND: 404,
    CONFLICT: 409,
    RATE_LIMITED: 429,
    TOO_LARGE: 413,
    UNAVAILABLE: 503,
    INTERNAL: 500,
}


class HubError(Exception):
    """A refusal with a protocol error code; `message` is safe to show to the client."""

    def __init__(self, code: str, message: str, retry_after_ms: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retry_after_ms = retry_after_ms

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"code": self.code, "message": self.message}
        if self.retry_after_ms is not None:
            out["retry_after_ms"] = self.retry_after_ms
        return out


def bad_request(message: str) -> HubError:
    return HubError(BAD_REQUEST, message)


def forbidden(message: str = "not allowed") -> HubError:
    return HubError(FORBIDDEN, message)


def not_found(message: str = "not found") -> HubError:
    return HubError(NOT_FOUND, message)


def conflict(message: str) -> HubError:
    return HubError(CONFLICT, message)


def unavailable(message: str = "a dependency is unavailable; retry") -> HubError:
    return HubError(UNAVAILABLE, message)


T = TypeVar("T")


def only(outcomes: Sequence[T | HubError]) -> T:
    """The outcome of a batch function run on one call: its result, or its refusal raised."""
    [out] = outcomes
    if isinstance(out, HubError):
        raise out
    return out
