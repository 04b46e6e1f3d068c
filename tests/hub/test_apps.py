"""hub.apps: the hub's ready() registers its whole surface (docs/developing.md's registry table)."""
from __future__ import annotations

from core import metrics
from core import privacy as registry
from hub import channels, namespaces, privacy, revocation, rpc, tasks


def test_ready_registers_the_hubs_namespace_methods_privacy_and_sweeps() -> None:
    assert channels.NAMESPACES["user"] is namespaces.USER
    assert "tokens.revoke" in rpc.REGISTRY
    assert registry.REGISTRY["hub"] is privacy.ENTRY
    assert {("revocations", revocation.load_at_start), ("erasures", privacy.erasures_at_start)} <= set(tasks.STARTUP)
    assert {"revocations", "revocations.prune", "erasures"} <= {name for name, _s, _fn in tasks.SWEEPS}
    assert metrics._engine_source is not tuple  # /metrics reads this process's engines
