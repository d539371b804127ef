"""The schedules' routes of `fizz serve` (recurring tasks):

    POST   /schedules                 add one: 201 and the schedule
    GET    /schedules                 the schedules that are not deleted, in id order
    GET    /schedules/{id}?next=N     one, with its next N occurrences (default 5)
    DELETE /schedules/{id}            delete it: 200 and the schedule, now deleted
    POST   /schedules/{id}/pause      200 and the schedule
    POST   /schedules/{id}/resume     200 and the schedule

A route reads what the client sent with the readers the CLI uses (fizzbuzz_cli.recurrence)
and runs the operation's steps (fizzbuzz_cli.schedules) on the pool, in one transaction:
every decision is the library's, as it is for `fizz schedule`. app.py adds these routes to
the Api, whose rules (the token, errors as JSON, never a 500) they follow.

Runs on the event loop's thread only. Occurrence times are computed on it: a page of the
list holds PAGE schedules and `next` is at most NEXT_MAX, so that no request holds the loop
for more than a few tens of milliseconds.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from datetime import datetime, timezone

from fizzbuzz_cli import schedules
from fizzbuzz_cli.errors import BadInput
from fizzbuzz_cli.recurrence import parse_schedule_id, parse_schedule_record
from fizzbuzz_cli.server.database import Database
from fizzbuzz_cli.server.routes import Handler, read_json
from fizzbuzz_cli.server.transport import Request, Response, json_response, query_param

PAGE = 100  # schedules per page of GET /schedules
NEXT_DEFAULT = 5  # occurrences in GET /schedules/{id} unless ?next= says otherwise
NEXT_MAX = 100  # ... at most (each is some 0.1 ms of the event loop's time)
SCHEDULE_BODY = ('the body must be a JSON object such as {"type": "Fizz", "every": "5m"} or '
                 '{"type": "Buzz", "cron": "30 2 * * *", "tz": "Europe/Paris"}')


class ScheduleRoutes:
    def __init__(self, database: Database) -> None:
        self.db = database

    def routes(self) -> list[tuple[str, str, Handler]]:
        return [
            ("POST", "/schedules", self.create),
            ("GET", "/schedules", self.list_all),
            ("GET", "/schedules/{id}", self.get),
            ("DELETE", "/schedules/{id}", self.delete),
            ("POST", "/schedules/{id}/pause", self.pause),
            ("POST", "/schedules/{id}/resume", self.resume),
        ]

    async def create(self, request: Request) -> Response:
        payload = await read_json(request, None, SCHEDULE_BODY)
        spec = parse_schedule_record(payload, now=_now())
        created = await self.db.perform(schedules.create_steps(spec))
        return json_response(201, created.to_json(_now()), Location=f"/schedules/{created.id}")

    async def list_all(self, request: Request) -> Response:
        # The first page is read before the 200 is committed to (a database that is away is
        # still a 503); the rest as the client takes it, no connection held in between.
        first = await self.db.perform(schedules.list_page_steps(0, PAGE))
        return Response(200, self._pages(first))

    async def _pages(self, page: list[schedules.Schedule]) -> AsyncIterator[bytes]:
        separator = b"["
        while page:
            now = _now()
            yield separator + b",".join(json.dumps(s.to_json(now)).encode() for s in page)
            separator = b","
            if len(page) < PAGE:
                break
            page = await self.db.perform(schedules.list_page_steps(page[-1].id, PAGE))
        yield b"[]" if separator == b"[" else b"]"

    async def get(self, request: Request) -> Response:
        count = query_param(request, "next", _next_count)
        schedule = await self.db.perform(schedules.get_steps(_id(request)))
        now = _now()
        upcoming = schedule.upcoming(NEXT_DEFAULT if count is None else count, now)
        return json_response(200, {**schedule.to_json(now), "upcoming": [
            schedules.occurrence_json(when, schedule.zone) for when in upcoming]})

    async def delete(self, request: Request) -> Response:
        deleted = await self.db.perform(schedules.delete_steps(_id(request)))
        return json_response(200, deleted.to_json(_now()))

    async def pause(self, request: Request) -> Response:
        paused = await self.db.perform(schedules.pause_steps(_id(request)))
        return json_response(200, paused.to_json(_now()))

    async def resume(self, request: Request) -> Response:
        resumed = await self.db.perform(schedules.resume_steps(_id(request)))
        return json_response(200, resumed.to_json(_now()))


def _id(request: Request) -> int:
    return parse_schedule_id(request.params["id"])


def _next_count(text: str) -> int:
    if not re.fullmatch(r"[0-9]{1,3}", text) or int(text) > NEXT_MAX:
        raise BadInput(f"{text!r} is not a whole number from 0 to {NEXT_MAX}")
    return int(text)


def _now() -> datetime:
    return datetime.now(timezone.utc)
