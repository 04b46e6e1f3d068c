"""The rules of notifications: devices, preferences, and what an event puts in the outbox.

`on_user_events` runs inside the transaction that appends publications to `user:` channels
(hub.store.on_user_append), so the events and their pushes commit, or roll back, together: an
event committed is a push that will be attempted, across restarts and kill -9.
"""
from __future__ import annotations

import base64
import enum
import ipaddress
import logging
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from datetime import time as dtime
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson
from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Q
from django.utils import timezone

from core import metrics
from core.errors import TOO_LARGE, HubError, bad_request, not_found, unavailable
from hub.rpc import Caller, run_domain
from notify import content, vapid
from notify.content import Spec
from notify.models import Device, Outbox, OutboxState, Platform, Preferences

log = logging.getLogger("notify")
PLATFORMS = tuple(Platform.values)


# --- devices -----------------------------------------------------------------------------------

def _b64url(value: Any, name: str, size: int) -> bytes:
    if not isinstance(value, str) or len(value) > 200:
        raise bad_request(f"subscription.keys.{name} must be base64url")
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (ValueError, TypeError) as exc:
        raise bad_request(f"subscription.keys.{name} must be base64url") from exc
    if len(raw) != size:
        raise bad_request(f"subscription.keys.{name} must be {size} bytes")
    return raw


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def check_endpoint(endpoint: Any) -> str:
    """A Web Push endpoint the hub will post to: https on an allowed push service (never an address
    a client chose freely: the hub must not be made to post into its own network)."""
    if not isinstance(endpoint, str) or len(endpoint) > 1024:
        raise bad_request("subscription.endpoint must be a URL of at most 1024 characters")
    try:
        parts = urlsplit(endpoint)
        host = (parts.hostname or "").lower()
        _port = parts.port  # a malformed port raises here
    except ValueError as exc:
        raise bad_request("subscription.endpoint is not a valid URL") from exc
    if parts.username or parts.password or not host:
        raise bad_request("subscription.endpoint is not a valid push service URL")
    if parts.scheme == "http" and settings.WEBPUSH_ALLOW_LOOPBACK and _loopback(host):
        return endpoint
    if parts.scheme != "https":
        raise bad_request("subscription.endpoint must be https")
    allowed = settings.WEBPUSH_ALLOWED_HOSTS
    if "*" in allowed:
        try:
            ipaddress.ip_address(host)
        except ValueError:
            return endpoint
        raise bad_request("subscription.endpoint must name a push service, not an address")
    if not any(host == a or host.endswith("." + a) for a in allowed):
        raise bad_request("subscription.endpoint is not on a known push service")
    return endpoint


def _check_token(platform: str, token: Any) -> str:
    if not isinstance(token, str) or not token:
        raise bad_request(f"token is required for {platform}")
    if platform == Platform.IOS:
        if not (16 <= len(token) <= 400) or any(c not in "0123456789abcdefABCDEF" for c in token):
            raise bad_request("an APNs device token is 16-400 hexadecimal characters")
        return token.lower()
    if len(token) > 4096 or any(not (c.isascii() and (c.isalnum() or c in "-_:.")) for c in token):
        raise bad_request("an FCM registration token is at most 4096 characters of A-Z a-z 0-9 - _ : .")
    return token


def device_dict(d: Device) -> dict[str, Any]:
    out: dict[str, Any] = {"device": d.id, "platform": d.platform, "app": d.app, "background": d.background,
                           "created_at": d.created_at.isoformat(), "last_seen": d.last_seen.isoformat(),
                           "created_at_ms": int(d.created_at.timestamp() * 1000),
                           "last_seen_ms": int(d.last_seen.timestamp() * 1000)}
    # Enough to recognise the device, not the credential itself.
    out["token_hint"] = (urlsplit(d.token).hostname or "") if d.platform == Platform.WEB else d.token[-6:]
    return out


