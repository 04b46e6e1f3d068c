"""hub.revocation: which tokens a revocation covers, this process's state and its news, and the
table's pruning. (Revocations closing sockets on every process: tests/security/test_revocation.py.)"""
from __future__ import annotations

from datetime import timedelta

import orjson
from django.conf import settings
from django.utils import timezone

from hub import revocation
from hub.models import TokenRevocation
from tests.support import uid


def test_a_revocation_covers_the_tokens_issued_up_to_it_or_the_one_token_it_names() -> None:
    by_user = revocation.Revocation("t1", user="al", not_before=100)
    assert revocation.matches(by_user, "t1", "al", 100, None)  # issued in its second
    assert not revocation.matches(by_user, "t1", "al", 101, None)
    assert revocation.matches(by_user, "t1", "al", None, None)  # no iat: cannot prove it is newer
    assert not revocation.matches(by_user, "t2", "al", 50, None)
    assert not revocation.matches(by_user, "t1", "bo", 50, None)
    everywhere = revocation.Revocation(revocation.ALL_TENANTS, user="al", not_before=100)
    assert revocation.matches(everywhere, "t9", "al", 99, None)
    one = revocation.Revocation("t1", jti="j1")
    assert revocation.matches(one, "t1", "al", 1, "j1") and not revocation.matches(one, "t1", "al", 1, "j2")


def test_news_is_applied_once_and_control_messages_carry_it() -> None:
    heard: list[revocation.Revocation] = []
    revocation.on_revoked(heard.append)
    try:
        user, tenant = uid(), uid("t")
        rev = revocation.Revocation(tenant, user=user, not_before=200)
        assert revocation.apply(rev) and not revocation.apply(rev)  # idempotent
        assert revocation.is_revoked(tenant, user, 200, None) and not revocation.is_revoked(tenant, user, 201, None)
        jti = uid("j")
        revocation.apply_message(revocation.CONTROL_PREFIX + orjson.dumps({"tenant": tenant, "jti": jti}))
        revocation.apply_message(revocation.CONTROL_PREFIX + b"{not json")  # ignored, logged
        assert revocation.is_revoked(tenant, uid(), 10**10, jti)
        assert heard == [rev, revocation.Revocation(tenant, jti=jti)]
    finally:
        revocation._listeners.remove(heard.append)


def test_prune_drops_superseded_user_rows_and_expired_jti_rows() -> None:
    """The table is read whole by every process's poll: rows that can refuse nothing any more go."""
    t, u, v = uid("t"), uid("u"), uid("v")
    old = TokenRevocation.objects.create(tenant=t, user=u, not_before=100)
    newest = TokenRevocation.objects.create(tenant=t, user=u, not_before=200)
    only = TokenRevocation.objects.create(tenant=t, user=v, not_before=100)  # v's only row: kept
    other_tenant = TokenRevocation.objects.create(tenant=uid("t"), user=u, not_before=50)
    stale_jti = TokenRevocation.objects.create(tenant=t, jti=uid("j"))
    fresh_jti = TokenRevocation.objects.create(tenant=t, jti=uid("j"))
    long_ago = timezone.now() - timedelta(seconds=settings.HUB_TOKEN_MAX_TTL_S + revocation.PRUNE_MARGIN_S + 60)
    TokenRevocation.objects.filter(pk=stale_jti.pk).update(created_at=long_ago)
    assert revocation.prune() >= 2
    left = set(TokenRevocation.objects.filter(pk__in=[old.pk, newest.pk, only.pk, other_tenant.pk, stale_jti.pk,
                                                      fresh_jti.pk]).values_list("pk", flat=True))
    assert left == {newest.pk, only.pk, other_tenant.pk, fresh_jti.pk}
