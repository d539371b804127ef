"""Configuration: which database to use, and the defaults of the worker and the server."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

from fizzbuzz_cli import db

DATABASE_URL_ENV = "FIZZ_DATABASE_URL"
API_TOKEN_ENV = "FIZZ_API_TOKEN"
HOME_ENV = "FIZZ_HOME"  # the embedded server's folder (default: see embedded.default_home)


def database_url(explicit: str | None) -> tuple[str, bool]:
    """(URL, is_embedded): --database-url, else FIZZ_DATABASE_URL, else the embedded server.

    The embedded server is started on first use, with its database created and migrated.
    """
    url = explicit or os.environ.get(DATABASE_URL_ENV)
    if url:
        return url, False
    from fizzbuzz_cli.embedded import EmbeddedServer

    return EmbeddedServer().ensure_database(), True


@contextmanager
def open_database(explicit: str | None) -> Iterator[psycopg.Connection]:
    """One connection to the configured database, errors translated for the user.

    The embedded database is fizz's own, so its schema is created or upgraded on the spot;
    a database named by URL is left alone until `fizz init-db` is run on it.
    """
    url, embedded = database_url(explicit)
    with db.session(url) as conn:
        if embedded:
            db.ensure_schema(conn)
        yield conn
