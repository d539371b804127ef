"""The OpenAPI 3 description of `fizz serve`, served at /openapi.json.

Kept beside the server and checked against it by the test suite (schemathesis), so that it
stays truthful: every route, parameter, body, status and response shape the server uses.
"""

from __future__ import annotations

from typing import Any

from fizzbuzz_cli import __version__
from fizzbuzz_cli.tasks import MAX_TASK_ID

_ANY_CASE = {
    "filters.type": "^([Ff][Ii][Zz][Zz]|[Bb][Uu][Zz][Zz]|[Ff][Ii][Zz][Zz][Bb][Uu][Zz][Zz])$",
    "filters.status": "^([Ww][Aa][Ii][Tt][Ii][Nn][Gg]|[Cc][Ll][Aa][Ii][Mm][Ee][Dd]"
                      "|[Cc][Oo][Mm][Pp][Ll][Ee][Tt][Ee])$",
}
_TIME = {"type": "string", "format": "date-time", "pattern": "^(?!0000)[0-9]{4}-",
         "example": "2023-03-28T11:59:59Z"}
_NULLABLE_TIME = {"type": "string", "format": "date-time", "nullable": True}
_TYPE = {"type": "string", "enum": ["Fizz", "Buzz", "FizzBuzz"]}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str) -> dict[str, Any]:
    return _json(_ref("Error"), description)


_TASK_ID = {
    "name": "id", "in": "path", "required": True,
    "schema": {"type": "integer", "minimum": 1, "maximum": MAX_TASK_ID},
    "description": "The task id (a positive 32-bit integer).",
}
_UNAVAILABLE = _error("The database is unreachable; try again shortly.")


def _operation(summary: str, responses: dict[str, Any], *, auth: bool,
               **extra: Any) -> dict[str, Any]:
    responses = {**responses, "503": _UNAVAILABLE}
    if auth:
        responses["401"] = _error("Missing or wrong bearer token.")
    return {"summary": summary, "responses": responses, **extra}


