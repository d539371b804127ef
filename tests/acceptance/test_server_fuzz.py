"""Property-based fuzzing of the HTTP API from its own /openapi.json (schemathesis).

Every operation gets generated requests, valid (positive) and invalid (negative); each
response must not be a 5xx, must have a documented status code and content type, and must
match its documented schema. (Driven through hypothesis directly: schemathesis's pytest
plugin does not load under this pytest.)
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest
import schemathesis
from helpers import PgServer, query
from hypothesis import HealthCheck, given, settings
from serving import ServerProcess, finish


@pytest.fixture(scope="module")
def fuzz_base(pg_server: PgServer) -> Iterator[str]:
    name = f"fizz_test_fuzz_{os.getpid()}_{time.monotonic_ns()}"  # never shared by runs
    url = pg_server.create_database(name, template="fizz_test_template")
    query(url, "INSERT INTO tasks (tasktype, status, time) SELECT 'Fizz', 'Waiting', now() "
               "FROM generate_series(1, 200)")  # tasks to find, claim, complete and delete
    server = ServerProcess(url, "--pool-size", "4").wait_ready()
    try:
        yield server.base
    finally:
        finish([server])  # a clean stop, and no traceback in its stderr
        pg_server.drop_database(name)


def operations(base: str) -> list[schemathesis.APIOperation]:
    schema = schemathesis.openapi.from_url(f"{base}/openapi.json")
    return [result.ok() for result in schema.get_all_operations()]


@pytest.mark.parametrize("mode", [schemathesis.GenerationMode.POSITIVE,
                                  schemathesis.GenerationMode.NEGATIVE])
def test_api_conforms_to_its_openapi_document(fuzz_base: str,
                                              mode: schemathesis.GenerationMode) -> None:
    found = operations(fuzz_base)
    # Every route is described and fuzzed (schemathesis leaves out the document's own URL).
    assert sorted(op.label for op in found) == [
        "DELETE /tasks/{id}", "GET /", "GET /healthz", "GET /metrics", "GET /stats",
        "GET /tasks", "GET /tasks/next", "GET /tasks/{id}", "GET /workers", "POST /tasks",
        "POST /tasks/pull/{id}", "POST /tasks/{id}"]
    for operation in found:
        has_input = any(len(part) for part in (operation.path_parameters, operation.query,
                                               operation.body))
        if mode is schemathesis.GenerationMode.NEGATIVE and not has_input:
            continue  # nothing to make invalid

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=30, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        def check(case: schemathesis.Case) -> None:
            case.call_and_validate(base_url=fuzz_base)

        check()
