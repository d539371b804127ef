"""The planted bugs of tests/mutants/run.py: each breaks one promise, and names the tests
that must catch it (chosen to be quick: the whole catalogue runs in CI)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Mutant:
    name: str
    promise: str  # what the break violates
    edits: list[tuple[str, str, str]]  # (file in the package, text, replacement)
    tests: list[str]  # pytest arguments
    timeout: float = 300.0


WORKER = "tests/acceptance/test_worker.py"
CLAIMS = "tests/integration/test_claims.py"
UNIT = "tests/unit/test_worker_logic.py"
SERVER = "tests/acceptance/test_server.py"
CLI = "tests/acceptance/test_cli.py"

MUTANTS = [
    Mutant(
        "fizzbuzz-late-printing-its-due-time",
        "a FizzBuzz runs at its time and prints when it ran",
        [("worker/book.py", "    start = max(claim.due, claimed_at) - offset + 1e-6\n",
          "    start = max(claim.due, claimed_at) - offset + 1e-6\n"
          "    start += 1.0 if claim.type.value == 'FizzBuzz' else 0.0\n"),
         ("worker/printer.py", "job.claim.type.output(job.id, self.clock.now())",
          "job.claim.type.output(job.id, __import__('datetime').datetime.fromtimestamp("
          "job.claim.due, __import__('datetime').timezone.utc))")],
        [f"{WORKER}::test_each_type_prints_its_line_on_time"]),
    Mutant(
        "fizz-sleeps-2-s",
        "a Fizz prints 3 s after it starts",
        [("tasks.py", "_DURATIONS = {TaskType.FIZZ: 3.0,", "_DURATIONS = {TaskType.FIZZ: 2.0,")],
        [f"{WORKER}::test_each_type_prints_its_line_on_time"]),
    Mutant(
        "record-without-the-worker-fence",
        "a run is recorded only under the claim of the worker that holds it",
        [("claims.py", """              AND tasks.worker IS NOT DISTINCT FROM %(worker)s
              AND tasks.status IS NOT DISTINCT FROM 'Claimed'
            FOR UPDATE
        ) AS mine
    )
    UPDATE tasks SET status = 'Complete',""", """              AND (tasks.worker IS NOT DISTINCT FROM %(worker)s OR true)
              AND tasks.status IS NOT DISTINCT FROM 'Claimed'
            FOR UPDATE
        ) AS mine
    )
    UPDATE tasks SET status = 'Complete',""")],
        [CLAIMS, "-k", "fenced"]),
    Mutant(
        "record-without-the-attempt-fence",
        "a run is recorded only for the attempt that holds the claim",
        [("claims.py", """            WHERE tasks.id = b.id AND tasks.attempts = b.attempt
              AND tasks.worker IS NOT DISTINCT FROM %(worker)s
              AND tasks.status IS NOT DISTINCT FROM 'Claimed'
            FOR UPDATE
        ) AS mine
    )
    UPDATE tasks SET status = 'Complete',""", """            WHERE tasks.id = b.id AND (tasks.attempts = b.attempt OR true)
              AND tasks.worker IS NOT DISTINCT FROM %(worker)s
              AND tasks.status IS NOT DISTINCT FROM 'Claimed'
            FOR UPDATE
        ) AS mine
    )
    UPDATE tasks SET status = 'Complete',""")],
        [CLAIMS, "-k", "fenced"]),
    Mutant(
        "print-what-was-not-recorded",
        "a line is printed only after its run was recorded",
        [("worker/recorder.py", "lost = self.book.settle(jobs, recorded)",
          "lost = self.book.settle(jobs, {job.id for job in jobs})")],
        [f"{WORKER}::test_a_run_whose_claim_was_taken_over_is_not_printed"]),
    Mutant(
        "renewal-renews-nothing",
        "a worker keeps the leases of the claims it holds",
        [("claims.py", """        UPDATE tasks SET lease_until = now() + %(lease)s * interval '1 second',
                         renewed_at = now()""",
          """        UPDATE tasks SET lease_until = lease_until + 0 * %(lease)s * interval '1 second'""")],
        [CLAIMS, "-k", "renews_exactly"]),
    Mutant(
        "renewal-hands-back-claims-in-flight",
        "a claim whose answer has not been read is never judged (the claim/renewal race)",
        [("claims.py", "          AND tasks.claimed_at <= to_timestamp(%(cutoff)s::float8)\n",
          "          AND (tasks.claimed_at <= to_timestamp(%(cutoff)s::float8) OR true)\n")],
        [CLAIMS, "-k", "orphans"]),
    Mutant(
        "orphans-never-handed-back",
        "rows claimed under a worker's name that it does not hold go back at once",
        [("claims.py", "          AND tasks.claimed_at <= to_timestamp(%(cutoff)s::float8)\n",
          "          AND tasks.claimed_at <= to_timestamp(%(cutoff)s::float8) AND false\n")],
        [CLAIMS, "-k", "orphans"]),
    Mutant(
        "reaper-ignores-its-watch",
        "no lease is reaped unless the reaper watched the database for the claim's lease",
        [("claims.py", """          AND to_timestamp(%(since)s::float8)
              <= now() - (lease_until - coalesce(renewed_at, claimed_at, lease_until))""",
          """          AND (to_timestamp(%(since)s::float8)
              <= now() - (lease_until - coalesce(renewed_at, claimed_at, lease_until)) OR true)""")],
        [CLAIMS, "-k", "reaping"]),
    Mutant(
        "reaper-ignores-gaps",
        "a freeze or cut breaks the reaper's watch",
        [("claims.py", "          AND now() - to_timestamp(%(last)s::float8) <= %(max_gap)s * interval '1 second'\n",
          "          AND (now() - to_timestamp(%(last)s::float8) <= %(max_gap)s * interval '1 second' OR true)\n")],
        [CLAIMS, "-k", "reaping"]),
    Mutant(
        "continuity-never-breaks",
        "two observations far apart break the reaper's watch",
        [("reaper.py", "        if self.last is None or not 0 <= at - self.last <= self.max_gap:",
          "        if self.last is None:")],
        [UNIT, "-k", "continuity"]),
    Mutant(
        "concurrency-ignored",
        "--concurrency bounds the tasks in flight",
        [("worker/dispatcher.py", "            room = s.concurrency - len(self.book)\n",
          "            room = s.batch\n")],
        [f"{WORKER}::test_concurrency_limits_tasks_in_flight"]),
    Mutant(
        "no-keepalives",
        "every connection notices a dead peer within a third of the lease",
        [("link.py", '            "keepalives": 1,\n', '            "keepalives": 0,\n')],
        [UNIT, "-k", "dead_peer"]),
    Mutant(
        "records-not-durable",
        "a record survives a crash of PostgreSQL (durable commit)",
        [("link.py", '        conn.execute("SET synchronous_commit = on")\n',
          '        pass\n')],
        [CLAIMS, "-k", "durable"]),
    Mutant(
        "clock-threshold-200-ms",
        "tasks run on the database's clock when the clocks differ by more than 1 ms",
        [("worker/clock.py", "max(uncertainty, 0.001)", "max(uncertainty, 0.2)")],
        [UNIT, "-k", "clock_correction"]),
    Mutant(
        "sigterm-keeps-claiming",
        "after SIGTERM a worker takes no new task",
        [("worker/main.py", """            while len(book) and not self.immediate and time.monotonic() < deadline:
                self.dispatcher.wait(""", """            while len(book) and not self.immediate and time.monotonic() < deadline:
                self.dispatcher.stopping = False
                self.dispatcher.step()
                self.dispatcher.wait(""")],
        [f"{WORKER}::test_no_new_task_after_sigterm"]),
    Mutant(
        "stopping-hands-nothing-back",
        "a stopping worker hands back what it did not start",
        [("worker/main.py", "            unstarted = book.take_pending(lambda job: job.start > time.time())\n",
          "            unstarted = []\n")],
        [f"{WORKER}::test_sigterm_finishes_running_tasks_and_hands_back_the_rest"]),
    Mutant(
        "deleted-tasks-still-run",
        "a deleted task is dropped by the worker holding it",
        [("worker/book.py", """            dropped = [job for i in ids if (job := self._jobs.get(i)) is not None
                       and job.state is State.PENDING]""", """            dropped = []""")],
        [f"{WORKER}::test_a_task_deleted_while_claimed_is_dropped"]),
    Mutant(
        "token-not-asked-on-delete",
        "with --token, every route but /healthz needs it",
        [("server/routes.py", "            if self._token is not None and request.path not in PUBLIC:\n",
          "            if (self._token is not None and request.path not in PUBLIC\n"
          "                    and request.method != 'DELETE'):\n")],
        [f"{SERVER}::test_bearer_token_on_every_route_but_healthz"]),
    Mutant(
        "csv-row-silently-skipped",
        "a bad line of a task file is named, and nothing is added",
        [("bulk.py", """                raise BadInput(f"line {self.line}: expected 'type,time', got {len(cells)} fields")""",
          """                continue""")],
        ["tests/unit/test_bulk.py", "-k", "bad_records"]),
    Mutant(
        "partial-bulk-load-committed",
        "a bulk add is all or nothing",
        [("db.py", """        for task_type, when in rows:
            copy.write_row((task_type.value, "Waiting", when))""", """        rows = iter(rows)
        while True:
            try:
                task_type, when = next(rows)
            except Exception:
                break
            copy.write_row((task_type.value, "Waiting", when))""")],
        [f"{CLI}::test_bulk_add_is_all_or_nothing"]),
    Mutant(
        "a-500-on-a-bad-id",
        "a bad id is a 400 (or exit 2), never a 500",
        [("tasks.py", """        raise BadInput(f"invalid task id {raw!r}: use a whole number from 1 to {MAX_TASK_ID}")""",
          """        raise ValueError(f"invalid task id {raw!r}")""")],
        [SERVER, "-k", "bad_paths_and_queries"]),
    Mutant(
        "init-db-drops-a-column",
        "init-db upgrades in place, keeping every row and column",
        [("schema.sql", "ALTER TABLE tasks ALTER COLUMN created_at SET DEFAULT now();\n",
          "ALTER TABLE tasks ALTER COLUMN created_at SET DEFAULT now();\n"
          "ALTER TABLE tasks DROP COLUMN IF EXISTS started_at;\n"
          "ALTER TABLE tasks ADD COLUMN started_at TIMESTAMPTZ;\n")],
        ["tests/integration/test_schema.py", "-k", "changes_no_row"]),
    Mutant(
        "two-content-lengths-accepted",
        "a request cannot smuggle a second one in its body",
        [("server/protocol.py", """        if name == "content-length":
            raise bad_request""", """        if name == "content-length" and False:
            raise bad_request""")],
        ["tests/acceptance/test_server_http.py", "-k", "smuggled"]),
    Mutant(
        "delete-several-not-all-or-nothing",
        "fizz delete 1 2 deletes all or none",
        [("db.py", """        if missing:
            which =""", """        if missing and False:
            which =""")],
        [f"{CLI}::test_delete_several_ids_all_or_nothing"]),
    Mutant(
        "ids-in-other-scripts",
        "ids are ASCII digits only (fizz delete ١ deleted task 1)",
        [("tasks.py", '_ASCII_ID = re.compile(r"[0-9]{1,10}")',
          '_ASCII_ID = re.compile(r"\\d{1,10}")')],
        [CLI, "-k", "bad_input_exits_2"]),
    Mutant(
        "purge-deletes-a-row-that-changed",
        "a purge deletes only tasks still Complete and old enough when it gets to them",
        [("purge.py", """          AND tasks.status = 'Complete' AND tasks.completed_at < %(before)s""",
          """          AND true""")],
        ["tests/integration/test_purge.py", "-k", "stopped_being_purgeable"]),
    Mutant(
        "stats-open-without-the-token",
        "with --token, the dashboard's data needs the token (its files do not)",
        [("server/routes.py", 'PUBLIC = frozenset({"/healthz", *PAGE_PATHS})',
          'PUBLIC = frozenset({"/healthz", "/stats", *PAGE_PATHS})')],
        ["tests/acceptance/test_operations.py", "-k", "token"]),
    Mutant(
        "skipped-hour-never-runs",
        "a cron job at a fixed time skipped by a spring jump runs right after it, once",
        [("recurrence.py", "        if size <= timedelta(0) or size >= CLOCK_SET_FORWARD:\n",
          "        if True:\n")],
        ["tests/unit/test_recurrence.py", "-k", "real_transitions"]),
    Mutant(
        "repeated-hour-runs-twice",
        "a cron job at a fixed time in an hour the autumn repeats runs once",
        [("recurrence.py", "        if jump.size >= timedelta(0) or self.rule.wildcard or",
          "        if True or")],
        ["tests/unit/test_recurrence.py", "-k", "real_transitions"]),
    Mutant(
        "occurrence-not-unique",
        "a second copy of an occurrence is impossible, whoever materialises it",
        [("schema.sql", "CREATE UNIQUE INDEX IF NOT EXISTS tasks_schedule_occurrence_idx",
          "CREATE INDEX IF NOT EXISTS tasks_schedule_occurrence_idx"),
         ("schedules.py",
          "    ON CONFLICT (schedule_id, occurrence) WHERE schedule_id IS NOT NULL DO NOTHING\"\"\"",
          "\"\"\"")],
        ["tests/integration/test_schedules.py", "-k", "unique_index"]),
    Mutant(
        "pause-leaves-occurrences-waiting",
        "pausing or deleting a schedule removes its occurrences that have not started",
        [("schedules.py",
          "    WHERE schedule_id = %s AND (status = 'Waiting' OR (status = 'Claimed' AND time > now()))",
          "    WHERE schedule_id = %s AND false")],
        ["tests/integration/test_schedules.py", "-k", "pause_removes or delete_keeps"]),
    Mutant(
        "claims-not-durable",
        "a claim survives a crash of PostgreSQL (its attempt number is never reused)",
        [("worker/dispatcher.py", "        make_durable(conn)\n        conn.add_notify_handler",
          "        conn.add_notify_handler")],
        [CLAIMS, "-k", "durable"]),
    Mutant(
        "reclaimed-task-prints-its-old-record",
        "a task claimed again while its record is unanswered prints once",
        [("worker/book.py", "old.state in (State.PENDING, State.RECORDING)",
          "old.state is State.PENDING")],
        [UNIT, "-k", "claimed_again"]),
    Mutant(
        "batched-inserts-answer-crossed",
        "POSTs that share a statement each get their own task's id",
        [("server/database.py", "return sorted(await cur.fetchall(), key=lambda task: task.id)",
          "return sorted(await cur.fetchall(), key=lambda task: -task.id)")],
        [SERVER, "-k", "share_a_statement"]),
]
