"""One user (or one address) cannot multiply its reach by opening sockets on several processes."""
from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.support import HubClient, HubServer, ReplyError, mint, running_hubs, uid

USER_LIMITS = {"HUB_MAX_SOCKETS_PER_USER": "3", "HUB_USER_COMMANDS_PER_S": "5", "HUB_USER_COMMAND_BURST": "10",
               "HUB_PRESENCE_TTL_S": "3"}


@pytest.fixture(scope="module")
def two_hubs() -> Iterator[tuple[HubServer, HubServer]]:
    with running_hubs(2, USER_LIMITS) as (a, b):
        yield a, b


def refused_connect(url: str, token: str) -> tuple[str, int | None]:
    c = HubClient(url)
    try:
        reply = c.request("connect", token=token)
        return reply["error"]["code"], c.wait_closed()[0]
    finally:
        c.close()


def test_sockets_per_user_are_counted_across_processes(two_hubs: tuple[HubServer, HubServer]) -> None:
    a, b = two_hubs
    user = uid()
    held = [HubClient(a.url, mint(user)), HubClient(a.url, mint(user)), HubClient(b.url, mint(user))]
    try:
        # A fourth socket is refused on either process, with a code the client can act on.
        assert refused_connect(b.url, mint(user)) == ("rate_limited", 4029)
        assert refused_connect(a.url, mint(user)) == ("rate_limited", 4029)
        # Another user is not affected; closing one socket frees a slot.
        HubClient(b.url, mint(uid())).close()
        held.pop().close()
        time.sleep(0.3)
        held.append(HubClient(a.url, mint(user)))
    finally:
        for c in held:
            c.close()


def test_a_dead_process_gives_its_sockets_back(two_hubs: tuple[HubServer, HubServer]) -> None:
    _a, b = two_hubs
    user = uid()
    doomed = HubServer(env=USER_LIMITS)
    doomed.start()
    try:
        clients = [HubClient(doomed.url, mint(user)) for _ in range(3)]
        assert refused_connect(b.url, mint(user))[1] == 4029
    finally:
        doomed.kill()
    for c in clients:
        c.close()
    deadline = time.time() + 15  # the dead process's liveness key expires (HUB_PRESENCE_TTL_S=3)
    while True:
        try:
            HubClient(b.url, mint(user)).close()
            break
        except (ReplyError, ConnectionError):
            assert time.time() < deadline, "slots of a killed process were never freed"
            time.sleep(0.5)


def test_one_command_budget_for_all_of_a_users_sockets(two_hubs: tuple[HubServer, HubServer]) -> None:
    a, b = two_hubs
    user = uid()
    with HubClient(a.url, mint(user)) as c1, HubClient(b.url, mint(user)) as c2:
        ids = [(c, c.send("presence", channel=f"user:{user}")) for _ in range(15) for c in (c1, c2)]
        codes = [c.wait_reply(i) for c, i in ids]
    ok = sum(1 for r in codes if r["ok"])
    limited = [r for r in codes if not r["ok"]]
    # Each socket alone would allow 30 (its own burst is 40); together they share ~10 plus a lease.
    assert ok <= 16, ok
    assert limited and all(r["error"]["code"] == "rate_limited" and r["error"]["retry_after_ms"] > 0
                           for r in limited)


def test_frames_sent_right_behind_connect_are_answered_in_order(two_hubs: tuple[HubServer, HubServer]) -> None:
    a, _b = two_hubs
    user = uid()
    c = HubClient(a.url)
    try:
        first = c.send("connect", token=mint(user))
        second = c.send("subscribe", channel=f"user:{user}")
        assert c.wait_reply(first)["ok"] and c.wait_reply(second)["ok"]
    finally:
        c.close()


@pytest.fixture(scope="module")
def address_hub() -> Iterator[HubServer]:
    server = HubServer(env={"HUB_MAX_SOCKETS_PER_ADDRESS": "3", "HUB_NEW_SOCKETS_PER_ADDRESS_PER_S": "1000"})
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_sockets_per_address_are_capped(address_hub: HubServer) -> None:
    open_ = [connect(address_hub.url) for _ in range(3)]
    try:
        with pytest.raises(InvalidStatus) as info:
            connect(address_hub.url)
        assert info.value.response.status_code == 403
    finally:
        for ws in open_:
            ws.close()
    time.sleep(0.3)
    ws = connect(address_hub.url)  # freed on close
    ws.send(json.dumps({"id": 1, "cmd": "connect", "token": mint(uid())}))
    assert json.loads(ws.recv())["ok"]
    ws.close()


def test_new_sockets_per_address_are_paced() -> None:
    server = HubServer(env={"HUB_NEW_SOCKETS_PER_ADDRESS_PER_S": "2"})
    server.start()
    try:
        outcomes = []
        for _ in range(8):
            try:
                connect(server.url).close()
                outcomes.append("open")
            except InvalidStatus:
                outcomes.append("refused")
        assert outcomes[:2] == ["open", "open"] and "refused" in outcomes
    finally:
        server.stop()


def test_a_second_device_on_another_process_can_work_at_once(two_hubs: tuple[HubServer, HubServer]) -> None:
    """The first socket's process leases only half the burst, so the user's phone and browser on two
    processes both get commands through right after connecting."""
    a, b = two_hubs
    user = uid()
    with HubClient(a.url, mint(user)) as phone, HubClient(b.url, mint(user)) as browser:
        assert phone.call("presence", channel=f"user:{user}") is not None
        assert browser.call("presence", channel=f"user:{user}") is not None
