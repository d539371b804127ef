-- fizz schema version: 2
--
-- Idempotent: `fizz init-db` runs this whole file in one transaction, any number of times,
-- on an empty database, on a database made by the original project, or on an older fizz
-- schema. It can also be run by hand: psql -v ON_ERROR_STOP=1 -1 -f schema.sql
--
-- The original table is kept exactly as it was, so the original server can share the
-- database: its INSERT (tasktype, time, status) still works, because every column that
-- fizz adds is nullable or has a default.

CREATE TABLE IF NOT EXISTS tasks (
    id SERIAL PRIMARY KEY,
    tasktype VARCHAR NOT NULL,
    status VARCHAR NOT NULL,
    time TIMESTAMPTZ NOT NULL
);

ALTER TABLE tasks
    ADD COLUMN IF NOT EXISTS created_at   TIMESTAMPTZ,                 -- NULL: made before fizz
    ADD COLUMN IF NOT EXISTS claimed_at   TIMESTAMPTZ,
    ADD COLUMN IF NOT EXISTS completed_at TIMESTAMPTZ,
    ADD COLUMN IF NOT EXISTS worker       TEXT,                        -- who holds the claim
    ADD COLUMN IF NOT EXISTS lease_until  TIMESTAMPTZ,                 -- claim expires then
    ADD COLUMN IF NOT EXISTS attempts     INTEGER NOT NULL DEFAULT 0,  -- claims so far; fences completion
    ADD COLUMN IF NOT EXISTS renewed_at   TIMESTAMPTZ,                 -- lease last set (claim or renewal)
    ADD COLUMN IF NOT EXISTS started_at   TIMESTAMPTZ;                 -- when the run began (fizz workers)
-- Set apart from ADD COLUMN so that rows older than fizz keep a NULL creation time.
ALTER TABLE tasks ALTER COLUMN created_at SET DEFAULT now();

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_constraint
                   WHERE conrelid = 'tasks'::regclass AND conname = 'tasks_tasktype_check') THEN
        ALTER TABLE tasks ADD CONSTRAINT tasks_tasktype_check
            CHECK (tasktype IN ('Fizz', 'Buzz', 'FizzBuzz'));
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_constraint
                   WHERE conrelid = 'tasks'::regclass AND conname = 'tasks_status_check') THEN
        ALTER TABLE tasks ADD CONSTRAINT tasks_status_check
            CHECK (status IN ('Waiting', 'Claimed', 'Complete'));
    END IF;
END
$$;

-- The next waiting task, and claims in time order, straight from this small index, however
-- many completed or far-future tasks the table holds.
CREATE INDEX IF NOT EXISTS tasks_waiting_time_idx ON tasks (time, id) WHERE status = 'Waiting';
-- Lease renewal (by worker) and expiry (by lease end) touch only claimed rows.
CREATE INDEX IF NOT EXISTS tasks_claimed_worker_idx ON tasks (worker) WHERE status = 'Claimed';
CREATE INDEX IF NOT EXISTS tasks_claimed_lease_idx ON tasks (lease_until) WHERE status = 'Claimed';

-- New waiting tasks wake the workers: one notification per statement (a bulk COPY of a
-- million rows sends one), carrying the earliest new time as epoch seconds and the id of
-- the inserting transaction (workers use it to tell whether another worker's view of the
-- queue already included these tasks).
CREATE OR REPLACE FUNCTION fizz_notify_inserted() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    earliest TIMESTAMPTZ;
BEGIN
    SELECT min(time) INTO earliest FROM fizz_inserted WHERE status = 'Waiting';
    IF earliest IS NOT NULL THEN
        PERFORM pg_notify('fizz_tasks',
                          extract(epoch FROM earliest)::text || ' ' || pg_current_xact_id());
    END IF;
    RETURN NULL;
END
$$;

CREATE OR REPLACE TRIGGER fizz_tasks_inserted
    AFTER INSERT ON tasks REFERENCING NEW TABLE AS fizz_inserted
    FOR EACH STATEMENT EXECUTE FUNCTION fizz_notify_inserted();

-- Deleting a claimed task tells its worker to drop it ('*' when the list is too long).
CREATE OR REPLACE FUNCTION fizz_notify_deleted() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    ids TEXT;
BEGIN
    SELECT string_agg(id::text, ',') INTO ids FROM fizz_deleted WHERE status = 'Claimed';
    IF ids IS NOT NULL THEN
        PERFORM pg_notify('fizz_cancel', CASE WHEN length(ids) > 7000 THEN '*' ELSE ids END);
    END IF;
    RETURN NULL;
END
$$;

CREATE OR REPLACE TRIGGER fizz_tasks_deleted
    AFTER DELETE ON tasks REFERENCING OLD TABLE AS fizz_deleted
    FOR EACH STATEMENT EXECUTE FUNCTION fizz_notify_deleted();