def register(tenant: str, user: str, platform: str, token: Any = None, subscription: Any = None,
             app: str = "") -> dict[str, Any]:
    """Add (or refresh) a device of `user`. The same token or subscription registered again is the
    same device (moved to this user if another held it: the app changed account)."""
    if platform not in PLATFORMS:
        raise bad_request("platform must be web, android or ios")
    keys: dict[str, str] = {}
    if platform == Platform.WEB:
        if token is not None or not isinstance(subscription, dict):
            raise bad_request("a web device registers a subscription {endpoint, keys: {p256dh, auth}}, no token")
        sub_keys = subscription.get("keys")
        if not isinstance(sub_keys, dict):
            raise bad_request("subscription.keys must be {p256dh, auth}")
        p256dh = _b64url(sub_keys.get("p256dh"), "p256dh", 65)
        if p256dh[0] != 4:
            raise bad_request("subscription.keys.p256dh must be an uncompressed P-256 point")
        _b64url(sub_keys.get("auth"), "auth", 16)
        token = check_endpoint(subscription.get("endpoint"))
        keys = {"p256dh": sub_keys["p256dh"], "auth": sub_keys["auth"]}
    else:
        if subscription is not None:
            raise bad_request(f"an {platform} device registers a token, no subscription")
        token = _check_token(platform, token)
    now = timezone.now()
    with transaction.atomic():
        existing = Device.objects.select_for_update().filter(tenant=tenant, platform=platform, token=token).first()
        if existing is not None:
            existing.user, existing.keys, existing.app, existing.last_seen = user, keys, app, now
            existing.background = False
            existing.save(update_fields=["user", "keys", "app", "last_seen", "background"])
            return device_dict(existing)
        most = settings.NOTIFY_MAX_DEVICES_PER_USER
        if connection.vendor == "postgresql":
            # One registration per user at a time: two at once cannot both pass the cap.
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 17))", [f"{tenant}|{user}"])
        if Device.objects.filter(tenant=tenant, user=user).count() >= most:
            raise HubError(TOO_LARGE, f"at most {most} devices per user; unregister one first")
        try:
            with transaction.atomic():
                d = Device.objects.create(tenant=tenant, user=user, platform=platform, token=token, keys=keys,
                                          app=app, created_at=now, last_seen=now)
        except IntegrityError:
            # The same token registered at the same moment: that registration is this device.
            d = Device.objects.get(tenant=tenant, platform=platform, token=token)
            if d.user != user:
                raise HubError("conflict", "that token was registered at the same moment; retry") from None
    return device_dict(d)


def unregister(tenant: str, user: str, device: str) -> dict[str, Any]:
    # Another user's (or tenant's) device looks the same as none.
    n, _ = Device.objects.filter(id=device, tenant=tenant, user=user).delete()
    if not n:
        raise not_found(f"no device {device}")
    return {"device": device, "removed": True}


def list_devices(tenant: str, user: str) -> dict[str, Any]:
    return {"devices": [device_dict(d) for d in
                        Device.objects.filter(tenant=tenant, user=user).order_by("created_at", "id")],
            "max": settings.NOTIFY_MAX_DEVICES_PER_USER}


def set_state(tenant: str, user: str, background: bool, device: str) -> None:
    """Record the app's state on its device (what `devices.list` shows)."""
    n = Device.objects.filter(id=device, tenant=tenant, user=user).update(
        background=background, last_seen=timezone.now())
    if not n:
        raise not_found(f"no device {device}")


async def app_state(caller: Caller, background: bool, device: str | None) -> dict[str, Any]:
    """The app went to the background (or came back): its device records it, and the caller's socket
    stops (or starts again) counting as reaching the user, so events push instead."""
    if device is not None:
        await run_domain(set_state, caller.tenant, caller.user, background, device)
    if caller.set_background is not None:
        # This socket (we are on its event loop); over HTTP there is none.
        caller.set_background(background)
    return {"background": background, "device": device}


def vapid_public_key() -> str:
    """The key browsers subscribe with (`applicationServerKey`); unavailable without Web Push."""
    key = vapid.public_key_b64()
    if key is None:
        raise unavailable("Web Push is not configured on this hub")
    return key


# --- preferences ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Prefs:
    kinds: dict[str, bool]
    quiet_start: str
    quiet_end: str
    timezone: str
    quiet_override: bool

    def as_dict(self) -> dict[str, Any]:
        return {"kinds": dict(self.kinds), "quiet_start": self.quiet_start or None,
                "quiet_end": self.quiet_end or None, "timezone": self.timezone,
                "quiet_override": self.quiet_override}


