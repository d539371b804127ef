"""Property-based fuzzing of the HTTP API from its own /openapi.json (schemathesis).

Every operation gets generated requests, valid (positive) and invalid (negative); each
response must not be a 5xx, must have a documented status code and content type, and must
match its documented schema; a request the document calls invalid must be refused, and one
it calls valid accepted. One exception to the last rule: a new schedule's rule, zone and
times are text whose validity (a cron grammar, the IANA zones, an end after the start) no
JSON Schema can state, so POST /schedules may refuse a body the document accepts (with a
documented 400); tests/unit/test_recurrence.py and test_server_schedules.py test those
readers. (Driven through hypothesis directly: schemathesis's pytest plugin does not load
under this pytest.)

The server runs twice: open, and with a bearer token that every valid fuzzed request carries.
Runs are reproducible: a fixed seed (FIZZ_FUZZ_SEED picks another), and hypothesis's example
database in .hypothesis/ replays a failure it once found before trying anything new. The
server's stderr is read at the end: a traceback there fails the test even when the client
got a proper answer.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
import schemathesis
from helpers import PgServer, query
from hypothesis import HealthCheck, given, seed, settings
from hypothesis.database import DirectoryBasedExampleDatabase
from schemathesis.checks import positive_data_acceptance
from serving import ServerProcess, finish

from fizzbuzz_cli import schedules
from fizzbuzz_cli.recurrence import parse_schedule_spec

SEED = int(os.environ.get("FIZZ_FUZZ_SEED", "20261127"))
EXAMPLES = Path(__file__).resolve().parents[2] / ".hypothesis" / "server-fuzz"
TOKEN = "fuzz-token"


@dataclass(frozen=True)
class Target:
    base: str
    token: str | None

    @property
    def headers(self) -> dict[str, str]:  # a new dict each time: schemathesis adds to it
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}


@pytest.fixture(scope="module", params=[None, TOKEN], ids=["open", "token"])
def target(request: pytest.FixtureRequest, pg_server: PgServer) -> Iterator[Target]:
    token = request.param
    name = f"fizz_test_fuzz_{os.getpid()}_{time.monotonic_ns()}"  # never shared by runs
    url = pg_server.create_database(name, template="fizz_test_template")
    query(url, "INSERT INTO tasks (tasktype, status, time) SELECT 'Fizz', 'Waiting', now() "
               "FROM generate_series(1, 200)")  # tasks to find, claim, complete and delete
    with psycopg.connect(url, autocommit=True) as conn:  # schedules to show, pause, delete
        for n in range(20):
            schedules.create_schedule(conn, parse_schedule_spec(
                "Fizz", every=f"{n + 1}h", tz="Europe/Paris", start="2030-01-01T00:00:00Z"))
    server = ServerProcess(url, "--pool-size", "4",
                           *(["--token", token] if token else [])).wait_ready()
    try:
        yield Target(server.base, token)
    finally:
        finish([server])  # a clean stop, and no traceback in its stderr
        pg_server.drop_database(name)


def operations(target: Target) -> list[schemathesis.APIOperation]:
    schema = schemathesis.openapi.from_url(f"{target.base}/openapi.json",
                                           headers=target.headers)
    return [result.ok() for result in schema.get_all_operations()]


@pytest.mark.parametrize("mode", [schemathesis.GenerationMode.POSITIVE,
                                  schemathesis.GenerationMode.NEGATIVE])
def test_api_conforms_to_its_openapi_document(target: Target,
                                              mode: schemathesis.GenerationMode) -> None:
    if target.token and mode is schemathesis.GenerationMode.NEGATIVE:
        # A negative case may be one whose token is missing, which the header we add would
        # undo; the open server takes the negative cases, test_server.py the missing tokens.
        pytest.skip("negative cases run against the open server")
    found = operations(target)
    # Every route is described and fuzzed (schemathesis leaves out the document's own URL).
    assert sorted(op.label for op in found) == [
        "DELETE /schedules/{id}", "DELETE /tasks/{id}", "GET /", "GET /healthz",
        "GET /metrics", "GET /schedules", "GET /schedules/{id}", "GET /stats", "GET /tasks",
        "GET /tasks/next", "GET /tasks/{id}", "GET /workers", "POST /schedules",
        "POST /schedules/{id}/pause", "POST /schedules/{id}/resume", "POST /tasks",
        "POST /tasks/pull/{id}", "POST /tasks/{id}"]
    for operation in found:
        has_input = any(len(part) for part in (operation.path_parameters, operation.query,
                                               operation.body))
        if mode is schemathesis.GenerationMode.NEGATIVE and not has_input:
            continue  # nothing to make invalid

        fuzz(operation, mode, target)


def fuzz(operation: schemathesis.APIOperation, mode: schemathesis.GenerationMode,
         target: Target) -> None:
    excluded = [positive_data_acceptance] if operation.label == "POST /schedules" else []

    @seed(SEED)
    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=60, deadline=None, database=DirectoryBasedExampleDatabase(EXAMPLES),
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
    def check(case: schemathesis.Case) -> None:
        case.call_and_validate(base_url=target.base, headers=target.headers,
                               excluded_checks=excluded)

    check()
