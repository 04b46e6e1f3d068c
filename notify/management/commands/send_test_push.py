"""send_test_push --user U [--tenant T]: a test notification to each of U's devices, sent now.

Goes through the outbox like any push (preferences do not apply to a test) and is delivered by
this command itself, so it works with no hub running; prints each device's outcome.
"""
from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from notify import actions, content, delivery
from notify.models import Device, Outbox
from notify.worker import Worker, providers


class Command(BaseCommand):
    help = "Send a test push to every device of a user (in a tenant) and print the outcomes."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--user", required=True)
        parser.add_argument("--tenant", default="default")

    def handle(self, *args: Any, **opts: Any) -> None:
        user, tenant = opts["user"], opts["tenant"]
        devices = list(Device.objects.filter(tenant=tenant, user=user))
        if not devices:
            raise CommandError(f"{user} has no registered device in tenant {tenant}")
        now = time.time()
        spec = content.test_spec(now)
        with transaction.atomic():
            actions.enqueue(tenant, user, spec, now, devices)
            ids = list(Outbox.objects.filter(tenant=tenant, user=user, collapse_key=spec.collapse_key,
                                             state="pending").values_list("id", flat=True))
        results = asyncio.run(_send(ids))
        for line in results:
            self.stdout.write(orjson.dumps(line).decode())


async def _send(ids: list[int]) -> list[dict[str, Any]]:
    from asgiref.sync import sync_to_async

    worker = Worker(providers(), foreground=_nobody)
    jobs = await sync_to_async(delivery.claim, thread_sensitive=True)(time.time(), len(ids), ids)
    out = []
    done = []
    for job in jobs:
        d = await worker.attempt(job)
        done.append(d)
        out.append({"device": job.device, "platform": job.platform, "outcome": d.state, "reason": d.reason})
    await sync_to_async(delivery.record, thread_sensitive=True)(done, time.time())
    await worker.drain(1)
    return out


async def _nobody(users: list[str]) -> set[str]:
    return set()
