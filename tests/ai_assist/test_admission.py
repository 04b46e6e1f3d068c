"""Assist requests are admitted through the shared per-user, per-tenant and token budgets."""
from __future__ import annotations

import asyncio

import pytest

from ai_assist import relay
from core.errors import HubError
from tests.ai_assist.conftest import Relay


def test_admit_refuses_with_retry_after(assist: Relay) -> None:
    assist.configure(AI_USER_RPM="3")

    async def run() -> HubError:
        for _ in range(3):
            await relay.admit("user-rl", "tenant-rl", 10)
        with pytest.raises(HubError) as info:
            await relay.admit("user-rl", "tenant-rl", 10)
        return info.value

    err = asyncio.run(run())
    assert err.code == "rate_limited" and err.retry_after_ms is not None
    assert 19_000 <= err.retry_after_ms <= 20_000  # one request every 20 s


def test_tenant_limit_applies_across_users(assist: Relay) -> None:
    assist.configure(AI_TENANT_RPM="5")

    async def run() -> list[bool]:
        out = []
        for i in range(8):
            try:
                await relay.admit(f"user-{i}", "tenant-shared", 10)
                out.append(True)
            except HubError:
                out.append(False)
        return out

    assert asyncio.run(run()).count(True) == 5


def test_token_limit_and_oversized_requests(assist: Relay) -> None:
    assist.configure(AI_USER_TPM="1000")

    async def run() -> None:
        await relay.admit("user-tpm", "t", 600)
        with pytest.raises(HubError) as info:
            await relay.admit("user-tpm", "t", 600)
        assert info.value.code == "rate_limited"
        with pytest.raises(HubError) as info:
            await relay.admit("user-tpm2", "t", 5000)
        assert info.value.code == "too_large"

    asyncio.run(run())
