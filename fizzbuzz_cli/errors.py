"""The errors fizz reports to people, each with the exit status (CLI) and the HTTP status
(``fizz serve``) it maps to. Raised anywhere below the faces; rendered only by them."""

from __future__ import annotations


def brief(exc: BaseException) -> str:
    """Any exception as one line for a message or a log: the first line of its text, without
    the prefixes libpq puts in front of the reason ("connection to server at ... failed: ",
    "FATAL: "), or the exception's type name when it has no text."""
    lines = str(exc).strip().splitlines()
    if not lines:
        return type(exc).__name__
    text = lines[0]
    if "failed: " in text:
        text = text.rsplit("failed: ", 1)[1]
    return text.removeprefix("FATAL:").strip() or type(exc).__name__


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
    """The database has no fizz schema, or an older or newer one. `problem` says which ("no
    fizz schema"), `advice` what to do; a face that knows which database it means names it
    in `where` (and may give better advice)."""

    INIT_DB = "run 'fizz init-db'"

    def __init__(self, problem: str, advice: str = INIT_DB, where: str = "the database") -> None:
        super().__init__(f"{where} has {problem}: {advice}")
        self.problem = problem
        self.advice = advice


class EmbeddedServerError(FizzError):
    """The embedded PostgreSQL could not be set up, started or stopped."""


class ScheduleNotFound(FizzError):
    """No schedule has this id (or it was deleted: `message` says when)."""

    http_status = 404

    def __init__(self, schedule_id: int, message: str | None = None) -> None:
        super().__init__(message or f"schedule {schedule_id} not found")
        self.schedule_id = schedule_id