-- Claims and completions made by others (the original server, plain SQL) get the same
-- bookkeeping as fizz's own: a claim without a lease gets one, so it can never stay Claimed
-- forever; a completion gets its time. fizz's own statements set these columns themselves,
-- so the WHEN clause keeps this trigger off their path.
CREATE OR REPLACE FUNCTION fizz_stamp_status() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status = 'Claimed' THEN
        NEW.claimed_at := now();
        NEW.renewed_at := now();
        NEW.lease_until := now() + interval '60 seconds';
        NEW.attempts := NEW.attempts + 1;
    ELSE
        NEW.completed_at := now();
        NEW.lease_until := NULL;
    END IF;
    RETURN NEW;
END
$$;

CREATE OR REPLACE TRIGGER fizz_tasks_status_stamp
    BEFORE UPDATE OF status ON tasks FOR EACH ROW
    WHEN (NEW.status IS DISTINCT FROM OLD.status
          AND ((NEW.status = 'Claimed' AND NEW.lease_until IS NULL)
               OR (NEW.status = 'Complete' AND NEW.completed_at IS NULL)))
    EXECUTE FUNCTION fizz_stamp_status();

-- Rows claimed before this schema existed (by the original worker) get a lease too.
UPDATE tasks SET claimed_at = coalesce(claimed_at, now()), renewed_at = now(),
                 lease_until = now() + interval '60 seconds'
WHERE status = 'Claimed' AND lease_until IS NULL;

-- ---------------------------------------------------------------------- workers
-- Every `fizz work` keeps a row here, refreshed by its lease keeper's renewal statement (no
-- extra round trip), deleted when it stops; rows of workers gone for 5 minutes are removed
-- by the others. A worker is alive while last_seen is within its lease.
CREATE TABLE IF NOT EXISTS fizz_workers (
    id          TEXT PRIMARY KEY,          -- host:pid:random, as in tasks.worker
    host        TEXT NOT NULL,
    pid         INTEGER NOT NULL,
    version     TEXT NOT NULL,
    started_at  TIMESTAMPTZ NOT NULL,
    last_seen   TIMESTAMPTZ NOT NULL,
    lease       REAL NOT NULL,             -- seconds
    concurrency INTEGER NOT NULL,
    in_flight   INTEGER NOT NULL DEFAULT 0,
    ran         BIGINT NOT NULL DEFAULT 0
);

-- ---------------------------------------------------------------------- operator view
-- What `fizz stats`, `fizz top`, GET /stats and `fizz purge` read (fizzbuzz_cli/stats.py and
-- purge.py). Nothing here touches the workers' claim and record statements: those UPDATE
-- status, and no trigger below fires on a status change.

-- Recent completions, for throughput and lateness over a window and for purging by age.
-- Partial: only a completion's new row version gets an entry (a waiting insert or a claim
-- adds none, where a plain index would add a NULL key for each).
CREATE INDEX IF NOT EXISTS tasks_completed_at_idx ON tasks (completed_at) WHERE status = 'Complete';

-- How many tasks of each type the table holds, kept by statement-level triggers on INSERT,
-- DELETE and TRUNCATE (and a row trigger on the rare UPDATE of tasktype), so that counting
-- never scans the table: Complete = total - Waiting - Claimed, the last two counted exactly
-- through their partial indexes. A type's total is the sum of its rows here. A statement
-- adds to a row of its type that no other transaction holds (FOR UPDATE SKIP LOCKED), or
-- inserts a new one when all are held: writers never wait for each other, and the rows stay
-- about as many as the most transactions that ever wrote at once. Outside READ COMMITTED
-- (where locking a row changed since the snapshot would fail the statement) it always
-- inserts; `stats.fold_totals` folds the rows back to one per type.
CREATE TABLE IF NOT EXISTS fizz_task_totals (
    id       BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tasktype VARCHAR NOT NULL,
    n        BIGINT NOT NULL
);

CREATE OR REPLACE FUNCTION fizz_add_to_totals(kind VARCHAR, delta BIGINT) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF delta = 0 THEN
        RETURN;
    END IF;
    IF current_setting('transaction_isolation') = 'read committed' THEN
        UPDATE fizz_task_totals SET n = n + delta
        WHERE id = (SELECT id FROM fizz_task_totals WHERE tasktype = kind
                    LIMIT 1 FOR UPDATE SKIP LOCKED);
        IF FOUND THEN
            RETURN;
        END IF;
    END IF;
    INSERT INTO fizz_task_totals (tasktype, n) VALUES (kind, delta);
END
$$;

CREATE OR REPLACE FUNCTION fizz_count_inserted() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM fizz_add_to_totals(tasktype, n)
    FROM (SELECT tasktype, count(*) AS n FROM fizz_inserted GROUP BY tasktype ORDER BY tasktype) c;
    RETURN NULL;
END
$$;

CREATE OR REPLACE TRIGGER fizz_tasks_count_inserted
    AFTER INSERT ON tasks REFERENCING NEW TABLE AS fizz_inserted
    FOR EACH STATEMENT EXECUTE FUNCTION fizz_count_inserted();

CREATE OR REPLACE FUNCTION fizz_count_deleted() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM fizz_add_to_totals(tasktype, -n)
    FROM (SELECT tasktype, count(*) AS n FROM fizz_deleted GROUP BY tasktype ORDER BY tasktype) c;
    RETURN NULL;
