"""init-db on empty databases, on the original project's table, and on itself."""

from __future__ import annotations

import threading
from datetime import datetime

import psycopg
import pytest
from helpers import Fizz

from fizzbuzz_cli import db
from fizzbuzz_cli.errors import SchemaMissing
from fizzbuzz_cli.tasks import UTC

ORIGINAL_TABLE = """
    CREATE TABLE tasks (
        id SERIAL PRIMARY KEY,
        tasktype VARCHAR NOT NULL,
        status VARCHAR NOT NULL,
        time TIMESTAMPTZ NOT NULL
    )"""


def test_schema_file_at_top_level_is_the_packaged_one() -> None:
    from pathlib import Path

    top = Path(__file__).parents[2] / "schema.sql"
    assert top.read_text() == db.SCHEMA_SQL
    assert db.SCHEMA_VERSION == 2


def test_upgrades_the_original_table_in_place_keeping_rows(empty_database: str) -> None:
    with psycopg.connect(empty_database, autocommit=True) as conn:
        conn.execute(ORIGINAL_TABLE)
        conn.execute("""INSERT INTO tasks (tasktype, status, time) VALUES
            ('Fizz', 'Waiting', '2023-03-28T11:59:59Z'),
            ('Buzz', 'Claimed', '2023-03-28T12:00:00Z'),
            ('FizzBuzz', 'Complete', '2023-03-28T12:00:01Z')""")
    result = Fizz(empty_database)("init-db")
    assert (result.code, result.out) == (
        0, "Upgraded the original tasks table to fizz schema version 2 (3 rows kept).\n")
    with psycopg.connect(empty_database, autocommit=True) as conn:
        rows = conn.execute("SELECT id, tasktype, status, time, created_at, attempts, "
                            "lease_until IS NOT NULL FROM tasks ORDER BY id").fetchall()
        assert rows == [
            (1, "Fizz", "Waiting", datetime(2023, 3, 28, 11, 59, 59, tzinfo=UTC), None, 0, False),
            (2, "Buzz", "Claimed", datetime(2023, 3, 28, 12, 0, 0, tzinfo=UTC), None, 0, True),
            (3, "FizzBuzz", "Complete", datetime(2023, 3, 28, 12, 0, 1, tzinfo=UTC), None, 0, False),
        ]
        # The original server's statements keep working on the upgraded table.
        conn.execute("INSERT INTO tasks (tasktype, time, status) VALUES ('Fizz', now(), 'Waiting')")
        conn.execute("UPDATE tasks SET status = 'Claimed' WHERE id = 4")
        conn.execute("UPDATE tasks SET status = 'Complete' WHERE id = 4")
        row = conn.execute("SELECT status, claimed_at IS NOT NULL, completed_at IS NOT NULL, "
                           "lease_until, attempts FROM tasks WHERE id = 4").fetchone()
        assert row == ("Complete", True, True, None, 1)
        assert conn.execute("SELECT max(id) FROM tasks").fetchone() == (4,)
    again = Fizz(empty_database)("init-db")
    assert again.out == "The fizz schema is up to date (version 2, 4 tasks).\n"


