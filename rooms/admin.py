"""Jobs, bids, queries and call records in the Django admin: read-only, since a row edited here would
skip the rules (states, publications, audit). The one change staff make, cancelling jobs, goes
through rooms.actions.jobs.cancel acting as an admin of the job's tenant (audited under the staff
username). Staff see every tenant's rows (operators; docs/tenancy.md)."""
from __future__ import annotations

from typing import ClassVar

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ActionForm
from django.db.models import QuerySet
from django.http import HttpRequest

from core.admin import ReadOnly
from core.errors import HubError
from hub.rpc import Caller
from hub.store import tenant_scope
from rooms.actions import jobs
from rooms.models import (
    Bid,
    Call,
    CallParticipant,
    Job,
    JobAnswer,
    JobComment,
    JobQuery,
)


class BidInline(ReadOnly, admin.TabularInline):
    model = Bid
    extra = 0
    fields = ("id", "provider", "amount", "currency", "status", "replaces", "created_at")
    readonly_fields = fields


class CancelForm(ActionForm):
    reason = forms.CharField(required=False, max_length=1000, label="Reason (told to the job's people)")


@admin.register(Job)
class JobAdmin(ReadOnly, admin.ModelAdmin):
    list_display = ("id", "title", "category", "status", "owner", "provider", "budget", "currency",
                    "tenant", "created_at")
    list_filter = ("status", "category", "tenant")
    search_fields = ("id", "title", "owner", "provider")
    inlines: ClassVar[list[type[admin.options.InlineModelAdmin]]] = [BidInline]
    action_form = CancelForm
    actions = ("cancel_jobs",)

    def has_cancel_permission(self, request: HttpRequest) -> bool:
        return bool(request.user.is_active and request.user.is_superuser)

    @admin.action(description="Cancel the selected jobs", permissions=["cancel"])
    def cancel_jobs(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        reason = request.POST.get("reason", "")
        staff = getattr(request.user, "username", "") or "admin"
        cancelled, refused = 0, []
        for job in queryset.only("id", "tenant"):
            try:
                with tenant_scope(job.tenant):  # as hub.rpc.call does for a caller of that tenant
                    jobs.cancel(Caller(staff, "admin", job.tenant), job.id, reason)
            except HubError as exc:
                refused.append(f"{job.id}: {exc.message}")
            else:
                cancelled += 1
        if cancelled:
            self.message_user(request, f"Cancelled {cancelled} job(s).", messages.SUCCESS)
        if refused:
            self.message_user(request, "Not cancelled: " + "; ".join(refused), messages.ERROR)


@admin.register(Bid)
class BidAdmin(ReadOnly, admin.ModelAdmin):
    list_display = ("id", "job", "provider", "amount", "currency", "status", "created_at")
    list_filter = ("status", "currency")
    search_fields = ("id", "job__id", "provider")


@admin.register(JobComment)
class JobCommentAdmin(ReadOnly, admin.ModelAdmin):
    list_display = ("id", "job", "author", "author_role", "created_at")
    search_fields = ("id", "job__id", "author", "text")


class JobAnswerInline(ReadOnly, admin.TabularInline):
    model = JobAnswer
    extra = 0
    fields = ("id", "author", "text", "created_at")
    readonly_fields = fields


@admin.register(JobQuery)
class JobQueryAdmin(ReadOnly, admin.ModelAdmin):
    list_display = ("id", "job", "author", "created_at")
    search_fields = ("id", "job__id", "author", "text")
    inlines: ClassVar[list[type[admin.options.InlineModelAdmin]]] = [JobAnswerInline]


class CallParticipantInline(ReadOnly, admin.TabularInline):
    model = CallParticipant
    extra = 0
    fields = ("user", "uid", "is_caller", "status", "busy", "invited_at", "joined_at", "responded_at")
    readonly_fields = fields


@admin.register(Call)
class CallAdmin(ReadOnly, admin.ModelAdmin):
    list_display = ("id", "media", "caller", "status", "outcome", "started_at", "answered_at", "ended_at",
                    "duration_s", "tenant")
    list_filter = ("status", "outcome", "media", "tenant")
    search_fields = ("id", "caller", "room__id")
    inlines: ClassVar[list[type[admin.options.InlineModelAdmin]]] = [CallParticipantInline]
