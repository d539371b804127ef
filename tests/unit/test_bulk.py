from __future__ import annotations

import io
from datetime import datetime

import pytest

from fizzbuzz_cli.bulk import FileFormat, TaskReader
from fizzbuzz_cli.errors import BadInput
from fizzbuzz_cli.tasks import UTC, TaskType

T1 = datetime(2023, 3, 28, 11, 59, 59, tzinfo=UTC)


def read(text: str, fmt: FileFormat = FileFormat.AUTO, name: str = "") -> list[tuple[TaskType, datetime]]:
    return list(TaskReader(io.BytesIO(text.encode()), fmt, name))


def test_json_lines() -> None:
    text = '{"type": "Fizz", "time": "2023-03-28T11:59:59Z"}\n\n{"type": "buzz", "time": "2023-03-28T11:59:59Z"}\n'
    assert read(text) == [(TaskType.FIZZ, T1), (TaskType.BUZZ, T1)]


def test_json_accepts_the_original_typ_field_and_a_json_array() -> None:
    text = '[{"typ": "FizzBuzz", "time": "2023-03-28T11:59:59Z"},\n {"type": "Fizz", "time": "2023-03-28T11:59:59Z"}]'
    assert read(text) == [(TaskType.FIZZBUZZ, T1), (TaskType.FIZZ, T1)]


def test_csv_with_and_without_header() -> None:
    assert read("type,time\nFizz,2023-03-28T11:59:59Z\n") == [(TaskType.FIZZ, T1)]
    assert read("fizzbuzz, 2023-03-28T11:59:59Z\r\n") == [(TaskType.FIZZBUZZ, T1)]


def test_format_from_file_name_wins_over_content() -> None:
    with pytest.raises(BadInput, match="line 1: unknown task type"):
        read('{"type": "Fizz"}\n', name="tasks.csv")


def test_utf8_bom_is_ignored() -> None:
    assert read("\ufefftype,time\nFizz,2023-03-28T11:59:59Z\n") == [(TaskType.FIZZ, T1)]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"type": "Fizz", "time": "now"}\n{"type": "Fuzz", "time": "now"}\n', "line 2: unknown task type 'Fuzz'"),
        ('{"type": "Fizz", "time": "now"}\n{"type": "Fizz", "time": "soon"}\n', "line 2: invalid time 'soon'"),
        ('{"type": "Fizz", "time": "now"}\n{"type": "Fizz"\n', "line 2: invalid JSON"),
        ('{"type": "Fizz", "time": 5}\n', 'line 1: "time" must be a string'),
        ('{"time": "now"}\n', 'line 1: missing "type"'),
        ('{"type": "Fizz"}\n[1]\n', "line 2: expected an object"),
        ("Fizz,now\nFizz,now,extra\n", "line 2: expected 'type,time', got 3 fields"),
        ("Fizz,now\nBuzz,yesterday-ish\n", "line 2: invalid time"),
    ],
)
def test_bad_records_name_their_line(text: str, message: str) -> None:
    with pytest.raises(BadInput) as caught:
        read(text)
    assert message in str(caught.value)


def test_counts_bytes_for_progress() -> None:
    text = "Fizz,2023-03-28T11:59:59Z\n" * 3
    reader = TaskReader(io.BytesIO(text.encode()))
    assert len(list(reader)) == 3
    assert reader.bytes_read == len(text)