def test_constraints_reject_bad_rows(database: str) -> None:
    with psycopg.connect(database, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute("INSERT INTO tasks (tasktype, status, time) VALUES ('Fuzz', 'Waiting', now())")
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute("INSERT INTO tasks (tasktype, status, time) VALUES ('Fizz', 'waiting', now())")


def test_concurrent_init_db_is_serialised(empty_database: str) -> None:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            with psycopg.connect(empty_database, autocommit=True) as conn:
                db.migrate(conn)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    # ... and the schema is whole: every table, trigger and index once, the version and the
    # digest recorded once.
    with psycopg.connect(empty_database, autocommit=True) as conn:
        assert db.schema_version(conn) == (True, db.SCHEMA_VERSION)
        assert conn.execute("SELECT key, value FROM fizz_meta ORDER BY key").fetchall() == [
            ("schema_digest", db.SCHEMA_DIGEST), ("schema_version", str(db.SCHEMA_VERSION)),
            ("task_totals", "counted at init-db")]
        triggers = conn.execute("SELECT tgname FROM pg_trigger WHERE tgrelid = 'tasks'::regclass "
                                "AND NOT tgisinternal ORDER BY 1").fetchall()
        assert triggers == [("fizz_tasks_count_deleted",), ("fizz_tasks_count_inserted",),
                            ("fizz_tasks_count_retyped",), ("fizz_tasks_count_truncated",),
                            ("fizz_tasks_deleted",), ("fizz_tasks_inserted",),
                            ("fizz_tasks_status_stamp",)]
        tables = conn.execute("SELECT relname FROM pg_class WHERE relkind = 'r' AND "
                              "relnamespace = 'public'::regnamespace ORDER BY 1").fetchall()
        assert tables == [("fizz_meta",), ("fizz_schedules",), ("fizz_task_totals",),
                          ("fizz_workers",), ("tasks",)]
        db.ensure_schema(conn)  # the digest matches: nothing to do, nothing raised


def test_refuses_a_newer_schema(database: str) -> None:
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("UPDATE fizz_meta SET value = '99' WHERE key = 'schema_version'")
        with pytest.raises(SchemaMissing, match="version 99, newer than this fizz understands"):
            db.migrate(conn)


def test_insert_notifies_once_per_statement_with_the_earliest_time(database: str) -> None:
    with psycopg.connect(database, autocommit=True) as listener, \
            psycopg.connect(database, autocommit=True) as writer:
        listener.execute("LISTEN fizz_tasks")
        writer.execute("INSERT INTO tasks (tasktype, status, time) SELECT 'Fizz', 'Waiting', "
                       "'2030-01-01T00:00:00Z'::timestamptz + n * interval '1 second' "
                       "FROM generate_series(0, 999) AS n")
        xid = writer.execute("SELECT pg_current_xact_id()::text::bigint - 1").fetchone()[0]
        notes = list(listener.notifies(timeout=1.0))
    assert [(n.channel, n.payload) for n in notes] == [("fizz_tasks", f"1893456000.000000 {xid}")]


def test_ensure_schema_reapplies_a_changed_schema_file(database: str) -> None:
    """The embedded database follows schema.sql itself, not only its version number."""
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("DROP TRIGGER fizz_tasks_inserted ON tasks")
        db.ensure_schema(conn)  # same digest: nothing to do
        assert conn.execute("SELECT count(*) FROM pg_trigger WHERE tgname = "
                            "'fizz_tasks_inserted'").fetchone() == (0,)
        conn.execute("UPDATE fizz_meta SET value = 'older' WHERE key = 'schema_digest'")
        db.ensure_schema(conn)
        assert conn.execute("SELECT count(*) FROM pg_trigger WHERE tgname = "
                            "'fizz_tasks_inserted'").fetchone() == (1,)
        assert conn.execute("SELECT value FROM fizz_meta WHERE key = 'schema_digest'"
                            ).fetchone() == (db.SCHEMA_DIGEST,)


def test_upgrades_a_version_1_schema_with_claims_in_flight(empty_database: str) -> None:
    """fizz 1's schema (tests/data/schema-v1.sql, as released) with a claim held by a
    worker: the upgrade keeps every row, and the claim keeps its lease and can be reaped."""
    from pathlib import Path

    from helpers import Fizz

    v1 = (Path(__file__).parents[1] / "data" / "schema-v1.sql").read_text()
    with psycopg.connect(empty_database, autocommit=True) as conn:
        conn.execute(v1)
        conn.execute("INSERT INTO tasks (tasktype, status, time) VALUES ('Fizz', 'Waiting', "
                     "now()), ('Buzz', 'Claimed', now()), ('FizzBuzz', 'Complete', now())")
        conn.execute("UPDATE tasks SET worker = 'old', claimed_at = now() - interval '30 s', "
                     "lease_until = now() - interval '20 s', attempts = 1 WHERE id = 2")
    result = Fizz(empty_database)("init-db")
    assert (result.code, result.out) == (
        0, "Upgraded the fizz schema from version 1 to 2 (3 tasks).\n")
    with psycopg.connect(empty_database, autocommit=True) as conn:
        rows = conn.execute("SELECT id, status, worker, renewed_at, started_at FROM tasks "
                            "ORDER BY id").fetchall()
        assert rows == [(1, "Waiting", None, None, None), (2, "Claimed", "old", None, None),
                        (3, "Complete", None, None, None)]
        now = conn.execute("SELECT extract(epoch FROM now())::float8").fetchone()[0]
        from fizzbuzz_cli import claims

        # Its lease was 10 s (from claimed_at, as no renewal is known): a reaper that has
        # watched for longer hands it back.
        reaped = claims.reap_expired(conn, since=now - 11, last=now, max_gap=1.5).reaped
        assert [(r.id, r.worker) for r in reaped] == [(2, "old")]


def test_init_db_again_changes_no_row(database: str) -> None:
    """Upgrading in place keeps every row and every column of it (a column dropped and
    added again would come back empty)."""
    from helpers import Fizz, table

    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("INSERT INTO tasks (tasktype, status, time) VALUES ('Fizz', 'Waiting', "
                     "now()), ('Buzz', 'Complete', now() - interval '1 day')")
        conn.execute("UPDATE tasks SET worker = 'w:1:x', attempts = 3, started_at = now(), "
                     "completed_at = now(), claimed_at = now() WHERE id = 2")
        conn.execute("UPDATE fizz_meta SET value = 'stale' WHERE key = 'schema_digest'")
    before = table(database)
    assert Fizz(database)("init-db").code == 0
    with psycopg.connect(database, autocommit=True) as conn:
        db.ensure_schema(conn)
    assert table(database) == before
