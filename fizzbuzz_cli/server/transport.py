"""The connections of `fizz serve`: asyncio streams, limits, deadlines and clean closes.

One coroutine per connection reads requests one after the other (keep-alive), hands each to
the app and writes the answer, so an idle or slow client costs a coroutine, not a thread.

- **Limits.** At most `max_connections` connections at once. At the limit, a new client
  takes the place of the connection that has idled longest between requests (closing an
  idle keep-alive connection is always allowed, RFC 9112 9.5); if none idles, it gets a
  503 and a close. Request heads are limited by ``protocol``; bodies by the app.
- **Deadlines**, each a time stamp on the connection, checked by one sweeper task for all
  connections: waiting for the next request (`idle_timeout`), from a request's first byte
  to the end of its head (`head_timeout`), and a body read or a response write that makes
  no progress (`stall_timeout`). Past one, the connection is closed.
- **Closing** is done in stages (RFC 9112, 9.6): the answer, then our end is shut for
  writing, then what the client still sends is read and dropped until it closes (at most
  `LINGER` seconds). Closing at once with unread data in the socket would make the kernel
  send a reset, which can destroy the answer before the client reads it.
- **Streamed bodies** (long lists) are written piece by piece, each piece only once the
  client has taken the previous one; the app fetches a piece only when asked for it.

Everything here runs on the event loop's thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol
from urllib.parse import parse_qs

from fizzbuzz_cli.errors import BadInput, FizzError
from fizzbuzz_cli.server import protocol
from fizzbuzz_cli.server.protocol import (
    JSON,
    HttpError,
    NoAnswer,
    RequestHead,
    bad_request,
)

log = logging.getLogger("fizz.server")

LINGER = 2.0  # seconds a closing connection is drained of what the client still sends
READ_PIECE = 256 * 1024  # bytes of a large body read per step (each step resets the stall)
PEEK = 4096  # bytes read to find out whether a large body is a JSON array

_IDLE, _HEAD, _BODY, _BUSY, _WRITING, _LINGER = range(6)


# ---------------------------------------------------------------------------- messages


class Response:
    """An answer: `body` is bytes (sent with a Content-Length) or an async iterator of
    bytes (sent in chunks as it is produced). `route` names the route for the metrics."""

    __slots__ = ("body", "content_type", "headers", "route", "status")

    def __init__(self, status: int, body: bytes | AsyncIterator[bytes] = b"",
                 content_type: str = JSON, headers: dict[str, str] | None = None,
                 route: str = "unmatched") -> None:
        self.status = status
        self.body = body
        self.content_type = content_type
        self.headers = headers or {}
        self.route = route


def json_response(status: int, payload: Any, **headers: str) -> Response:
    return Response(status, json.dumps(payload).encode(), headers=headers)


def query_param(request: Request, name: str, parse: Callable[[str], Any]) -> Any:
    """A query parameter read by `parse` (None when absent); 400 naming it when it is bad
    or given twice."""
    values = request.query.get(name)
    if not values:
        return None
    if len(values) > 1:
        raise HttpError(400, f"{name} is given {len(values)} times: give it once")
    try:
        return parse(values[0])
    except BadInput as exc:
        raise HttpError(400, f"invalid {name}: {exc}") from None


def error_response(error: FizzError, message: str | None = None) -> Response:
    """{"error": message} with the error's HTTP status (and its headers, if it has some)."""
    return Response(error.http_status, json.dumps({"error": message or str(error)}).encode(),
                    headers=dict(getattr(error, "headers", {})))


