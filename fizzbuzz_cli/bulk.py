"""Reading many tasks from a file: JSON lines, a JSON array, or CSV (type,time).

Any file at all gets either its tasks or one BadInput naming the line (or array item) that
is wrong: text that is not UTF-8, JSON nested too deeply or holding a 5000-digit number, a
CSV field beyond the csv module's limit. Lines may end in LF, CRLF or CR alone.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable, Iterator
from datetime import datetime
from enum import Enum
from typing import IO, Any

from fizzbuzz_cli.errors import BadInput, FizzError
from fizzbuzz_cli.tasks import UTC, TaskType, parse_task_record, parse_time


class FileFormat(str, Enum):
    AUTO = "auto"  # from the file name, else from the first character
    JSONL = "jsonl"  # JSON: one object per line, or an array (told by the first character)
    JSON = "json"  # the same as jsonl
    CSV = "csv"

    @classmethod
    def parse(cls, text: str) -> FileFormat:
        for member in cls:
            if member.value == str(text).lower():
                return member
        raise BadInput(f"unknown format {text!r}: use one of "
                       f"{', '.join(m.value for m in cls)}")


FORMATS_HELP = ("JSON lines ({\"type\": \"Fizz\", \"time\": \"...\"} per line), a JSON array "
                "of such objects, or CSV (type,time)")

_UNDECODABLE = re.compile("[\udc80-\udcff]")  # bytes that were not UTF-8 (surrogateescape)


class TaskReader:
    """Iterates (type, time) pairs from a binary stream, counting bytes for progress bars.

    A bad record raises BadInput naming its line; the caller's transaction then adds nothing.
    """

    def __init__(self, stream: IO[bytes], fmt: FileFormat = FileFormat.AUTO,
                 name: str = "") -> None:
        self._counter = _CountingReader(stream)
        self.name = name if name not in ("", "-") else "stdin"
        self.format = fmt if fmt is not FileFormat.AUTO else _format_from_name(name)
        self.line = 0
        self.now = datetime.now(UTC)

    @property
    def bytes_read(self) -> int:
        return self._counter.count

    def __iter__(self) -> Iterator[tuple[TaskType, datetime]]:
        lines = self._lines()
        first = next(lines, None)
        if first is None:
            return
        looks_json = first.lstrip()[:1] in ("{", "[")
        fmt = self.format or (FileFormat.JSONL if looks_json else FileFormat.CSV)
        rest = _chain(first, lines)
        if fmt is FileFormat.CSV:
            yield from self._csv(rest)
        elif first.lstrip().startswith("["):
            yield from self._json_array(rest)
        else:
            yield from self._json_lines(rest)

    def _lines(self) -> Iterator[str]:
        """Non-blank lines, any line ending, a UTF-8 byte order mark dropped."""
        text = io.TextIOWrapper(io.BufferedReader(self._counter), encoding="utf-8-sig",
                                errors="surrogateescape", newline="")
        try:
            for line in text:
                self.line += 1
                if not line.isascii() and _UNDECODABLE.search(line):
                    raise BadInput(f"line {self.line}: not UTF-8 text")
                if line.strip():
                    yield line
        except OSError as exc:  # an I/O error mid-file, /proc/self/mem
            raise FizzError(f"cannot read {self.name}: {exc.strerror or exc}") from None

    def _json_lines(self, lines: Iterable[str]) -> Iterator[tuple[TaskType, datetime]]:
        for text in lines:
            record = _load_json(text, f"line {self.line}: invalid JSON")
            yield self._record(record, f"line {self.line}")

    def _json_array(self, lines: Iterable[str]) -> Iterator[tuple[TaskType, datetime]]:
        records = _load_json("".join(lines), "invalid JSON array")
        if not isinstance(records, list):
            raise BadInput("invalid JSON: expected an array of task objects")
        for index, record in enumerate(records):
            yield self._record(record, f"item {index + 1}")

    def _record(self, record: Any, where: str) -> tuple[TaskType, datetime]:
        try:
            return parse_task_record(record, now=self.now)
        except BadInput as exc:
            raise BadInput(f"{where}: {exc}") from None

    def _csv(self, lines: Iterable[str]) -> Iterator[tuple[TaskType, datetime]]:
        rows = csv.reader(lines, strict=True)
        number = 0
        while True:
            try:
                row = next(rows)
            except StopIteration:
                return
            except csv.Error as exc:
                raise BadInput(f"line {self.line}: invalid CSV ({exc})") from None
            cells = [cell.strip() for cell in row]
            number += 1
            if number == 1 and cells and cells[0].lower() in ("type", "tasktype", "typ"):
                continue  # header
            if not 1 <= len(cells) <= 2:
                raise BadInput(f"line {self.line}: expected 'type,time', got {len(cells)} fields")
            yield self._pair(cells[0], cells[1] if len(cells) > 1 else "", f"line {self.line}")

    def _pair(self, kind: str, when: str, where: str) -> tuple[TaskType, datetime]:
        """A CSV row's two texts, read by the same rules parse_task_record applies to a JSON
        object's (an empty time is now), without building one (a fifth of the CSV speed)."""
        try:
            return TaskType.parse(kind), parse_time(when, self.now)
        except BadInput as exc:
            raise BadInput(f"{where}: {exc}") from None


def _load_json(text: str, what: str = "invalid JSON") -> Any:
    """json.loads with every way it can fail turned into one BadInput line."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadInput(f"{what} ({exc.msg}, column {exc.colno})") from None
    except RecursionError:
        raise BadInput(f"{what} (nested too deeply)") from None
    except ValueError as exc:  # e.g. an integer of more than 4300 digits
        raise BadInput(f"{what} ({str(exc).split(';')[0]})") from None


class _CountingReader(io.RawIOBase):
    """A binary stream that counts the bytes read through it (for the progress bar)."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.stream = stream
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self.stream.read(len(buffer))
        if not data:
            return 0
        buffer[:len(data)] = data
        self.count += len(data)
        return len(data)


def _format_from_name(name: str) -> FileFormat | None:
    lowered = name.lower()
    if lowered.endswith((".jsonl", ".ndjson", ".json")):
        return FileFormat.JSONL
    if lowered.endswith(".csv"):
        return FileFormat.CSV
    return None  # sniff the first line


def _chain(first: str, rest: Iterator[str]) -> Iterator[str]:
    yield first
    yield from rest
