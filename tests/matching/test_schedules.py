"""matching.schedules: availability windows (weekly, overnight, absolute, time zones) and booking times."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from core.errors import HubError
from matching.schedules import booking_time_ok, parse_schedule, parse_when, schedule_covers


def test_schedule_windows() -> None:
    windows = parse_schedule([
        {"days": ["mon", "tue"], "from": "09:00", "to": "17:30"},
        {"days": ["fri"], "from": "22:00", "to": "06:00"},
        {"from": "2030-01-05T10:00:00Z", "to": "2030-01-05T12:00:00Z"},
    ])
    london = ZoneInfo("Europe/London")
    assert schedule_covers(windows, datetime(2030, 1, 7, 9, 0, tzinfo=london))  # Monday 09:00
    assert not schedule_covers(windows, datetime(2030, 1, 7, 17, 30, tzinfo=london))
    assert schedule_covers(windows, datetime(2030, 1, 12, 5, 59, tzinfo=london))  # Saturday early: Friday night
    assert not schedule_covers(windows, datetime(2030, 1, 13, 5, 0, tzinfo=london))  # Sunday early
    assert schedule_covers(windows, datetime(2030, 1, 5, 11, 0, tzinfo=UTC))
    # British Summer Time: 09:00 local is 08:00 UTC on a Monday in July.
    assert schedule_covers(windows, datetime(2030, 7, 1, 8, 0, tzinfo=UTC))
    assert not schedule_covers((), datetime(2030, 7, 1, 8, 0, tzinfo=UTC))
    for bad in ([{"days": ["xyz"], "from": "09:00", "to": "10:00"}],
                [{"days": ["mon"], "from": "09:00", "to": "09:00"}],
                [{"days": ["mon"], "from": "25:00", "to": "09:00"}],
                [{"from": "2030-01-05T12:00:00Z", "to": "2030-01-05T10:00:00Z"}],
                [{"from": "yesterday", "to": "2030-01-05T10:00:00Z"}]):
        with pytest.raises(HubError) as err:
            parse_schedule(bad)
        assert err.value.code == "bad_request"


def test_instants_without_an_offset_are_london_time() -> None:
    assert parse_when("2030-07-01T09:00:00", "at") == datetime(2030, 7, 1, 8, 0, tzinfo=UTC)
    assert parse_when("2030-07-01T09:00:00Z", "at") == datetime(2030, 7, 1, 9, 0, tzinfo=UTC)
    with pytest.raises(HubError) as err:
        parse_when("soon", "at")
    assert err.value.code == "bad_request" and err.value.message.startswith("at:")


def test_a_booking_is_for_the_coming_year() -> None:
    now = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
    booking_time_ok(now - timedelta(seconds=30), now)  # clock skew
    booking_time_ok(now + timedelta(days=366), now)
    for at, why in ((now - timedelta(minutes=2), "future"), (now + timedelta(days=367), "a year")):
        with pytest.raises(HubError) as err:
            booking_time_ok(at, now)
        assert err.value.code == "bad_request" and why in err.value.message