class Request:
    """What the app sees of a request: its head, its client, and its body on demand."""

    __slots__ = ("_connection", "_query", "client", "head", "headers", "method", "params",
                 "path")

    def __init__(self, head: RequestHead, connection: Connection) -> None:
        self.head = head
        self.method = head.method
        self.path = head.path
        self.headers = head.headers
        self.client = connection.client
        self.params: dict[str, str] = {}
        self._connection = connection
        self._query: dict[str, list[str]] | None = None

    @property
    def query(self) -> dict[str, list[str]]:
        if self._query is None:
            self._query = (parse_qs(self.head.query, keep_blank_values=True)
                           if self.head.query else {})
        return self._query

    async def body(self, max_array: int | None = None) -> bytes:
        """The body, checked: it has a length (411) within the limit (413), it is all
        there (400), it is declared as JSON (415). A body over `max_body` is taken only if
        it starts as a JSON array and fits `max_array`."""
        return await self._connection.read_body(self.head, max_array)


class App(Protocol):
    async def handle(self, request: Request) -> Response: ...

    def observe(self, client: str, method: str, target: str, route: str, status: int,
                seconds: float) -> None: ...


# ---------------------------------------------------------------------------- a connection


class Connection:
    """One client connection and the requests it sends, one after the other."""

    __slots__ = ("_body", "_server", "client", "deadline", "reader", "started", "state",
                 "transport", "writer")

    def __init__(self, server: HttpServer, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        self._server = server
        self.reader = reader
        self.writer = writer
        self.transport = writer.transport
        peer = writer.get_extra_info("peername")
        self.client = str(peer[0]) if isinstance(peer, tuple) else "-"
        self.state = _IDLE
        self.deadline = math.inf
        self.started = 0.0
        self._body: _Body | None = None

    # -------------------------------------------------------------- the request loop

    async def serve(self) -> None:
        server = self._server
        linger = True
        try:
            while not server.closing:
                self.state = _IDLE
                self.deadline = server.loop.time() + server.settings.idle_timeout
                server.idle[self] = None  # the most recently idle come last
                try:
                    head = await self._read_head()
                except HttpError as exc:
                    await self._answer_error(exc)
                    break
                except NoAnswer:
                    break
                if head is None:
                    linger = False
                    break
                if not await self._exchange(head):
                    break
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            linger = False  # the client went away or was cut off
        finally:
            await self._close(linger)

    async def _read_head(self) -> RequestHead | None:
        """The next request's head, or None once the client closed (or idled too long)."""
        reader, server = self.reader, self._server
        try:
            first = await reader.readexactly(1)
        except asyncio.IncompleteReadError:
            return None
        self.state = _HEAD
        self._server.idle.pop(self, None)
        self.started = time.perf_counter()
        self.deadline = server.loop.time() + server.settings.head_timeout
        empty = 0
        while True:
            try:
                line = first if first == b"\n" else first + await reader.readuntil(b"\n")
            except asyncio.LimitOverrunError:
                raise HttpError(414, f"request line longer than {protocol.MAX_REQUEST_LINE} "
                                "bytes", close=True) from None
            if line == b"\r\n" and empty < protocol.MAX_EMPTY_LINES:
                empty += 1
                first = await reader.readexactly(1)
                continue
            break
        if len(line) > protocol.MAX_REQUEST_LINE + 2:
            raise HttpError(414, f"request line longer than {protocol.MAX_REQUEST_LINE} bytes",
                            close=True)
        if not line.endswith(b"\r\n"):
            raise bad_request("the request line must end with CRLF (a bare LF is not "
                              "accepted)")
        head = protocol.parse_request_line(line[:-2])
        size = count = 0
        while True:
            try:
                line = await reader.readuntil(b"\n")
            except asyncio.LimitOverrunError:
                raise HttpError(431, "header line longer than "
                                f"{protocol.MAX_HEADER_SECTION} bytes", close=True) from None
            if line == b"\r\n":
                break
            count += 1
            size += len(line)
            if count > protocol.MAX_HEADER_LINES:
                raise HttpError(431, f"more than {protocol.MAX_HEADER_LINES} header lines",
                                close=True)
            if size > protocol.MAX_HEADER_SECTION:
                raise HttpError(431, "header section larger than "
                                f"{protocol.MAX_HEADER_SECTION} bytes", close=True)
            if line[-2:-1] != b"\r":
                raise bad_request("header lines must end with CRLF (a bare LF is not "
                                  "accepted)")
            protocol.add_field(head, *protocol.parse_field(line[:-2]))
        protocol.check_framing(head)
        return head

    async def _exchange(self, head: RequestHead) -> bool:
        """Answer one request; True if the connection stays open for the next."""
        server = self._server
        self.state = _BUSY
        self.deadline = math.inf  # the app bounds its own waits (the database's deadlines)
        self._body = _Body(head.content_length)
        try:
            response = await server.app.handle(Request(head, self))
            keep = head.keep_alive and await self._finish_body(head)
            return await self._send(head, response, keep)
        finally:
            self._body.release()
            self._body = None

    # -------------------------------------------------------------- bodies

    async def read_body(self, head: RequestHead, max_array: int | None) -> bytes:
        body = self._body
        assert body is not None, "a body is read while its request is answered"
        if body.data is not None:
            return body.data
        settings = self._server.settings
        length = head.content_length
        if length is None:
            raise HttpError(411, "a Content-Length header is required")
        limit = max(settings.max_body, max_array or 0)
        if length > limit:
            arrays = (f" ({max_array} for a JSON array of tasks)"
                      if max_array and max_array > settings.max_body else "")
            raise HttpError(413, f"the body is {length} bytes; the limit is "
                            f"{settings.max_body}{arrays}")
        if head.expect_continue:
            self.writer.write(protocol.CONTINUE)
        body.broken = True  # until the body is read in full
        try:
            if length <= settings.max_body:
                data = await self._read(length)
            else:
                data = await self._read_large(length, body)
        except asyncio.IncompleteReadError:
            raise HttpError(400, "the body is shorter than its Content-Length",
                            close=True) from None
        finally:
            self.state, self.deadline = _BUSY, math.inf
        body.broken, body.pending, body.data = False, 0, data
        protocol.content_type_is_json(head)
        return data

    async def _read(self, length: int) -> bytes:
        self.state = _BODY
        self.deadline = self._server.loop.time() + self._server.settings.stall_timeout
        return await self.reader.readexactly(length)

    async def _read_large(self, length: int, body: _Body) -> bytes:
        """A body over `max_body`: taken only if it is a JSON array, in steps (each one
        resets the stall deadline), holding one of the few slots for large bodies."""
        settings = self._server.settings
        start = await self._read(min(length, PEEK))
        body.broken, body.pending = False, length - len(start)
        if not start.lstrip(b" \t\r\n").startswith(b"["):
            raise HttpError(413, f"the body is {length} bytes; the limit is {settings.max_body}")
        await body.take_slot(self._server.large_bodies, settings.stall_timeout)
        body.broken = True
        data = bytearray(start)
        while len(data) < length:
            data += await self._read(min(READ_PIECE, length - len(data)))
        return bytes(data)

    async def _finish_body(self, head: RequestHead) -> bool:
        """Read and drop what is left of a body the app did not read, so that the next
        request starts where it should; False when the connection must close instead."""
        body = self._body
        assert body is not None
        if body.broken:
            return False
        if not body.pending:
            return True
        if head.expect_continue or body.pending > self._server.settings.max_body:
            return False  # not worth reading (or never coming): close instead
        try:
            await self._read(body.pending)
        except asyncio.IncompleteReadError:
            return False
        finally:
            self.state, self.deadline = _BUSY, math.inf
        return True

    # -------------------------------------------------------------- answers

    async def _send(self, head: RequestHead, response: Response, keep: bool) -> bool:
        server = self._server
        keep = keep and not server.closing
        body = response.body
        head_only = head.method == "HEAD"
        if isinstance(body, bytes):
            data = protocol.response_head(response.status, response.content_type,
                                          response.headers, len(body), close=not keep,
                                          keep_alive_1_0=head.http10)
            self.writer.write(data if head_only else data + body)
            self._observe(head, response)
            await self._drain()
            return keep
        if head.http10:
            keep = False  # no chunked encoding in HTTP/1.0: the body ends at the close
        self.writer.write(protocol.response_head(response.status, response.content_type,
                                                 response.headers, None, close=not keep))
        try:
            if not head_only:
                await self._stream(body, chunked=not head.http10)
        except ConnectionError:
            keep = False
        except FizzError as exc:
            # The status line is out; cutting the stream short is the only signal left.
            log.warning("list stream cut short: %s", exc)
            self.transport.abort()
            keep = False
        except Exception as exc:
            log.error("internal error while streaming %s: %r", head.target[:200], exc)
            self.transport.abort()
            keep = False
        finally:
            await body.aclose()  # type: ignore[attr-defined]
        self._observe(head, response)
        return keep

    async def _stream(self, pieces: AsyncIterator[bytes], chunked: bool) -> None:
        write = self.writer.write
        async for piece in pieces:
            if piece:
                write(protocol.chunk(piece) if chunked else piece)
                await self._drain()
            if self.transport.is_closing():
                raise ConnectionResetError("the client went away")
        if chunked:
            write(protocol.LAST_CHUNK)
        await self._drain()

    async def _drain(self) -> None:
        if self.transport.get_write_buffer_size():
            previous = self.state
            self.state = _WRITING
            self.deadline = self._server.loop.time() + self._server.settings.stall_timeout
            try:
                await self.writer.drain()
            finally:
                self.state, self.deadline = previous, math.inf

    async def _answer_error(self, error: HttpError) -> None:
        """An error found while reading a head: the answer, then the connection closes."""
        if not self.started:
            self.started = time.perf_counter()
        response = error_response(error)
        self.writer.write(protocol.response_head(response.status, JSON, response.headers,
                                                 len(response.body), close=True)
                          + response.body)  # type: ignore[operator]
        self._server.app.observe(self.client, "-", "-", "unmatched", response.status,
                                 time.perf_counter() - self.started)

    def _observe(self, head: RequestHead, response: Response) -> None:
        self._server.app.observe(self.client, head.method, head.target, response.route,
                                 response.status, time.perf_counter() - self.started)

    # -------------------------------------------------------------- closing

    async def _close(self, linger: bool) -> None:
        """Close in stages: flush the answer, shut our side, drop what still comes in."""
        transport = self.transport
        try:
            if transport.is_closing():
                return
            await self._drain()
            if linger and not self.reader.at_eof() and transport.can_write_eof():
                transport.write_eof()
                self.state = _LINGER
                self.deadline = self._server.loop.time() + LINGER
                while await self.reader.read(65536):
                    pass
        except (ConnectionError, OSError):
            pass
        finally:
            transport.close()
            self._server.forget(self)

    def expire(self) -> None:
        """Past its deadline: cut the connection (the coroutine then finds it closed)."""
        if self.state in (_WRITING, _LINGER):
            self.transport.abort()  # a write that makes no progress would never flush
        else:
            self.transport.close()


class _Body:
    """One request's body: how much of it is still unread on the socket, whether a read
    of it failed half-way, what was read, and the slot for large bodies it may hold."""

    __slots__ = ("broken", "data", "pending", "slot")

    def __init__(self, length: int | None) -> None:
        self.pending = length or 0
        self.broken = False
        self.data: bytes | None = None
        self.slot: asyncio.Semaphore | None = None

    async def take_slot(self, slots: asyncio.Semaphore, timeout: float) -> None:
        try:
            await asyncio.wait_for(slots.acquire(), timeout)
        except asyncio.TimeoutError:
            raise HttpError(503, "too many large bodies at once, try again shortly",
                            {"Retry-After": "1"}) from None
        self.slot = slots

    def release(self) -> None:
        if self.slot is not None:
            self.slot.release()
            self.slot = None


# ---------------------------------------------------------------------------- the server


class TransportSettings(Protocol):
    host: str
    port: int
    max_connections: int
    idle_timeout: float
    head_timeout: float
    stall_timeout: float
    max_body: int


class HttpServer:
    """Listens, admits connections up to the limit, keeps their deadlines, and stops
    gracefully."""

    LARGE_BODIES = 2  # large (bulk) bodies read and processed at once, to bound memory
    MAX_REFUSING = 1000  # refused connections closed in stages at once

    def __init__(self, app: App, settings: TransportSettings,
                 max_connections: int | None = None) -> None:
        self.app = app
        self.settings = settings
        self.max_connections = max_connections or settings.max_connections
        self.loop = asyncio.get_running_loop()
        self.closing = False
        self.connections: set[Connection] = set()
        self.refusing: set[Connection] = set()
        self.idle: dict[Connection, None] = {}  # waiting for a request, longest idle first
        self.large_bodies = asyncio.Semaphore(self.LARGE_BODIES)
        self._server: asyncio.Server | None = None
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self) -> tuple[str, int]:
        """Bind and listen (OSError if the address is taken); the address bound."""
        self._server = await asyncio.start_server(
            self._accept, self.settings.host, self.settings.port,
            limit=protocol.MAX_HEADER_SECTION, backlog=min(self.max_connections, 65535),
            reuse_address=True)
        self._sweeper = self.loop.create_task(self._sweep(), name="fizz-http-deadlines")
        host, port = self._server.sockets[0].getsockname()[:2]
        return host, port

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection = Connection(self, reader, writer)
        if len(self.connections) >= self.max_connections and self.idle:
            self._evict(next(iter(self.idle)))
        if len(self.connections) >= self.max_connections or self.closing:
            await self._refuse(connection)
            return
        self.connections.add(connection)
        try:
            await connection.serve()
        except Exception as exc:  # a bug: one line in the log, never a traceback
            log.error("internal error on a connection from %s: %r", connection.client, exc)
            connection.transport.abort()
            self.forget(connection)

    async def _refuse(self, connection: Connection) -> None:
        """Over the limit: a 503 and a close, in stages so that it is never a reset (but
        for a flood of refusals: their descriptors are counted, see app.SPARE_FILES)."""
        linger = len(self.refusing) < self.MAX_REFUSING
        self.refusing.add(connection)
        busy = HttpError(503, "too many connections, try again shortly", {"Retry-After": "1"})
        connection.started = time.perf_counter()
        await connection._answer_error(busy)
        await connection._close(linger=linger)

    def _evict(self, connection: Connection) -> None:
        """Make room: close the connection that idled longest (it sent nothing of a next
        request, so nothing is lost; its client reconnects when it needs to)."""
        self.forget(connection)
        connection.transport.close()

    def forget(self, connection: Connection) -> None:
        self.connections.discard(connection)
        self.refusing.discard(connection)
        self.idle.pop(connection, None)

    async def _sweep(self) -> None:
        """Cut the connections past their deadline (checked a few times a second)."""
        settings = self.settings
        tick = min(0.5, settings.idle_timeout / 4, settings.head_timeout / 4,
                   settings.stall_timeout / 4)
        while True:
            await asyncio.sleep(tick)
            now = self.loop.time()
            for group in (self.connections, self.refusing):
                for connection in [c for c in group if c.deadline < now]:
                    connection.expire()

    async def close(self, grace: float) -> None:
        """Stop listening; close idle connections; let requests in flight finish (for at
        most `grace` seconds, then cut them)."""
        self.closing = True
        if self._server is not None:
            self._server.close()
        deadline = self.loop.time() + grace
        while (self.connections or self.refusing) and self.loop.time() < deadline:
            for connection in list(self.connections):
                if connection.state == _IDLE:
                    connection.transport.close()
            await asyncio.sleep(0.02)
        for connection in list(self.connections | self.refusing):
            connection.transport.abort()
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        if self._server is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
