"""AGE as `fizz purge --before` and `--retain` read it (fizzbuzz_cli.purge.parse_age)."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from fizzbuzz_cli.durations import format_duration, parse_duration
from fizzbuzz_cli.errors import BadInput
from fizzbuzz_cli.purge import Age, parse_age, parse_retention
from fizzbuzz_cli.stats import parse_window
from fizzbuzz_cli.tasks import UTC


@pytest.mark.parametrize(("text", "ago"), [
    ("7d", timedelta(days=7)),
    ("12h", timedelta(hours=12)),
    ("30m", timedelta(minutes=30)),
    ("90s", timedelta(seconds=90)),
    ("2w", timedelta(weeks=2)),
    ("1d12h", timedelta(days=1, hours=12)),
    ("1.5h", timedelta(minutes=90)),
    (" 7D ", timedelta(days=7)),
    ("1d 12h", timedelta(days=1, hours=12)),
    ("0s", timedelta(0)),
])
def test_durations(text: str, ago: timedelta) -> None:
    assert parse_age(text) == Age(ago=ago)


@pytest.mark.parametrize(("text", "moment"), [
    ("2026-11-20T00:00:00Z", datetime(2026, 11, 20, tzinfo=UTC)),
    ("2026-11-20T02:00:00+02:00", datetime(2026, 11, 20, tzinfo=UTC)),
    ("2026-11-20 00:00:00", datetime(2026, 11, 20, tzinfo=UTC)),  # no offset: UTC
])
def test_times(text: str, moment: datetime) -> None:
    assert parse_age(text) == Age(moment=moment)


@pytest.mark.parametrize("text", ["", "7", "d", "7x", "-7d", "+7d", "7 days", "yesterday",
                                  "2026-13-01T00:00:00Z", "2026", "now", "7d-"])
def test_bad_ages_name_what_is_valid(text: str) -> None:
    with pytest.raises(BadInput) as caught:
        parse_age(text)
    message = str(caught.value)
    assert "\n" not in message
    assert "7d, 12h, 30m, 90s or 2w" in message and "RFC 3339" in message


def test_an_age_too_long_is_bad_input() -> None:
    with pytest.raises(BadInput, match="too long"):
        parse_age("99999999999w")


def test_retention_takes_durations_only() -> None:
    assert parse_retention("7d") == timedelta(days=7)
    with pytest.raises(BadInput, match="a duration such as 7d"):
        parse_retention("2026-11-20T00:00:00Z")
    with pytest.raises(BadInput, match="longer than 0s"):
        parse_retention("0s")


@pytest.mark.parametrize(("value", "text"), [
    (timedelta(days=7), "7d"), (timedelta(hours=36), "1d12h"), (timedelta(seconds=90), "1m30s"),
    (timedelta(0), "0s"), (timedelta(seconds=1.5), "1.5s")])
def test_durations_are_shown_as_they_are_written(value: timedelta, text: str) -> None:
    assert format_duration(value) == text
    assert parse_age(text).ago == value
    assert str(Age(ago=value)) == text


def test_windows_are_durations_up_to_a_day() -> None:
    assert parse_window("15m") == 900.0
    assert parse_window("1d") == 86400.0
    with pytest.raises(BadInput, match="invalid window '2d': use at most 1d"):
        parse_window("2d")
    with pytest.raises(BadInput, match=r"invalid window 'soon': use a duration such as 7d"):
        parse_window("soon")


def test_a_duration_error_names_what_it_was_for() -> None:
    with pytest.raises(BadInput, match=r"^invalid grace '5 seconds': use a duration such as"):
        parse_duration("5 seconds", "grace")
