"""The hub's own namespace: `user:<id>`, private to that user, written by the server only."""
from __future__ import annotations

from hub.channels import Namespace
from hub.rpc import Caller


async def _own_async(caller: Caller, ident: str) -> bool:
    return caller.user == ident


USER = Namespace("user", can_subscribe=_own_async)