def spec(token: bool = False, max_body: int = 65536,
         max_array_body: int = 8 * 1024 * 1024) -> dict[str, Any]:
    """The document; `token` says whether this server requires a bearer token."""
    auth = token
    task_by_id = {
        "get": _operation("Get one task", {
            "200": _json(_ref("Task"), "The task."),
            "400": _error("The id is not a positive 32-bit integer."),
            "404": _error("No task has this id."),
        }, auth=auth, operationId="getTask"),
        "delete": _operation("Delete one task", {
            "200": _json(_ref("Task"), "The deleted task."),
            "400": _error("The id is not a positive 32-bit integer."),
            "404": _error("No task has this id."),
        }, auth=auth, operationId="deleteTask"),
        "post": _operation("Mark a claimed task complete (worker route)", {
            "200": _json(_ref("Task"), "The task, now Complete."),
            "400": _error("The id is not a positive 32-bit integer."),
            "404": _error("No claimed task has this id."),
        }, auth=auth, operationId="completeTask"),
        "parameters": [_TASK_ID],
    }
    document: dict[str, Any] = {
        "openapi": "3.0.3",
        "info": {
            "title": "fizz",
            "version": __version__,
            "description": "Schedule Fizz, Buzz and FizzBuzz tasks. Compatible with the "
                           "original FizzBuzz task scheduler's API.",
        },
        "paths": {
            "/tasks": {
                "post": _operation("Schedule a task, or many (a JSON array: all or none)", {
                    "201": {
                        **_json({"oneOf": [
                            {"type": "object", "required": ["id"], "properties": {
                                "id": {"type": "integer", "minimum": 1}}},
                            {"type": "object", "required": ["ids"], "properties": {
                                "ids": {"type": "array", "items": {
                                    "type": "integer", "minimum": 1}}}},
                        ]}, "The new task's id; for an array, the new ids in its order."),
                        "headers": {"Location": {"schema": {"type": "string"},
                                                 "description": "/tasks/<id> (one task)"}},
                    },
                    "400": _error("Bad JSON, unknown type, bad or missing time."),
                    "411": _error("No Content-Length (chunked bodies are not accepted)."),
                    "413": _error(f"The body is larger than {max_body} bytes "
                                  f"({max_array_body} for an array)."),
                    "415": _error("The body is not JSON."),
                }, auth=auth, operationId="createTask", requestBody={
                    "required": True,
                    "content": {"application/json": {"schema": {"oneOf": [
                        _ref("NewTask"),
                        {"type": "array", "items": _ref("NewTask")},
                    ]}}},
                }),
                "get": _operation("List tasks, in id order", {
                    "200": _json({"type": "array", "items": _ref("Task")}, "The tasks."),
                    "400": _error("A filter or the limit is not valid."),
                }, auth=auth, operationId="listTasks", parameters=[
                    {"name": "filters.type", "in": "query", "required": False,
                     "description": "fizz, buzz or fizzbuzz, any case.",
                     "schema": {"type": "string", "pattern": _ANY_CASE["filters.type"]}},
                    {"name": "filters.status", "in": "query", "required": False,
                     "description": "waiting, claimed or complete, any case.",
                     "schema": {"type": "string", "pattern": _ANY_CASE["filters.status"]}},
                    {"name": "limit", "in": "query", "required": False,
                     "description": "At most this many tasks.",
                     "schema": {"type": "integer", "minimum": 0, "maximum": MAX_TASK_ID}},
                    {"name": "order", "in": "query", "required": False,
                     "description": "asc: in id order (the default, streamed); desc: newest "
                                    "first, at most 1000 (default 100), as the dashboard "
                                    "shows them.",
                     "schema": {"type": "string", "enum": ["asc", "desc"]}},
                ]),
            },
            "/tasks/next": {
                "get": _operation("The next waiting task (worker route)", {
                    "200": _json({"type": "object", "required": ["id", "time"], "properties": {
                        "id": {"type": "integer", "minimum": 1},
                        "time": {"type": "string", "format": "date-time"}}},
                        "Id and time of the earliest waiting task."),
                    "404": _error("No task is waiting."),
                }, auth=auth, operationId="nextTask"),
            },
            "/tasks/pull/{id}": {
                "post": _operation("Claim a waiting task (worker route)", {
                    "200": _json(_ref("Task"), "The task, now Claimed (with a lease)."),
                    "400": _error("The id is not a positive 32-bit integer."),
                    "404": _error("No waiting task has this id."),
                }, auth=auth, operationId="pullTask"),
                "parameters": [_TASK_ID],
            },
            "/tasks/{id}": task_by_id,
            "/healthz": {
                "get": {
                    "summary": "Is the server up and the database reachable?",
                    "operationId": "health",
                    "security": [],
                    "responses": {
                        "200": _json(_ref("Health"), "Up, database reachable."),
                        "503": _json(_ref("Health"), "Up, database unreachable."),
                    },
                },
            },
            "/metrics": {
                "get": _operation("Prometheus metrics", {
                    "200": {"description": "Text exposition format 0.0.4.",
                            "content": {"text/plain": {"schema": {"type": "string"}}}},
                }, auth=auth, operationId="metrics"),
            },
            "/stats": {
                "get": _operation("How fizz is doing: counts, queue, workers, lateness, "
                                  "throughput (the object of fizz stats --json)", {
                    "200": _json(_ref("Stats"), "One snapshot."),
                    "400": _error("The window is not a whole number of seconds from 1 to "
                                  "86400."),
                }, auth=auth, operationId="stats", parameters=[
                    {"name": "window", "in": "query", "required": False,
                     "description": "Lateness over tasks started in this many last seconds "
                                    "(1 to 86400; default 900).",
                     "schema": {"type": "integer", "minimum": 1, "maximum": 86400}},
                ]),
            },
            "/workers": {
                "get": _operation("The live workers (fizz workers --json)", {
                    "200": _json({"type": "array", "items": _ref("Worker")}, "The workers."),
                    "400": _error("all is not true or false."),
                }, auth=auth, operationId="workers", parameters=[
                    {"name": "all", "in": "query", "required": False,
                     "description": "Also workers not seen within their lease.",
                     "schema": {"type": "string", "enum": ["true", "false"]}},
                ]),
            },
            "/": {
                "get": {
                    "summary": "The dashboard page (HTML; its files need no token, the "
                               "routes it calls do)",
                    "operationId": "dashboard",
                    "security": [],
                    "responses": {"200": {"description": "The page.", "content": {
                        "text/html": {"schema": {"type": "string"}}}}},
                },
            },
            "/openapi.json": {
                "get": _operation("This document", {
                    "200": _json({"type": "object"}, "The OpenAPI document."),
                }, auth=auth, operationId="openapi"),
            },
        },
        "components": {
            "schemas": {
                "NewTask": {
                    "type": "object",
                    "required": ["type", "time"],
                    "properties": {"type": _TYPE, "time": _TIME},
                },
                "Task": {
                    "type": "object",
                    "required": ["id", "type", "typ", "status", "time"],
                    "properties": {
                        "id": {"type": "integer", "minimum": 1, "maximum": MAX_TASK_ID},
                        "type": _TYPE,
                        "typ": {**_TYPE, "description": "The original server's name for type."},
                        "status": {"type": "string",
                                   "enum": ["Waiting", "Claimed", "Complete"]},
                        "time": {"type": "string", "format": "date-time"},
                        "created_at": _NULLABLE_TIME,
                        "claimed_at": _NULLABLE_TIME,
                        "completed_at": _NULLABLE_TIME,
                        "worker": {"type": "string", "nullable": True},
                        "attempts": {"type": "integer", "minimum": 0},
                        "schedule_id": {"type": "integer", "minimum": 1, "nullable": True,
                                        "description": "The schedule it came from, if any."},
                        "occurrence": {**_NULLABLE_TIME,
                                       "description": "The schedule's occurrence it runs."},
                    },
                },
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {"error": {"type": "string"}},
                },
                "Stats": {
                    "type": "object",
                    "required": ["at", "tasks", "overdue", "next_due", "workers",
                                 "lateness_ms", "throughput"],
                    "properties": {
                        "at": {"type": "string", "format": "date-time"},
                        "tasks": {"type": "object"},
                        "overdue": {"type": "integer", "minimum": 0},
                        "next_due": _NULLABLE_TIME,
                        "workers": {"type": "integer", "minimum": 0},
                        "lateness_ms": {"type": "object"},
                        "lateness_histogram": {"type": "object"},
                        "window_s": {"type": "number"},
                        "throughput": {"type": "object"},
                    },
                },
                "Worker": {
                    "type": "object",
                    "required": ["id", "host", "pid", "alive"],
                    "properties": {
                        "id": {"type": "string"}, "host": {"type": "string"},
                        "pid": {"type": "integer"}, "version": {"type": "string"},
                        "started_at": {"type": "string", "format": "date-time"},
                        "last_seen": {"type": "string", "format": "date-time"},
                        "lease_s": {"type": "number"}, "concurrency": {"type": "integer"},
                        "in_flight": {"type": "integer"}, "ran": {"type": "integer"},
                        "alive": {"type": "boolean"},
                    },
                },
                "Health": {
                    "type": "object",
                    "required": ["status", "database"],
                    "properties": {"status": {"type": "string"},
                                   "database": {"type": "string"}},
                },
            },
        },
    }
    document["paths"].update(_schedule_paths(auth, max_body))
    document["components"]["schemas"].update(_SCHEDULE_SCHEMAS)
    if auth:
        document["components"]["securitySchemes"] = {
            "bearerAuth": {"type": "http", "scheme": "bearer"}}
        document["security"] = [{"bearerAuth": []}]
    return document


