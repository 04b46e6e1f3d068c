"""Drain with the real SDK: SIGTERM closes 1012 (disconnect 3001, reconnect); centrifuge-python
reconnects by itself to the other process on the same port and recovers."""
from __future__ import annotations

import signal
import threading

import psutil

from tests.hub.centrifuge.sdk import Sdk, wait
from tests.hub.centrifuge.test_python_sdk import run, v1
from tests.support import HubClient, HubServer, free_port, mint, uid


def test_drain_the_sdk_reconnects_and_recovers() -> None:
    """SIGTERM drains a hub (close 1012 -> disconnect 3001, reconnect): the SDK reconnects by itself
    to the other process on the same port and recovers what was published meanwhile (Protobuf)."""
    port = free_port()
    hubs = [HubServer(port=port, reuse_port=True) for _ in range(2)]
    failures: list[BaseException] = []

    def start(hub: HubServer) -> None:
        try:
            hub.start(timeout=90)  # both at once: a loaded machine starts a hub slowly
        except BaseException as exc:
            failures.append(exc)

    starters = [threading.Thread(target=start, args=(h,)) for h in hubs]
    for t in starters:
        t.start()
    for t in starters:
        t.join()
    alice, bob = uid("a"), uid("b")
    try:
        assert not failures, failures

        async def scenario() -> None:
            sdk = Sdk(hubs[0].url, mint(alice), True, min_reconnect_delay=0.5)
            await sdk.connect()
            await wait(sdk.events.server_subscribed)
            other = await v1(HubClient, hubs[0].url, mint(bob))
            try:
                room = (await v1(other.rpc, "rooms.create", members=[alice], kind="direct"))["room"]
                channel = f"chat:{room}"
                sub, events = await sdk.subscribe(channel)
                await wait(events.subscribed)
                # Drain whichever process holds the SDK's socket (they share the port).
                pid = await pid_of(sdk)
                victim = next(h for h in hubs if h.proc is not None and h.proc.pid == pid)
                survivor = next(h for h in hubs if h is not victim)
                await v1(victim.stop, signal.SIGTERM)
                other.close()  # it may have been on either process: a fresh one lands on the survivor
                sender = await v1(HubClient, survivor.url, mint(bob))
                offsets = [(await v1(sender.call, "publish", channel=channel, data={"n": n}))["offset"]
                           for n in range(3)]
                again = await wait(events.subscribed, 20)
                assert again.was_recovering and again.recovered
                assert sdk.events.disconnected.empty()  # reconnected, never gave up
                got = [await wait(events.pubs) for _ in offsets]
                assert [p.pub.offset for p in got] == offsets
                assert [sdk.dec(p.pub.data)["n"] for p in got] == [0, 1, 2]
                sender.close()
            finally:
                other.close()
            await sdk.close()

        run(scenario())
    finally:
        for h in hubs:
            h.stop()


async def pid_of(sdk: Sdk) -> int:
    """The hub process serving this SDK: its connect reply names the node, /healthz does not; ask the
    kernel which process owns the server end of the socket instead."""
    local = sdk.client._conn.transport.get_extra_info("sockname")
    for conn in psutil.net_connections("tcp"):
        if conn.raddr and (conn.raddr.ip, conn.raddr.port) == tuple(local[:2]) and conn.pid:
            return int(conn.pid)
    raise AssertionError("no process serves the SDK's socket")