@lru_cache(maxsize=1)
def _tenant_defaults_raw(raw: str) -> dict[str, Any]:
    if not raw:
        return {}
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError:
        log.error("NOTIFY_TENANT_DEFAULTS is not JSON; using the built-in defaults")
        return {}
    return parsed if isinstance(parsed, dict) else {}


def tenant_defaults(tenant: str) -> tuple[dict[str, bool], bool]:
    conf = _tenant_defaults_raw(settings.NOTIFY_TENANT_DEFAULTS).get(tenant)
    kinds = {k: True for k in content.KINDS}
    override = False
    if isinstance(conf, dict):
        for k, v in (conf.get("kinds") or {}).items():
            if k in kinds and isinstance(v, bool):
                kinds[k] = v
        if isinstance(conf.get("quiet_override"), bool):
            override = conf["quiet_override"]
    return kinds, override


def resolve(tenant: str, row: Preferences | None) -> Prefs:
    kinds, override = tenant_defaults(tenant)
    if row is None:
        return Prefs(kinds, "", "", "UTC", override)
    for k, v in (row.kinds or {}).items():
        if k in kinds and isinstance(v, bool):
            kinds[k] = v
    return Prefs(kinds, row.quiet_start, row.quiet_end, row.timezone or "UTC",
                 override if row.quiet_override is None else row.quiet_override)


def get_preferences(tenant: str, user: str) -> dict[str, Any]:
    return resolve(tenant, Preferences.objects.filter(tenant=tenant, user=user).first()).as_dict()


def _clock(value: Any, name: str) -> str:
    if not isinstance(value, str) or len(value) != 5 or value[2] != ":":
        raise bad_request(f"{name} must be HH:MM")
    try:
        dtime(int(value[:2]), int(value[3:]))
    except ValueError as exc:
        raise bad_request(f"{name} must be HH:MM") from exc
    return value


def _zone(name: Any) -> ZoneInfo:
    if not isinstance(name, str) or not name or len(name) > 64 or ".." in name or name.startswith("/"):
        raise bad_request("timezone must be an IANA time zone such as Europe/London")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise bad_request("timezone must be an IANA time zone such as Europe/London") from exc


class Keep(enum.Enum):
    KEEP = "keep"


KEEP = Keep.KEEP  # a preference left as it is


def check_preferences(*, kinds: dict[str, bool] | Keep = KEEP, quiet: tuple[str, str] | None | Keep = KEEP,
                      time_zone: str | Keep = KEEP, quiet_override: bool | None | Keep = KEEP) -> dict[str, Any]:
    """The fields to change, every one checked (bad_request); `quiet` None ends quiet hours,
    `quiet_override` None goes back to the tenant's default."""
    updates: dict[str, Any] = {}
    if kinds is not KEEP:
        if not isinstance(kinds, dict) or any(k not in content.KINDS or not isinstance(v, bool)
                                              for k, v in kinds.items()):
            raise bad_request(f"kinds maps {', '.join(content.KINDS)} to true or false")
        updates["kinds"] = kinds
    if quiet is None:
        updates["quiet_start"] = updates["quiet_end"] = ""
    elif quiet is not KEEP:
        if not isinstance(quiet, tuple) or len(quiet) != 2:
            raise bad_request("quiet must be {start, end} or null")
        start, end = _clock(quiet[0], "quiet.start"), _clock(quiet[1], "quiet.end")
        if start == end:
            raise bad_request("quiet.start and quiet.end must differ")
        updates["quiet_start"], updates["quiet_end"] = start, end
    if time_zone is not KEEP:
        _zone(time_zone)
        updates["timezone"] = time_zone
    if quiet_override is not KEEP:
        if quiet_override is not None and not isinstance(quiet_override, bool):
            raise bad_request("quiet_override must be true or false")
        updates["quiet_override"] = quiet_override
    return updates


