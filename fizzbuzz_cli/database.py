"""Opening the database a command uses, with its schema ready.

`config.database_choice` says which database: --database-url, else FIZZ_DATABASE_URL, else
the embedded server. The embedded database is fizz's own: it is started on first use and
its schema is created or upgraded on the spot. A database named by URL is never changed
behind the user's back: a command that finds no schema there says so, naming that database
and how to set it up (`fizz init-db` typed in a shell without the variable would set up the
embedded database instead).

Nothing runs at import time; the embedded server's module is imported only when it is the
database in use.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

from fizzbuzz_cli import db
from fizzbuzz_cli.config import DATABASE_URL_ENV, DatabaseChoice, database_choice
from fizzbuzz_cli.errors import SchemaMissing

log = logging.getLogger("fizz.database")


def resolve(choice: DatabaseChoice) -> str:
    """The URL to connect to; the embedded server is started (and its database created)
    when it is the one chosen."""
    if choice.url is not None:
        url = choice.url
    else:
        from fizzbuzz_cli.embedded import EmbeddedServer

        started = time.perf_counter()
        url = EmbeddedServer().ensure_database()
        log.debug("embedded PostgreSQL ready in %.1f ms", _ms(started))
    log.debug("database: %s (%s)", db.redact(url), choice.source)
    return url


@contextmanager
def opened(explicit: str | None) -> Iterator[psycopg.Connection]:
    """One connection to the chosen database, schema checked (a named database) or created
    and upgraded (the embedded one); errors become one-line FizzErrors."""
    choice = database_choice(explicit)
    url = resolve(choice)
    started = time.perf_counter()
    with _advice_for(choice, url), db.session(url) as conn:
        log.debug("connected in %.1f ms", _ms(started))
        if choice.embedded:
            db.ensure_schema(conn)
        yield conn


def prepared_url(explicit: str | None) -> str:
    """The URL for the long-running commands (work, serve), checked before they start: the
    embedded database is migrated; another one must already have the current schema."""
    choice = database_choice(explicit)
    url = resolve(choice)
    with _advice_for(choice, url), db.session(url) as conn:
        if choice.embedded:
            db.ensure_schema(conn)
        else:
            db.require_schema(conn)
    return url


def init_url(explicit: str | None) -> str:
    """The URL `fizz init-db` works on (the embedded server started if it is the one)."""
    return resolve(database_choice(explicit))


@contextmanager
def _advice_for(choice: DatabaseChoice, url: str) -> Iterator[None]:
    """Say which database lacks the schema, and how to set up that one."""
    try:
        yield
    except SchemaMissing as exc:
        if choice.embedded or exc.advice != SchemaMissing.INIT_DB:
            raise
        if choice.source == DATABASE_URL_ENV:
            where = f"the database in {DATABASE_URL_ENV} ({db.redact(url)})"
            advice = f"run 'fizz init-db' with the same {DATABASE_URL_ENV}"
        else:
            where = f"the database given by --database-url ({db.redact(url)})"
            advice = "run 'fizz init-db --database-url URL' with the same URL"
        raise SchemaMissing(exc.problem, advice, where) from None


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000
