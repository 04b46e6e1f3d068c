"""A protocol v1 client on websocket-client: blocking calls, one reader per socket.

gevent-friendly: under Locust (gevent monkey-patched) the reader thread is a greenlet and the
socket cooperative; without Locust it is a plain thread. No asyncio.

Replies are matched by id. A reply callback (`on_reply`) runs in the reader before any later
frame is handled, so a subscribe's tracker state is in place before that channel's first push.
Pushes go to `on_push` (also in the reader: keep it short), and are kept in a short ring so
`wait_for(match)` finds a push that arrived before it was asked for (no race with the reply).
Each push gets `_rx` (time.perf_counter() on arrival).
"""
from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import orjson
import websocket

Push = dict[str, Any]
RECENT = 256


class HubError(Exception):
    def __init__(self, code: str, message: str = "", retry_after_ms: int | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.retry_after_ms = retry_after_ms


class Closed(Exception):
    pass


class _Waiter:
    __slots__ = ("event", "value", "error", "callback")

    def __init__(self, callback: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.event = threading.Event()
        self.value: dict[str, Any] | None = None
        self.error: Exception | None = None
        self.callback = callback


class _PushWaiter:
    __slots__ = ("match", "event", "value")

    def __init__(self, match: Callable[[Push], bool]) -> None:
        self.match = match
        self.event = threading.Event()
        self.value: Push | None = None


class HubSocket:
    def __init__(self, url: str, on_push: Callable[[Push], None] | None = None, timeout: float = 10) -> None:
        self.url = url
        self.on_push = on_push
        self.ids = itertools.count(1)
        self.pending: dict[int, _Waiter] = {}
        self.push_waiters: list[_PushWaiter] = []
        self.recent: deque[Push] = deque(maxlen=RECENT)
        self.lock = threading.Lock()
        self.closed: str | None = None
        self.close_code: int | None = None
        # orjson rejects a frame that is not UTF-8; websocket-client's own check is pure Python per byte.
        self.ws = websocket.create_connection(url, timeout=timeout, enable_multithread=True,
                                             skip_utf8_validation=True)
        self.ws.settimeout(None)  # the reader blocks; server pings keep the socket alive
        self.reader = threading.Thread(target=self._read, name="hub-ws-reader", daemon=True)
        self.reader.start()

    # --- reading ----------------------------------------------------------------------------

    def _read(self) -> None:
        reason = "closed"
        try:
            while True:
                opcode, frame = self.ws.recv_data()
                if opcode == websocket.ABNF.OPCODE_CLOSE:
                    if len(frame) >= 2:
                        self.close_code = int.from_bytes(frame[:2], "big")
                    reason = f"closed {self.close_code}"
                    break
                if opcode not in (websocket.ABNF.OPCODE_TEXT, websocket.ABNF.OPCODE_BINARY):
                    continue
                self._dispatch(orjson.loads(frame))
        except Exception as exc:  # noqa: BLE001 - any read failure ends this socket
            reason = f"{type(exc).__name__}: {exc}" if self.closed is None else self.closed
        self._fail_all(reason)

    def _dispatch(self, msg: dict[str, Any]) -> None:
        if "push" in msg:
            msg["_rx"] = time.perf_counter()
            if self.on_push is not None:
                self.on_push(msg)
            with self.lock:
                self.recent.append(msg)
                hits = [w for w in self.push_waiters if w.value is None and w.match(msg)]
            for w in hits:
                w.value = msg
                w.event.set()
            return
        cid = msg.get("id")
        with self.lock:
            waiter = self.pending.pop(cid, None) if isinstance(cid, int) else None
        if waiter is None:
            return
        waiter.value = msg
        if waiter.callback is not None and msg.get("ok"):
            try:
                waiter.callback(msg["result"])
            except Exception as exc:  # noqa: BLE001 - surfaced to the caller
                waiter.error = exc
        waiter.event.set()

    def _fail_all(self, reason: str) -> None:
        with self.lock:
            if self.closed is None:
                self.closed = reason
            waiters, self.pending = list(self.pending.values()), {}
        for w in waiters:
            w.error = Closed(reason)
            w.event.set()

    # --- commands ---------------------------------------------------------------------------

    def send(self, cmd: str, on_reply: Callable[[dict[str, Any]], None] | None = None, **fields: Any) -> _Waiter:
        cid = next(self.ids)
        waiter = _Waiter(on_reply)
        with self.lock:
            if self.closed is not None:
                raise Closed(self.closed)
            self.pending[cid] = waiter
        try:
            self.ws.send(orjson.dumps({"id": cid, "cmd": cmd, **fields}), websocket.ABNF.OPCODE_TEXT)
        except Exception as exc:
            with self.lock:
                self.pending.pop(cid, None)
            raise Closed(f"send failed: {exc}") from exc
        return waiter

    @staticmethod
    def wait(waiter: _Waiter, timeout: float = 10) -> Any:
        if not waiter.event.wait(timeout):
            raise TimeoutError("no reply")
        if waiter.error is not None:
            raise waiter.error
        assert waiter.value is not None
        if not waiter.value.get("ok"):
            err = waiter.value.get("error") or {}
            retry = err.get("retry_after_ms")
            raise HubError(str(err.get("code")), str(err.get("message", "")),
                           retry if isinstance(retry, int) else None)
        return waiter.value["result"]

    def call(self, cmd: str, timeout: float = 10, on_reply: Callable[[dict[str, Any]], None] | None = None,
             **fields: Any) -> Any:
        return self.wait(self.send(cmd, on_reply=on_reply, **fields), timeout)

    def rpc(self, method: str, params: dict[str, Any], timeout: float = 15) -> Any:
        return self.call("rpc", timeout=timeout, method=method, params=params)

    # --- pushes -----------------------------------------------------------------------------

    def wait_for(self, match: Callable[[Push], bool], timeout: float) -> Push:
        """The first push (recent or coming) that `match`es; TimeoutError / Closed otherwise."""
        waiter = _PushWaiter(match)
        with self.lock:
            for msg in self.recent:
                if match(msg):
                    return msg
            self.push_waiters.append(waiter)
        try:
            deadline = time.monotonic() + timeout
            while not waiter.event.wait(min(0.5, max(0.0, deadline - time.monotonic()))):
                if self.closed is not None:
                    raise Closed(self.closed)
                if time.monotonic() >= deadline:
                    raise TimeoutError("no push")
            assert waiter.value is not None
            return waiter.value
        finally:
            with self.lock:
                if waiter in self.push_waiters:
                    self.push_waiters.remove(waiter)

    # --- closing ----------------------------------------------------------------------------

    def close(self) -> None:
        with self.lock:
            if self.closed is None:
                self.closed = "closed by client"
        try:
            self.ws.close(timeout=1)
        except Exception:  # noqa: BLE001
            pass

    def abort(self) -> None:
        """Drop the connection without a close handshake (a network failure, as the hub sees it)."""
        with self.lock:
            if self.closed is None:
                self.closed = "aborted by client"
        try:
            self.ws.shutdown()
        except Exception:  # noqa: BLE001
            pass