def set_preferences(tenant: str, user: str, *, kinds: dict[str, bool] | Keep = KEEP,
                    quiet: tuple[str, str] | None | Keep = KEEP, time_zone: str | Keep = KEEP,
                    quiet_override: bool | None | Keep = KEEP) -> dict[str, Any]:
    """Change what the user set; fields left at KEEP stay, and `kinds` adds to the kinds already
    chosen. Everything is checked before anything changes."""
    updates = check_preferences(kinds=kinds, quiet=quiet, time_zone=time_zone, quiet_override=quiet_override)
    with transaction.atomic():
        row, _ = Preferences.objects.select_for_update().get_or_create(tenant=tenant, user=user)
        if "kinds" in updates:
            merged = dict(row.kinds or {})
            merged.update(updates.pop("kinds"))
            row.kinds = merged
        for k, v in updates.items():
            setattr(row, k, v)
        row.save()
    return resolve(tenant, row).as_dict()


def reset_preferences(tenant: str, user: str) -> dict[str, Any]:
    """Forget what the user set: the tenant's defaults apply again."""
    Preferences.objects.filter(tenant=tenant, user=user).delete()
    return resolve(tenant, None).as_dict()


def in_quiet_hours(p: Prefs, at: float) -> bool:
    if not p.quiet_start or not p.quiet_end:
        return False
    try:
        local = datetime.fromtimestamp(at, tz=ZoneInfo(p.timezone))
    except (ZoneInfoNotFoundError, ValueError):
        local = datetime.fromtimestamp(at, tz=UTC)
    now = local.strftime("%H:%M")
    if p.quiet_start < p.quiet_end:  # e.g. 13:00-15:00
        return p.quiet_start <= now < p.quiet_end
    return now >= p.quiet_start or now < p.quiet_end  # across midnight, e.g. 22:00-07:00


def allows(p: Prefs, spec: Spec, at: float) -> bool:
    if spec.kind != "test" and not p.kinds.get(spec.kind, False):
        return False
    if in_quiet_hours(p, at):
        return spec.urgent and spec.kind in content.URGENT_KINDS and p.quiet_override
    return True


# --- the outbox ----------------------------------------------------------------------------------

_woken: list[Any] = []


def on_wake(fn: Any) -> None:
    """The delivery worker of this process, told after a commit that added outbox rows."""
    _woken.append(fn)


def _wake() -> None:
    for fn in _woken:
        try:
            fn()
        except Exception:
            log.debug("wake failed", exc_info=True)


def on_user_events(events: list[tuple[str, Any, str | None]]) -> None:
    """hub.store hook: the (user, data, tenant) events of the committing transaction, in order.

    The same writes as handling each event alone, in fewer statements: one device look-up and one
    preferences look-up for all of them, and per round (a user's first event, then their second,
    ...) one cancelling UPDATE per set of collapse keys, one replacing UPDATE per collapse key and
    one INSERT. A transaction telling 50 providers of a job costs 2 statements, not 50."""
    now = time.time()
    rounds: list[list[tuple[str, str | None, content.Effect]]] = []
    seen: dict[str, int] = {}
    for user, data, tenant in events:
        if not isinstance(data, dict) or data.get("kind") not in content.RULES:
            continue
        eff = content.effect_of(user, data, now)
        if eff is None:
            continue
        n = seen[user] = seen.get(user, -1) + 1  # a user's second event waits for their first's writes
        if n == len(rounds):
            rounds.append([])
        rounds[n].append((user, tenant, eff))
    if not rounds:
        return
    pushed = [(user, tenant, eff.push) for r in rounds for user, tenant, eff in r
              if eff.push is not None and eff.push.expires_at > now]
    for user, tenant, spec in pushed:
        if tenant is None:
            # The event's tenant is unknown: a push could cross a tenant wall, so none is made.
            log.warning("no tenant for a %s event to user %s: not pushed", spec.kind, user)
            metrics.push("none", "no_tenant")
    owners = {(tenant, user) for user, tenant, _s in pushed if tenant is not None}
    devices: dict[tuple[str, str], list[str]] = {}
    prefs: dict[tuple[str, str], Preferences] = {}
    if owners:
        by_tenant: dict[str, list[str]] = {}
        for tenant, user in owners:
            by_tenant.setdefault(tenant, []).append(user)
        for device_id, tenant, user in _devices_of(by_tenant):
            devices.setdefault((tenant, user), []).append(device_id)
        if devices:
            wanted = Q()
            for tenant, user in devices:
                wanted |= Q(tenant=tenant, user=user)
            prefs = {(p.tenant, p.user): p for p in Preferences.objects.filter(wanted)}
    for r in rounds:
        _apply_round(r, now, devices, prefs)


