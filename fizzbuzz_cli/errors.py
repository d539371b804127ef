"""The few errors fizz reports to people, each with the exit status it maps to."""

from __future__ import annotations


class FizzError(Exception):
    """A failure with a message meant for the user (one line, no traceback)."""

    exit_code = 1


class BadInput(FizzError):
    """The user asked for something invalid; nothing was changed."""

    exit_code = 2


class TaskNotFound(FizzError):
    def __init__(self, task_id: int) -> None:
        super().__init__(f"task {task_id} not found")
        self.task_id = task_id


class DatabaseUnavailable(FizzError):
    """PostgreSQL could not be reached, or went away."""


class SchemaMissing(FizzError):
    """The database has no fizz schema, or an older or newer one."""


class EmbeddedServerError(FizzError):
    """The embedded PostgreSQL could not be set up, started or stopped."""
