from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from fizzbuzz_cli.errors import BadInput
from fizzbuzz_cli.tasks import UTC, Status, Task, TaskType, format_time, parse_time

NOW = datetime(2026, 11, 27, 3, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("now", NOW),
        ("NOW", NOW),
        ("+30s", NOW + timedelta(seconds=30)),
        ("+5m", NOW + timedelta(minutes=5)),
        ("+2h", NOW + timedelta(hours=2)),
        ("+1h30m", NOW + timedelta(hours=1, minutes=30)),
        ("+1.5s", NOW + timedelta(seconds=1.5)),
        ("+250ms", NOW + timedelta(milliseconds=250)),
        ("-1d", NOW - timedelta(days=1)),
        ("in 10 minutes", NOW + timedelta(minutes=10)),
        ("in 2 hours", NOW + timedelta(hours=2)),
        ("5 minutes ago", NOW - timedelta(minutes=5)),
        ("2023-03-28T11:59:59Z", datetime(2023, 3, 28, 11, 59, 59, tzinfo=UTC)),
        ("2023-03-28t11:59:59z", datetime(2023, 3, 28, 11, 59, 59, tzinfo=UTC)),
        ("2023-03-28T11:59:59", datetime(2023, 3, 28, 11, 59, 59, tzinfo=UTC)),
        ("2023-03-28 11:59:59.25+02:00", datetime(2023, 3, 28, 9, 59, 59, 250000, tzinfo=UTC)),
        ("2023-03-28", datetime(2023, 3, 28, tzinfo=UTC)),
        ("", NOW),  # no time means now, as a missing one does (a CSV row `Buzz,`)
        ("  ", NOW),
        ("2016-12-31T23:59:60Z", datetime(2017, 1, 1, tzinfo=UTC)),  # a leap second
    ],
)
def test_parse_time_accepts(text: str, expected: datetime) -> None:
    assert parse_time(text, NOW) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("tomorrow-ish", "invalid time 'tomorrow-ish'"),
        ("+5x", "invalid time '+5x'"),
        ("2023-13-01T00:00:00Z", "invalid time"),
        ("+99999999999d", "out of range"),
        ("9999-12-31T23:59:59-05:00", "out of range"),
        ("9999-12-31T23:59:60Z", "out of range"),
        ("+١s", "invalid time"),  # ASCII digits only, as in ids
        ("+" + " " * 5000 + "1s", "(5003 characters): use"),  # no regex chews on it
    ],
)
def test_parse_time_rejects_with_the_valid_forms(text: str, message: str) -> None:
    with pytest.raises(BadInput) as caught:
        parse_time(text, NOW)
    assert message in str(caught.value)
    if "invalid" in message:
        assert "RFC 3339" in str(caught.value) and "+30s" in str(caught.value)


def test_format_time_is_rfc3339_utc_with_z() -> None:
    assert format_time(datetime(2023, 3, 28, 11, 59, 59, tzinfo=UTC)) == "2023-03-28T11:59:59Z"
    assert format_time(datetime(2023, 3, 28, 11, 59, 59, 5, tzinfo=UTC)) == "2023-03-28T11:59:59.000005Z"
    assert format_time(datetime(2023, 3, 28, 11, 59, 59, tzinfo=UTC), micro=True) == (
        "2023-03-28T11:59:59.000000Z"
    )
    assert format_time(datetime(1, 1, 1, tzinfo=UTC)) == "0001-01-01T00:00:00Z"
    # Other zones, and UTC as an offset of zero that is not the timezone.utc object, are
    # converted first.
    paris = timezone(timedelta(hours=2))
    assert format_time(datetime(2023, 3, 28, 13, 59, 59, 5, tzinfo=paris)) == (
        "2023-03-28T11:59:59.000005Z")
    assert format_time(datetime(2023, 3, 28, 11, 59, 59, tzinfo=timezone(timedelta(0)))) == (
        "2023-03-28T11:59:59Z")
    assert format_time(datetime(2023, 3, 28, 4, 59, 59, tzinfo=ZoneInfo("America/Los_Angeles")),
                       micro=True) == "2023-03-28T11:59:59.000000Z"


@pytest.mark.parametrize("text", ["fizz", "Fizz", "FIZZ", "fIzZ"])
def test_task_type_any_case(text: str) -> None:
    assert TaskType.parse(text) is TaskType.FIZZ


def test_task_type_unknown_names_the_valid_ones() -> None:
    with pytest.raises(BadInput, match="unknown task type 'Fuzz': use one of fizz, buzz, fizzbuzz"):
        TaskType.parse("Fuzz")
    with pytest.raises(BadInput, match="use one of waiting, claimed, complete"):
        Status.parse("done")


def test_task_behaviour() -> None:
    assert (TaskType.FIZZ.duration, TaskType.BUZZ.duration, TaskType.FIZZBUZZ.duration) == (3, 5, 0)
    assert TaskType.FIZZ.output(7, NOW) == "Fizz 7"
    assert TaskType.BUZZ.output(8, NOW) == "Buzz 8"
    assert TaskType.FIZZBUZZ.output(9, NOW) == "FizzBuzz 2026-11-27T03:00:00.000000Z"


def test_task_json_keeps_the_original_field_names() -> None:
    task = Task(1, TaskType.FIZZ, Status.WAITING, datetime(2023, 3, 28, 11, 59, 59, tzinfo=UTC))
    assert task.to_json() == {
        "id": 1, "type": "Fizz", "typ": "Fizz", "status": "Waiting",
        "time": "2023-03-28T11:59:59Z", "created_at": None, "claimed_at": None,
        "completed_at": None, "worker": None, "attempts": 0, "schedule_id": None,
        "occurrence": None,
    }
    scheduled = Task(2, TaskType.BUZZ, Status.COMPLETE, NOW, schedule_id=3, occurrence=NOW)
    assert (scheduled.to_json()["schedule_id"], scheduled.to_json()["occurrence"]) == (
        3, "2026-11-27T03:00:00Z")


def test_the_default_home_of_the_embedded_server(monkeypatch: pytest.MonkeyPatch) -> None:
    from pathlib import Path

    from fizzbuzz_cli.config import default_home

    monkeypatch.setenv("FIZZ_HOME", "/srv/fizz-here")
    assert default_home() == Path("/srv/fizz-here")
    monkeypatch.delenv("FIZZ_HOME")
    monkeypatch.setattr("os.geteuid", lambda: 0)
    assert default_home() == Path("/var/lib/fizz")
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    monkeypatch.setenv("XDG_DATA_HOME", "/home/someone/.data")
    assert default_home() == Path("/home/someone/.data/fizz")
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setenv("HOME", "/home/someone")
    assert default_home() == Path("/home/someone/.local/share/fizz")