END
$$;

CREATE OR REPLACE TRIGGER fizz_tasks_count_deleted
    AFTER DELETE ON tasks REFERENCING OLD TABLE AS fizz_deleted
    FOR EACH STATEMENT EXECUTE FUNCTION fizz_count_deleted();

CREATE OR REPLACE FUNCTION fizz_count_truncated() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM fizz_task_totals;
    RETURN NULL;
END
$$;

CREATE OR REPLACE TRIGGER fizz_tasks_count_truncated
    AFTER TRUNCATE ON tasks FOR EACH STATEMENT EXECUTE FUNCTION fizz_count_truncated();

-- A BEFORE trigger, so that the UPDATEs of the claim path (which never name tasktype) pay
-- nothing for it: an AFTER row trigger would make PostgreSQL re-read every updated row.
CREATE OR REPLACE FUNCTION fizz_count_retyped() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM fizz_add_to_totals(OLD.tasktype, -1);
    PERFORM fizz_add_to_totals(NEW.tasktype, 1);
    RETURN NEW;
END
$$;

CREATE OR REPLACE TRIGGER fizz_tasks_count_retyped
    BEFORE UPDATE OF tasktype ON tasks FOR EACH ROW
    WHEN (NEW.tasktype IS DISTINCT FROM OLD.tasktype)
    EXECUTE FUNCTION fizz_count_retyped();

-- ---------------------------------------------------------------------- recurring tasks
-- A schedule is a row; each occurrence becomes an ordinary task (so workers run it on time,
-- exactly once), marked with its schedule and occurrence time. The materialiser
-- (fizzbuzz_cli/schedules.py) keeps each active schedule's next occurrence in the tasks table.

CREATE TABLE IF NOT EXISTS fizz_schedules (
    id              INTEGER GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,  -- int4, as tasks.id
    tasktype        VARCHAR NOT NULL CHECK (tasktype IN ('Fizz', 'Buzz', 'FizzBuzz')),
    rule_kind       TEXT NOT NULL CHECK (rule_kind IN ('every', 'cron')),
    rule            TEXT NOT NULL,                  -- '1h30m', '30 2 * * *', '@daily'
    time_zone       TEXT NOT NULL DEFAULT 'UTC',    -- IANA name; cron rules read wall clocks in it
    start_at        TIMESTAMPTZ NOT NULL,           -- first possible occurrence; anchors --every
    end_at          TIMESTAMPTZ,                    -- last possible occurrence; NULL: none
    catch_up        TEXT NOT NULL DEFAULT 'latest' CHECK (catch_up IN ('latest', 'all', 'none')),
    max_catch_up    INTEGER NOT NULL DEFAULT 100 CHECK (max_catch_up BETWEEN 1 AND 10000),
    paused          BOOLEAN NOT NULL DEFAULT false,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    deleted_at      TIMESTAMPTZ,                    -- deleted schedules stay, for their history
    next_at         TIMESTAMPTZ,                    -- first occurrence not yet materialised; NULL: none left
    last_occurrence TIMESTAMPTZ,                    -- latest materialised; due again 2 s before it
    CHECK (end_at IS NULL OR end_at >= start_at),
    -- A schedule gets its first occurrence in the transaction that creates or resumes it.
    CHECK (next_at IS NULL OR last_occurrence IS NOT NULL)
);

-- The materialiser's work list: active schedules by their latest materialised occurrence.
CREATE INDEX IF NOT EXISTS fizz_schedules_due_idx ON fizz_schedules (last_occurrence)
    WHERE deleted_at IS NULL AND NOT paused AND next_at IS NOT NULL;

-- Hard-deleting a schedule row (by hand; fizz itself only marks it deleted) keeps its tasks.
ALTER TABLE tasks
    ADD COLUMN IF NOT EXISTS schedule_id INTEGER REFERENCES fizz_schedules (id) ON DELETE SET NULL,
    ADD COLUMN IF NOT EXISTS occurrence  TIMESTAMPTZ;  -- the schedule's time this task is for

-- One task per occurrence, whoever materialises it; partial, so ordinary tasks pay nothing.
CREATE UNIQUE INDEX IF NOT EXISTS tasks_schedule_occurrence_idx ON tasks (schedule_id, occurrence)
    WHERE schedule_id IS NOT NULL;

CREATE TABLE IF NOT EXISTS fizz_meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- The first init-db that creates the counters counts the table once. The triggers above,
-- created in this same transaction, hold a lock on tasks that keeps every writer out until
-- it commits, so no task is counted twice or missed.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM fizz_meta WHERE key = 'task_totals') THEN
        DELETE FROM fizz_task_totals;
        INSERT INTO fizz_task_totals (tasktype, n)
            SELECT tasktype, count(*) FROM tasks GROUP BY tasktype;
        INSERT INTO fizz_meta (key, value) VALUES ('task_totals', 'counted at init-db');
    END IF;
END
$$;

INSERT INTO fizz_meta (key, value) VALUES ('schema_version', '2')
ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value;
