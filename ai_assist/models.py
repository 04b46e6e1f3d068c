"""One row per assist request: what was asked, what came back, and how (all text redacted)."""
from __future__ import annotations

from django.db import models


class Outcome(models.TextChoices):
    OK = "ok"
    ERROR = "error"
    INCOMPLETE = "incomplete"  # failed after tokens had reached the user
    CANCELLED = "cancelled"


class Transcript(models.Model):
    id = models.CharField(max_length=32, primary_key=True)  # the assist id given to the client
    user = models.CharField(max_length=128, db_index=True)
    tenant = models.CharField(max_length=128, default="")
    room = models.CharField(max_length=64, blank=True, default="")
    prompt = models.TextField()
    context = models.JSONField(default=list)  # [{"from", "text"}] sent as context, redacted
    answer = models.TextField(blank=True, default="")
    provider = models.CharField(max_length=32, blank=True, default="")
    model = models.CharField(max_length=128, blank=True, default="")
    attempts = models.IntegerField(default=0)
    fallbacks = models.JSONField(default=list)  # [{"provider", "reason"}] for each provider given up on
    tokens_in = models.IntegerField(default=0)
    tokens_out = models.IntegerField(default=0)
    latency_ms = models.IntegerField(default=0)
    first_token_ms = models.IntegerField(null=True, blank=True)
    outcome = models.CharField(max_length=16, choices=Outcome.choices)
    error_code = models.CharField(max_length=32, blank=True, default="")
    finish = models.CharField(max_length=16, blank=True, default="")  # ok only: stop | length | content_filter
    created_at = models.DateTimeField(db_index=True)

    class Meta:
        indexes = [models.Index(fields=["user", "created_at"], name="ai_transcript_user_ts")]

    def as_dict(self) -> dict[str, object]:
        return {
            "assist": self.id, "user": self.user, "tenant": self.tenant, "room": self.room or None,
            "prompt": self.prompt, "context": self.context, "answer": self.answer,
            "provider": self.provider, "model": self.model, "attempts": self.attempts,
            "fallbacks": self.fallbacks, "tokens_in": self.tokens_in, "tokens_out": self.tokens_out,
            "latency_ms": self.latency_ms, "first_token_ms": self.first_token_ms,
            "outcome": self.outcome, "error_code": self.error_code or None, "finish": self.finish or None,
            "created_at": self.created_at.isoformat(),
        }
