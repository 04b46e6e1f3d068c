"""Transcripts in the Django admin, read-only: they are the record of what was asked and answered
(already redacted). Rows leave only by retention (`purge`) or erasure (`erase_user`); staff see
every tenant's rows (operators; docs/tenancy.md)."""
from __future__ import annotations

from django.contrib import admin

from ai_assist.models import Transcript
from core.admin import ReadOnly


@admin.register(Transcript)
class TranscriptAdmin(ReadOnly, admin.ModelAdmin):
    list_display = ("id", "created_at", "tenant", "user", "room", "provider", "outcome", "finish", "error_code",
                    "tokens_in", "tokens_out", "latency_ms")
    list_filter = ("outcome", "provider", "finish", "tenant")
    search_fields = ("=id", "user", "tenant", "=room")
    date_hierarchy = "created_at"
    ordering = ("-created_at",)
    show_full_result_count = False  # no second COUNT(*) of the whole table on every filtered page