# ---------------------------------------------------------------------------- schedules

_SCHEDULE_ID = {
    "name": "id", "in": "path", "required": True,
    "schema": {"type": "integer", "minimum": 1, "maximum": MAX_TASK_ID},
    "description": "The schedule id (a positive 32-bit integer).",
}
_TYPE_ANY_CASE = {"type": "string", "pattern": _ANY_CASE["filters.type"],
                  "description": "Fizz, Buzz or FizzBuzz, any case.", "example": "Fizz"}
_TEXT = {"type": "string", "nullable": True}
_WHEN = {**_TEXT, "description": "RFC 3339 (no offset means UTC), 'now', or relative "
                                 "such as +1h.", "example": "2030-01-01T00:00:00Z"}


def _schedule_paths(auth: bool, max_body: int) -> dict[str, Any]:
    found = {"400": _error("The id is not a positive 32-bit integer."),
             "404": _error("No schedule has this id (or it was deleted).")}
    return {
        "/schedules": {
            "post": _operation("Add a schedule (recurring tasks)", {
                "201": {**_json(_ref("Schedule"), "The new schedule."),
                        "headers": {"Location": {"schema": {"type": "string"},
                                                 "description": "/schedules/<id>"}}},
                "400": _error("Bad JSON; a bad type, rule, time zone, time or policy; an "
                              "end before the start, or one that has passed."),
                "411": _error("No Content-Length (chunked bodies are not accepted)."),
                "413": _error(f"The body is larger than {max_body} bytes."),
                "415": _error("The body is not JSON."),
            }, auth=auth, operationId="createSchedule", requestBody={
                "required": True,
                "content": {"application/json": {"schema": _ref("NewSchedule")}},
            }),
            "get": _operation("List the schedules (deleted ones aside), in id order", {
                "200": _json({"type": "array", "items": _ref("Schedule")}, "The schedules."),
            }, auth=auth, operationId="listSchedules"),
        },
        "/schedules/{id}": {
            "get": _operation("Get one schedule and its next occurrences", {
                "200": _json(_ref("Schedule"), "The schedule, with `upcoming`."),
                "400": _error("The id, or next, is not valid."),
                "404": found["404"],
            }, auth=auth, operationId="getSchedule", parameters=[
                {"name": "next", "in": "query", "required": False,
                 "description": "How many of the next occurrences to give (default 5).",
                 "schema": {"type": "integer", "minimum": 0, "maximum": 100}},
            ]),
            "delete": _operation("Delete a schedule (its history stays)", {
                "200": _json(_ref("Schedule"), "The schedule, now deleted."), **found,
            }, auth=auth, operationId="deleteSchedule"),
            "parameters": [_SCHEDULE_ID],
        },
        "/schedules/{id}/pause": {
            "post": _operation("Pause a schedule", {
                "200": _json(_ref("Schedule"), "The schedule, now paused."), **found,
            }, auth=auth, operationId="pauseSchedule"),
            "parameters": [_SCHEDULE_ID],
        },
        "/schedules/{id}/resume": {
            "post": _operation("Resume a paused schedule from now", {
                "200": _json(_ref("Schedule"), "The schedule, active again."), **found,
            }, auth=auth, operationId="resumeSchedule"),
            "parameters": [_SCHEDULE_ID],
        },
    }


