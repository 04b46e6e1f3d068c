"""When providers work and when bookings may be: availability windows, instants, booking times.

A provider's schedule (`providers.update`'s `schedule`, docs/matching.md) is a list of windows,
absolute or weekly; a value without an offset is UK local time (Europe/London).
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from datetime import time as dtime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from core.errors import bad_request

LOCAL_TZ = "Europe/London"
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True)
class Window:
    """One availability window: absolute [start, end) or weekly (days, minute range, time zone)."""

    start: datetime | None = None
    end: datetime | None = None
    days: frozenset[int] = frozenset()
    from_min: int = 0
    to_min: int = 0
    tz: str = LOCAL_TZ

    def covers(self, at: datetime) -> bool:
        if self.start is not None and self.end is not None:
            return self.start <= at < self.end
        local = at.astimezone(ZoneInfo(self.tz))
        minute = local.hour * 60 + local.minute + local.second / 60.0
        day = local.weekday()
        if self.from_min < self.to_min:
            return day in self.days and self.from_min <= minute < self.to_min
        # Overnight (e.g. 22:00-06:00): starts on a listed day, ends the next morning.
        return (day in self.days and minute >= self.from_min) or (
            (day - 1) % 7 in self.days and minute < self.to_min)


def parse_when(value: str, what: str) -> datetime:
    """ISO 8601 instant; a value without an offset is UK local time (Europe/London)."""
    try:
        dt = datetime.fromisoformat(value)
    except (TypeError, ValueError) as exc:
        raise bad_request(f"{what}: not an ISO 8601 date-time: {value!r}") from exc
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=ZoneInfo(LOCAL_TZ))
    return dt


def _clock_minutes(value: str, what: str, allow_24: bool) -> int:
    try:
        hh, mm = value.split(":")
        h, m = int(hh), int(mm)
    except (AttributeError, ValueError) as exc:
        raise bad_request(f"{what}: expected HH:MM, got {value!r}") from exc
    if allow_24 and h == 24 and m == 0:
        return 24 * 60
    if not (0 <= h <= 23 and 0 <= m <= 59):
        raise bad_request(f"{what}: expected HH:MM, got {value!r}")
    dtime(h, m)
    return h * 60 + m


def parse_schedule(raw: list[dict[str, Any]]) -> tuple[Window, ...]:
    """Validate `providers.update`'s schedule (see docs/matching.md) into windows."""
    out: list[Window] = []
    for i, w in enumerate(raw):
        where = f"schedule/{i}"
        if not isinstance(w, dict):
            raise bad_request(f"{where}: must be an object")
        if "days" in w:
            days = w["days"]
            if not isinstance(days, list) or not days or any(d not in WEEKDAYS for d in days):
                raise bad_request(f"{where}/days: a non-empty list of {', '.join(WEEKDAYS)}")
            tz = w.get("tz", LOCAL_TZ)
            try:
                ZoneInfo(tz)
            except (ZoneInfoNotFoundError, ValueError, TypeError) as exc:
                raise bad_request(f"{where}/tz: unknown time zone {tz!r}") from exc
            start = _clock_minutes(w.get("from", ""), f"{where}/from", allow_24=False)
            end = _clock_minutes(w.get("to", ""), f"{where}/to", allow_24=True)
            if start == end:
                raise bad_request(f"{where}: from and to are equal (empty window)")
            out.append(Window(days=frozenset(WEEKDAYS.index(d) for d in days), from_min=start, to_min=end,
                              tz=tz))
        else:
            start_dt = parse_when(w.get("from", ""), f"{where}/from")
            end_dt = parse_when(w.get("to", ""), f"{where}/to")
            if end_dt <= start_dt:
                raise bad_request(f"{where}: to must be after from")
            out.append(Window(start=start_dt, end=end_dt))
    return tuple(out)


def schedule_covers(windows: tuple[Window, ...] | None, at: datetime) -> bool:
    """No stated schedule means no scheduled work: only stated availability counts."""
    return bool(windows) and any(w.covers(at) for w in windows)  # type: ignore[union-attr]


def booking_time_ok(at: datetime, now: datetime | None = None) -> None:
    """A scheduled booking is for the future (a minute of clock skew allowed), at most a year ahead."""
    now = now or datetime.now(ZoneInfo("UTC"))
    if at < now - timedelta(minutes=1):
        raise bad_request("at: must be in the future")
    if at > now + timedelta(days=366):
        raise bad_request("at: at most a year ahead")
