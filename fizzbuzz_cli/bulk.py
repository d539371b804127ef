"""Reading many tasks from a file: JSON lines, a JSON array, or CSV (type,time)."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator
from datetime import datetime
from enum import Enum
from typing import IO, Any

from fizzbuzz_cli.errors import BadInput
from fizzbuzz_cli.tasks import UTC, TaskType, parse_task_record, parse_time


class FileFormat(str, Enum):
    AUTO = "auto"
    JSONL = "jsonl"
    CSV = "csv"


class TaskReader:
    """Iterates (type, time) pairs from a binary stream, counting bytes for progress bars.

    A bad record raises BadInput naming its line; the caller's transaction then adds nothing.
    """

    def __init__(self, stream: IO[bytes], fmt: FileFormat = FileFormat.AUTO,
                 name: str = "") -> None:
        self.stream = stream
        self.format = fmt if fmt is not FileFormat.AUTO else _format_from_name(name)
        self.bytes_read = 0
        self.line = 0
        self.now = datetime.now(UTC)

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
        for raw in self.stream:
            self.bytes_read += len(raw)
            self.line += 1
            try:
                text = raw.decode("utf-8-sig" if self.line == 1 else "utf-8")
            except UnicodeDecodeError:
                raise BadInput(f"line {self.line}: not UTF-8 text") from None
            if text.strip():
                yield text

    def _json_lines(self, lines: Iterable[str]) -> Iterator[tuple[TaskType, datetime]]:
        for text in lines:
            try:
                record = json.loads(text)
            except ValueError as exc:
                raise BadInput(f"line {self.line}: invalid JSON ({exc.msg})") from None
            yield self._record(record, f"line {self.line}")

    def _json_array(self, lines: Iterable[str]) -> Iterator[tuple[TaskType, datetime]]:
        try:
            records = json.loads("".join(lines))
        except ValueError as exc:
            raise BadInput(f"invalid JSON array: {exc}") from None
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
        rows = csv.reader(lines)
        for number, row in enumerate(rows):
            cells = [cell.strip() for cell in row]
            if number == 0 and cells and cells[0].lower() in ("type", "tasktype", "typ"):
                continue  # header
            if not 1 <= len(cells) <= 2:
                raise BadInput(f"line {self.line}: expected 'type,time', got {len(cells)} fields")
            yield self._pair(cells[0], cells[1] if len(cells) > 1 else "now", f"line {self.line}")

    def _pair(self, kind: str, when: str, where: str) -> tuple[TaskType, datetime]:
        try:
            return TaskType.parse(kind), parse_time(when, self.now)
        except BadInput as exc:
            raise BadInput(f"{where}: {exc}") from None


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
