from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from core.models import AuditLog


class ReadOnly:
    """Mixed into a ModelAdmin or an inline: rows staff may list, search and open, but never add, edit
    or delete in the admin: records (the audit log, transcripts) or rows only the apps' rules change."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(AuditLog)
class AuditLogAdmin(ReadOnly, admin.ModelAdmin):
    # Read-only in the admin too: the table is append-only.
    list_display = ("at", "actor", "actor_role", "action", "target", "request_id")
    list_filter = ("action",)
    search_fields = ("actor", "target", "request_id")
