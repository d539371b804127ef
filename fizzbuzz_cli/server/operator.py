"""The operator's routes of `fizz serve`: GET /stats, GET /workers, and the dashboard page
(GET /, /index.html, /style.css, /app.js).

The figures come from fizzbuzz_cli.stats, the one place they are computed (`fizz stats` and
`fizz workers` print the same objects). A snapshot for the default window is shared by
every caller for a second, so any number of open dashboards cost one snapshot a second.
The page's files hold no data and need no token; the routes they call do.

Runs on the event loop's thread only.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable

from fizzbuzz_cli import stats, web
from fizzbuzz_cli.errors import BadInput
from fizzbuzz_cli.server.database import Database
from fizzbuzz_cli.server.transport import Request, Response, json_response, query_param

Handler = Callable[[Request], Awaitable[Response]]
PAGE_PATHS = frozenset(web.paths())  # served without a token


class Operator:
    def __init__(self, database: Database) -> None:
        self.db = database
        self._snapshots = stats.AsyncSnapshotCache(
            lambda: database.run(lambda conn: stats.snapshot_async(conn)))

    def routes(self) -> list[tuple[str, str, Handler]]:
        return [("GET", "/stats", self.stats), ("GET", "/workers", self.workers),
                *(("GET", path, self.page) for path in sorted(PAGE_PATHS))]

    async def stats(self, request: Request) -> Response:
        window = query_param(request, "window", _seconds)
        if window is None or window == stats.DEFAULT_WINDOW:
            return json_response(200, await self._snapshots.get())
        return json_response(200, await self.db.run(
            lambda conn: stats.snapshot_async(conn, window)))

    async def workers(self, request: Request) -> Response:
        everyone = query_param(request, "all", _boolean) or False
        return json_response(200, await self.db.run(
            lambda conn: stats.workers_async(conn, include_gone=everyone)))

    async def page(self, request: Request) -> Response:
        found = web.asset(request.path)
        assert found is not None
        headers = found.headers()
        content_type = headers.pop("Content-Type")
        if request.headers.get("if-none-match") == found.etag:
            return Response(304, b"", content_type, headers)
        return Response(200, found.body, content_type, headers)


def _seconds(text: str) -> float:
    """?window=: whole seconds, 1 to a day (the command line's --window takes durations)."""
    if not re.fullmatch(r"[0-9]{1,5}", text) or not 1 <= int(text) <= 86400:
        raise BadInput(f"{text!r} is not a whole number of seconds from 1 to 86400")
    return float(text)


def _boolean(text: str) -> bool:
    if text in ("true", "false"):
        return text == "true"
    raise BadInput(f"{text!r} is not true or false")