def _devices_of(by_tenant: dict[str, list[str]]) -> list[tuple[str, str, str]]:
    """(device id, tenant, user) of these users' devices: plain SQL, as this runs in every
    transaction that tells users anything and the ORM's query building was most of its cost."""
    table = connection.ops.quote_name(Device._meta.db_table)
    out: list[tuple[str, str, str]] = []
    with connection.cursor() as cursor:
        for tenant, users in by_tenant.items():
            marks = ", ".join(["%s"] * len(users))
            cursor.execute(f'SELECT id, tenant, "user" FROM {table} WHERE tenant = %s AND "user" IN ({marks})',
                           [tenant, *users])
            out += cursor.fetchall()
    return out


def _apply_round(effects: list[tuple[str, str | None, content.Effect]], now: float,
                 devices: dict[tuple[str, str], list[str]], prefs: dict[tuple[str, str], Preferences]) -> None:
    """One event per user: cancels, then replaced pushes, then new rows (each user's own order)."""
    cancels: dict[tuple[str, ...], list[str]] = {}
    for user, _tenant, eff in effects:
        if eff.cancel:
            # Pushes not yet sent about something that is over (an offer taken, a call ended) never go.
            # Collapse keys name ids unique across tenants, so cancelling needs no tenant.
            cancels.setdefault(tuple(sorted(eff.cancel)), []).append(user)
    for keys, users in cancels.items():
        Outbox.objects.filter(user__in=users, collapse_key__in=keys, state=OutboxState.PENDING).update(
            state=OutboxState.CANCELLED, done_at=timezone.now())
    created = datetime.fromtimestamp(now, tz=UTC)
    replace: dict[str, list[str]] = {}
    rows: list[Outbox] = []
    for user, tenant, eff in effects:
        spec = eff.push
        if spec is None or spec.expires_at <= now or tenant is None:
            continue
        ids = devices.get((tenant, user))
        if not ids:
            continue
        if not allows(resolve(tenant, prefs.get((tenant, user))), spec, now):
            metrics.push("all", "suppressed", len(ids))
            continue
        # A newer push with the same collapse key replaces one not yet sent (a missed call, its invite).
        replace.setdefault(spec.collapse_key, []).extend(ids)
        payload = {"title": spec.title, "body": spec.body, "data": spec.data}
        expires = datetime.fromtimestamp(spec.expires_at, tz=UTC)
        rows += [Outbox(tenant=tenant, user=user, device_id=i, kind=spec.kind, payload=payload,
                        collapse_key=spec.collapse_key, urgent=spec.urgent, created_at=created,
                        expires_at=expires, next_at=created) for i in ids]
    for key, ids in replace.items():
        Outbox.objects.filter(device_id__in=ids, collapse_key=key, state=OutboxState.PENDING).update(
            state=OutboxState.REPLACED, done_at=created)
    if rows:
        Outbox.objects.bulk_create(rows)
        transaction.on_commit(_wake)


# room -> (when it goes stale, [(user, tenant)] of its members who have a device). The group commit
# asks for every batch holding room messages: a look-up per room every few seconds, not per batch.
_room_devices: dict[str, tuple[float, list[tuple[str, str]]]] = {}
_room_lock = threading.Lock()
ROOM_CACHE_S = 5.0
ROOM_CACHE_MAX = 10_000


def _members_with_devices(rooms: set[str]) -> dict[str, list[tuple[str, str]]]:
    now = time.monotonic()
    with _room_lock:
        out = {r: e[1] for r in rooms if (e := _room_devices.get(r)) is not None and e[0] > now}
    missing = rooms - out.keys()
    if missing:
        from rooms.models import RoomMember  # the rooms app's membership table

        pairs = list(RoomMember.objects.filter(room_id__in=missing).values_list("room_id", "user"))
        users = {u for _r, u in pairs}
        held = set(Device.objects.filter(user__in=users).values_list("user", "tenant")) if users else set()
        by_user: dict[str, list[str]] = {}
        for u, t in held:
            by_user.setdefault(u, []).append(t)
        fresh: dict[str, list[tuple[str, str]]] = {r: [] for r in missing}
        for r, u in pairs:
            fresh[r] += [(u, t) for t in by_user.get(u, [])]
        with _room_lock:
            if len(_room_devices) > ROOM_CACHE_MAX:
                _room_devices.clear()
            for r, lst in fresh.items():
                _room_devices[r] = (now + ROOM_CACHE_S, lst)
        out.update(fresh)
    return out


