"""The errors fizz reports to people, each with the exit status (CLI) and the HTTP status
(``fizz serve``) it maps to. Raised anywhere below the faces; rendered only by them."""

from __future__ import annotations


class FizzError(Exception):
    """A failure with a message meant for the user (one line, no traceback)."""

    exit_code = 1
    http_status = 503  # a failure at run time is the service's, not the client's


class BadInput(FizzError):
    """The user asked for something invalid; nothing was changed."""

    exit_code = 2
    http_status = 400


class TaskNotFound(FizzError):
    """No task has this id."""

    http_status = 404

    def __init__(self, task_id: int, message: str | None = None) -> None:
        super().__init__(message or f"task {task_id} not found")
        self.task_id = task_id


class WrongState(FizzError):
    """The task is not in the state the operation needs (pulling a task that is not Waiting,
    completing one that is not Claimed), or does not exist: one statement cannot tell the
    two apart without a race. The original HTTP API answers both with 404."""

    http_status = 404

    def __init__(self, task_id: int, needed: str) -> None:
        super().__init__(f"task {task_id} is not {needed} (or does not exist)")
        self.task_id = task_id
        self.needed = needed


class DatabaseUnavailable(FizzError):
    """PostgreSQL could not be reached, or went away."""


class SchemaMissing(FizzError):
    """The database has no fizz schema, or an older or newer one."""


class EmbeddedServerError(FizzError):
    """The embedded PostgreSQL could not be set up, started or stopped."""


class ScheduleNotFound(FizzError):
    """No schedule has this id (or it was deleted)."""

    http_status = 404

    def __init__(self, schedule_id: int) -> None:
        super().__init__(f"schedule {schedule_id} not found")
        self.schedule_id = schedule_id


def first_line(exc: BaseException) -> str:
    """An exception's message on one line (its first), or its type's name when it has none."""
    lines = str(exc).strip().splitlines()
    return lines[0].strip() if lines else type(exc).__name__