_SCHEDULE_SCHEMAS: dict[str, Any] = {
    "NewSchedule": {
        "type": "object",
        "required": ["type"],
        "additionalProperties": False,
        "properties": {
            "type": _TYPE_ANY_CASE,
            "every": {**_TEXT, "description": "Real time from start: 90s, 5m, 1h30m, 1d, 2w "
                                              "(1s to 3650d).", "example": "5m"},
            "cron": {**_TEXT, "description": "5 fields, or @hourly, @daily, @weekly, "
                                             "@monthly, @yearly; read on the tz wall clock.",
                     "example": "30 2 * * *"},
            "tz": {**_TEXT, "description": "IANA time zone (default UTC).",
                   "example": "Europe/Paris"},
            "start": {**_WHEN, "description": "No occurrence before (default now); anchors "
                                              "every. " + _WHEN["description"]},
            "end": {**_WHEN, "description": "No occurrence after. " + _WHEN["description"]},
            "catch_up": {**_TEXT, "pattern": "^([Ll][Aa][Tt][Ee][Ss][Tt]|[Aa][Ll][Ll]"
                                             "|[Nn][Oo][Nn][Ee])$",
                         "description": "latest (default), all or none."},
            "max_catch_up": {"type": "integer", "minimum": 1, "maximum": 10000,
                             "nullable": True, "description": "With catch_up all (default "
                                                              "100)."},
        },
        # Exactly one rule: every or cron (the other absent or null).
        "oneOf": [
            {"required": ["every"], "properties": {"every": {"type": "string"}}},
            {"required": ["cron"], "properties": {"cron": {"type": "string"}}},
        ],
    },
    "Schedule": {
        "type": "object",
        "required": ["id", "type", "every", "cron", "tz", "start", "end", "catch_up",
                     "max_catch_up", "state", "created_at", "next"],
        "properties": {
            "id": {"type": "integer", "minimum": 1, "maximum": MAX_TASK_ID},
            "type": _TYPE,
            "every": {"type": "string", "nullable": True},
            "cron": {"type": "string", "nullable": True},
            "tz": {"type": "string"},
            "start": {"type": "string", "format": "date-time"},
            "end": _NULLABLE_TIME,
            "catch_up": {"type": "string", "enum": ["latest", "all", "none"]},
            "max_catch_up": {"type": "integer", "minimum": 1, "maximum": 10000},
            "state": {"type": "string", "enum": ["active", "paused", "finished", "deleted"]},
            "created_at": {"type": "string", "format": "date-time"},
            "next": {**_NULLABLE_TIME, "description": "The next occurrence (active only)."},
            "upcoming": {
                "type": "array",
                "description": "The next occurrences (GET /schedules/{id} only).",
                "items": {"type": "object", "required": ["time", "local"], "properties": {
                    "time": {"type": "string", "format": "date-time"},
                    "local": {"type": "string", "format": "date-time",
                              "description": "On the zone's wall clock, with its offset."},
                }},
            },
        },
    },
}