def on_chat_publications(items: list[tuple[str, str | None, str | None, Any]]) -> None:
    """hub.store hook: client messages on `chat:<room>` channels, inside their group commit.

    Each other member of the room with a device in the sender's tenant gets a "New message" push
    (collapsed per room: a newer message replaces one not yet sent). Members on a foreground socket
    are skipped when it is sent, as for every push. Who in a room has a device is cached for
    ROOM_CACHE_S: a device registered meanwhile gets the room's messages a few seconds later."""
    by_room: dict[tuple[str, str], set[str]] = {}
    for channel, sender, tenant, _data in items:
        if tenant is None or sender is None:
            continue  # an HTTP (service) publication: its tenant is unknown here, so no push
        by_room.setdefault((channel[5:], tenant), set()).add(sender)
    if not by_room:
        return
    holders = _members_with_devices({room for room, _t in by_room})
    now = time.time()
    for (room, tenant), senders in by_room.items():
        users = sorted({u for u, t in holders.get(room, []) if t == tenant and u not in senders})
        if not users:
            continue
        devices: dict[str, list[Device]] = {}
        for d in Device.objects.filter(tenant=tenant, user__in=users).only("id", "platform", "user"):
            devices.setdefault(d.user, []).append(d)
        for user, theirs in devices.items():
            enqueue(tenant, user, content.message(room, now), now, theirs)


def enqueue(tenant: str, user: str, spec: Spec, now: float, devices: list[Device] | None = None) -> int:
    """Outbox rows for `spec` to each of the user's devices in `tenant`, if their preferences allow."""
    if devices is None:
        devices = list(Device.objects.filter(tenant=tenant, user=user).only("id", "platform"))
    if not devices:
        return 0
    prefs = resolve(tenant, Preferences.objects.filter(tenant=tenant, user=user).first())
    if not allows(prefs, spec, now):
        metrics.push("all", "suppressed", len(devices))
        return 0
    created = datetime.fromtimestamp(now, tz=UTC)
    ids = [d.id for d in devices]
    # A newer push with the same collapse key replaces one not yet sent (a missed call, its invite).
    Outbox.objects.filter(device_id__in=ids, collapse_key=spec.collapse_key, state=OutboxState.PENDING).update(
        state=OutboxState.REPLACED, done_at=created)
    payload = {"title": spec.title, "body": spec.body, "data": spec.data}
    expires = datetime.fromtimestamp(spec.expires_at, tz=UTC)
    Outbox.objects.bulk_create([
        Outbox(tenant=tenant, user=user, device_id=i, kind=spec.kind, payload=payload,
               collapse_key=spec.collapse_key, urgent=spec.urgent, created_at=created, expires_at=expires,
               next_at=created) for i in ids])
    transaction.on_commit(_wake)
    return len(ids)


def purge_finished(now: float) -> int:
    """Finished outbox rows and old dead letters go after their keep period (bounded per run)."""
    from notify.models import DeadLetter

    cutoff = datetime.fromtimestamp(now - settings.NOTIFY_KEEP_S, tz=UTC)
    old = list(Outbox.objects.filter(~Q(state=OutboxState.PENDING), done_at__lt=cutoff)
               .values_list("id", flat=True)[:5000])
    n = Outbox.objects.filter(id__in=old).delete()[0] if old else 0
    dead_cut = datetime.fromtimestamp(now - settings.NOTIFY_DEAD_KEEP_S, tz=UTC)
    dead = list(DeadLetter.objects.filter(created_at__lt=dead_cut).values_list("id", flat=True)[:5000])
    if dead:
        n += DeadLetter.objects.filter(id__in=dead).delete()[0]
    return n


