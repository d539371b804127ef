"""The routes of `fizz serve`: the original project's API, plus /healthz, /metrics and
/openapi.json (and the routes of other modules, such as schedule_routes, that app.py adds).

Each route parses what the client sent, calls one function of the server's database layer
and shapes the answer. Errors carry their HTTP status (FizzError.http_status), so mapping
them is one rule in `Api.handle`; nothing a client sends makes a 500.

Runs on the event loop's thread only.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

from fizzbuzz_cli import stats
from fizzbuzz_cli.config import ServerSettings
from fizzbuzz_cli.errors import BadInput, DatabaseUnavailable, FizzError
from fizzbuzz_cli.server.database import Database
from fizzbuzz_cli.server.metrics import CONTENT_TYPE as METRICS_TYPE
from fizzbuzz_cli.server.metrics import Metrics
from fizzbuzz_cli.server.operator import PAGE_PATHS, Operator
from fizzbuzz_cli.server.protocol import HttpError
from fizzbuzz_cli.server.transport import (
    Request,
    Response,
    error_response,
    json_response,
    query_param,
)
from fizzbuzz_cli.tasks import (
    MAX_TASK_ID,
    Status,
    Task,
    TaskType,
    format_time,
    parse_task_id,
    parse_task_record,
)

log = logging.getLogger("fizz.server")

Handler = Callable[[Request], Awaitable[Response]]
# Paths that need no token: the health check, and the dashboard page's files (they hold no
# data; the routes they call need the token).
PUBLIC = frozenset({"/healthz", *PAGE_PATHS})
UNAVAILABLE = "database unavailable, try again shortly"


class Router:
    """Templates such as /tasks/{id}, matched on the raw path; a literal template wins
    over one with parameters (/tasks/next is not /tasks/{id})."""

    def __init__(self, routes: list[tuple[str, str, Handler]]) -> None:
        self._literal: dict[str, dict[str, Handler]] = {}
        templated: dict[str, dict[str, Handler]] = {}
        for method, template, handler in routes:
            table = templated if "{" in template else self._literal
            table.setdefault(template, {})[method] = handler
        self._patterns = [
            (re.compile(re.sub(r"\\{(\w+)\\}", r"(?P<\1>[^/]+)", re.escape(template))),
             template, methods)
            for template, methods in templated.items()]

    def resolve(self, method: str, path: str
                ) -> tuple[str, Handler | None, dict[str, str], HttpError | None]:
        """(template, handler, params, error): error is a 404 or a 405 with Allow."""
        params: dict[str, str] = {}
        template = path
        methods = self._literal.get(path)
        if methods is None:
            for pattern, known, candidates in self._patterns:
                found = pattern.fullmatch(path)
                if found:
                    template, methods, params = known, candidates, found.groupdict()
                    break
            else:
                return "unmatched", None, params, HttpError(404, f"no such resource: {path}")
        handler = methods.get(method) or (methods.get("GET") if method == "HEAD" else None)
        if handler is not None:
            return template, handler, params, None
        allowed = sorted(set(methods) | ({"HEAD"} if "GET" in methods else set()))
        return template, None, params, HttpError(
            405, f"method {method} is not allowed on {path}: use {', '.join(allowed)}",
            {"Allow": ", ".join(allowed)})


class Api:
    """The app the transport serves: routing, the token, the routes, metrics and the log."""

    def __init__(self, database: Database, settings: ServerSettings,
                 more: Sequence[tuple[str, str, Handler]] = ()) -> None:
        self.db = database
        self.settings = settings
        self.metrics = Metrics()
        self._token = settings.token.encode() if settings.token else None
        self._openapi: bytes | None = None
        self.operator = Operator(database)
        self.router = Router([*self.operator.routes(),
            ("POST", "/tasks", self.create_task),
            ("GET", "/tasks", self.list_tasks),
            ("GET", "/tasks/next", self.next_task),
            ("POST", "/tasks/pull/{id}", self.pull_task),
            ("GET", "/tasks/{id}", self.get_task),
            ("DELETE", "/tasks/{id}", self.delete_task),
            ("POST", "/tasks/{id}", self.complete_task),
            ("GET", "/healthz", self.health),
            ("GET", "/metrics", self.export_metrics),
            ("GET", "/openapi.json", self.openapi),
            *more,
        ])

    async def handle(self, request: Request) -> Response:
        """The answer to one request; never raises."""
        template, handler, params, error = self.router.resolve(request.method, request.path)
        try:
            if self._token is not None and request.path not in PUBLIC:
                self.authorize(request)
            if error is not None:
                raise error
            assert handler is not None
            request.params = params
            response = await handler(request)
        except DatabaseUnavailable as exc:
            log.warning("database unavailable: %s", exc)
            response = error_response(HttpError(503, UNAVAILABLE, {"Retry-After": "1"}))
        except FizzError as exc:
            response = error_response(exc)
        except Exception as exc:  # a bug: one line in the log, never a traceback
            log.error("internal error answering %s %s: %r", request.method,
                      request.head.target[:200], exc)
            response = error_response(HttpError(500, "internal error"))
        response.route = template
        return response

    def observe(self, client: str, method: str, target: str, route: str, status: int,
                seconds: float) -> None:
        """Count one answered request and log it (one line; the record is made directly,
        without logging's search of the caller's frame, wasted on a line made per request)."""
        self.metrics.observe(route, method, status, seconds)
        if log.isEnabledFor(logging.INFO):
            log.handle(logging.LogRecord(
                log.name, logging.INFO, __file__, 0, '%s "%s %s" %s %.1fms',
                (client, method, target[:200], status, seconds * 1000), None))

    def authorize(self, request: Request) -> None:
        scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
        assert self._token is not None
        if scheme.lower() != "bearer" or not hmac.compare_digest(
                credentials.strip().encode("latin-1"), self._token):
            raise HttpError(401, "missing or wrong bearer token (Authorization: Bearer "
                            "<token>)", {"WWW-Authenticate": 'Bearer realm="fizz"'})

    # -------------------------------------------------------------- tasks

    async def create_task(self, request: Request) -> Response:
        payload = await read_json(request, self.settings.max_array_body)
        if isinstance(payload, list):
            rows = [_record(item, f"tasks[{n}]: ") for n, item in enumerate(payload)]
            ids = await self.db.add_tasks(rows) if rows else []
            return json_response(201, {"ids": ids})
        kind, moment = _record(payload)
        task = await self.db.add_task(kind, moment)
        return json_response(201, {"id": task.id}, Location=f"/tasks/{task.id}")

    async def list_tasks(self, request: Request) -> Response:
        kind = query_param(request, "filters.type", TaskType.parse)
        status = query_param(request, "filters.status", Status.parse)
        limit = query_param(request, "limit", _limit)
        if query_param(request, "order", _order) == "desc":  # newest first (the dashboard)
            newest = await self.db.run(lambda conn: stats.latest_tasks_async(
                conn, kind, status, min(limit if limit is not None else 100, 1000)))
            return json_response(200, [task.to_json() for task in newest])
        page = self.settings.list_page
        # The first page is read before the 200 is committed to (a database that is away
        # is still a 503); the rest is read page by page as the client takes it.
        first = await self.db.list_page(0, kind, status, page if limit is None
                                        else min(page, limit))
        return Response(200, self._pages(first, kind, status, limit))

    async def _pages(self, tasks: list[Task], kind: TaskType | None, status: Status | None,
                     limit: int | None) -> AsyncIterator[bytes]:
        """The JSON array, one piece per page; no connection is held between pages."""
        page = self.settings.list_page
        sent = 0
        separator = b"["
        while tasks:
            yield separator + b",".join(json.dumps(t.to_json()).encode() for t in tasks)
            separator = b","
            sent += len(tasks)
            wanted = page if limit is None else min(page, limit - sent)
            if len(tasks) < page or wanted <= 0:
                break
            tasks = await self.db.list_page(tasks[-1].id, kind, status, wanted)
        yield b"[]" if separator == b"[" else b"]"

    async def next_task(self, request: Request) -> Response:
        found = await self.db.next_waiting()
        if found is None:
            raise HttpError(404, "no waiting task")
        return json_response(200, {"id": found[0], "time": format_time(found[1])})

    async def pull_task(self, request: Request) -> Response:
        task_id = parse_task_id(request.params["id"])
        task = await self.db.claim_task(task_id, f"http:{request.client}",
                                        self.settings.http_lease)
        return json_response(200, task.to_json())

    async def get_task(self, request: Request) -> Response:
        return json_response(200, (await self.db.get_task(
            parse_task_id(request.params["id"]))).to_json())

    async def delete_task(self, request: Request) -> Response:
        return json_response(200, (await self.db.delete_task(
            parse_task_id(request.params["id"]))).to_json())

    async def complete_task(self, request: Request) -> Response:
        task = await self.db.complete_task(parse_task_id(request.params["id"]))
        return json_response(200, task.to_json())

    # -------------------------------------------------------------- operations

    async def health(self, request: Request) -> Response:
        if await self.db.healthy():
            return json_response(200, {"status": "ok", "database": "ok"})
        return json_response(503, {"status": "unavailable", "database": "unreachable"})

    async def export_metrics(self, request: Request) -> Response:
        text = self.metrics.render(await self.db.count_tasks())
        return Response(200, text.encode(), content_type=METRICS_TYPE)

    async def openapi(self, request: Request) -> Response:
        if self._openapi is None:
            from fizzbuzz_cli.openapi import spec

            self._openapi = json.dumps(spec(
                token=bool(self.settings.token), max_body=self.settings.max_body,
                max_array_body=self.settings.max_array_body)).encode()
        return Response(200, self._openapi)


def _record(item: Any, where: str = "") -> Any:
    """(type, time) of one task object, by the original API's rules."""
    try:
        return parse_task_record(item, exact_type=True, time_required=True, relative=False)
    except BadInput as exc:
        raise BadInput(f"{where}{exc}") from None


def _order(text: str) -> str:
    if text not in ("asc", "desc"):
        raise BadInput(f"{text!r} is not asc (oldest first, the default) or desc (newest "
                       "first, at most 1000)")
    return text


def _limit(text: str) -> int:
    if not re.fullmatch(r"[0-9]{1,10}", text) or int(text) > MAX_TASK_ID:
        raise BadInput(f"{text!r} is not a whole number from 0 to {MAX_TASK_ID}")
    return int(text)


TASK_BODY = ('the body must be a JSON object such as {"type": "Fizz", "time": '
             '"2023-03-28T11:59:59Z"}, or an array of them')


async def read_json(request: Request, max_array: int | None,
                    expected: str = TASK_BODY) -> dict[str, Any] | list[Any]:
    """The body as a JSON object (one task) or array (many; only arrays may be larger than
    the limit for one object, which the transport checks). `expected` is the error for any
    other JSON value."""
    raw = await request.body(max_array)
    try:
        payload = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise HttpError(400, f"invalid JSON: {exc}" if isinstance(exc, ValueError)
                        else "invalid JSON: nested too deeply") from None
    if not isinstance(payload, (dict, list)):
        raise HttpError(400, expected)
    return payload
