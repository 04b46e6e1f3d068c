"""The kernel's one table: the append-only audit log (core.audit)."""
from __future__ import annotations

from django.db import models


class AuditLog(models.Model):
    """Append-only: application code only ever inserts (see core.audit)."""

    id = models.BigAutoField(primary_key=True)
    at = models.DateTimeField(auto_now_add=True, db_index=True)
    actor = models.CharField(max_length=128)
    actor_role = models.CharField(max_length=32, blank=True, default="")
    tenant = models.CharField(max_length=128, blank=True, default="")
    action = models.CharField(max_length=64, db_index=True)
    target = models.CharField(max_length=256, blank=True, default="")
    request_id = models.CharField(max_length=64, blank=True, default="")
    detail = models.JSONField(default=dict, blank=True)

    class Meta:
        db_table = "core_audit"
        ordering = ["-id"]

    def save(self, *args: object, **kwargs: object) -> None:
        if self.pk is not None and not kwargs.get("force_insert"):
            raise RuntimeError("audit rows are append-only")
        super().save(*args, **kwargs)  # type: ignore[arg-type]

    def delete(self, *args: object, **kwargs: object) -> tuple[int, dict[str, int]]:
        raise RuntimeError("audit rows are append-only")
