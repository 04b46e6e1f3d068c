"""Admin views of jobs, bids, queries and call records (read-mostly: changes go through the rpc API)."""
from __future__ import annotations

from typing import ClassVar

from django.contrib import admin

from rooms.models import (
    Bid,
    Call,
    CallParticipant,
    Job,
    JobAnswer,
    JobComment,
    JobQuery,
)


class BidInline(admin.TabularInline):
    model = Bid
    extra = 0
    fields = ("id", "provider", "amount", "currency", "status", "replaces", "created_at")
    readonly_fields = fields
    can_delete = False


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    list_display = ("id", "title", "category", "status", "owner", "provider", "budget", "currency",
                    "tenant", "created_at")
    list_filter = ("status", "category", "tenant")
    search_fields = ("id", "title", "owner", "provider")
    readonly_fields = ("created_at", "updated_at", "accepted_at", "started_at", "completed_at",
                       "cancelled_at")
    inlines: ClassVar[list[type[admin.options.InlineModelAdmin]]] = [BidInline]


@admin.register(Bid)
class BidAdmin(admin.ModelAdmin):
    list_display = ("id", "job", "provider", "amount", "currency", "status", "created_at")
    list_filter = ("status", "currency")
    search_fields = ("id", "job__id", "provider")


@admin.register(JobComment)
class JobCommentAdmin(admin.ModelAdmin):
    list_display = ("id", "job", "author", "author_role", "created_at")
    search_fields = ("id", "job__id", "author", "text")


class JobAnswerInline(admin.TabularInline):
    model = JobAnswer
    extra = 0
    fields = ("id", "author", "text", "created_at")
    readonly_fields = fields


@admin.register(JobQuery)
class JobQueryAdmin(admin.ModelAdmin):
    list_display = ("id", "job", "author", "created_at")
    search_fields = ("id", "job__id", "author", "text")
    inlines: ClassVar[list[type[admin.options.InlineModelAdmin]]] = [JobAnswerInline]


class CallParticipantInline(admin.TabularInline):
    model = CallParticipant
    extra = 0
    fields = ("user", "uid", "is_caller", "status", "busy", "invited_at", "joined_at", "responded_at")
    readonly_fields = fields
    can_delete = False


@admin.register(Call)
class CallAdmin(admin.ModelAdmin):
    list_display = ("id", "media", "caller", "status", "outcome", "started_at", "answered_at", "ended_at",
                    "duration_s", "tenant")
    list_filter = ("status", "outcome", "media", "tenant")
    search_fields = ("id", "caller", "room__id")
    readonly_fields = ("started_at", "answered_at", "ended_at", "duration_s", "offline_since")
    inlines: ClassVar[list[type[admin.options.InlineModelAdmin]]] = [CallParticipantInline]
