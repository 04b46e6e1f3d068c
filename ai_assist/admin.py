"""Transcripts in the Django admin, read-only: they are the record of what was asked and answered
(already redacted). Rows leave only by retention (`purge`) or erasure (`erase_user`); staff see
every tenant's rows (operators; docs/tenancy.md)."""
from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from ai_assist.models import Transcript


@admin.register(Transcript)
class TranscriptAdmin(admin.ModelAdmin):
    list_display = ("id", "created_at", "tenant", "user", "room", "provider", "outcome", "finish", "error_code",
                    "tokens_in", "tokens_out", "latency_ms")
    list_filter = ("outcome", "provider", "finish", "tenant")
    search_fields = ("=id", "user", "tenant", "=room")
    date_hierarchy = "created_at"
    ordering = ("-created_at",)
    show_full_result_count = False  # no second COUNT(*) of the whole table on every filtered page

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
