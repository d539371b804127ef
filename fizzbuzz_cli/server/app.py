"""Running `fizz serve`: start-up, signals and a graceful stop.

Start-up: raise the open-file limit to what --max-connections needs, open the pool, listen
(an address in use is a run-time failure: exit 1), start the side jobs (the reaper, the
materialiser, and with --retain the purger), log the address.
SIGINT or SIGTERM: stop listening, close idle connections, let requests in flight finish
(10 s at most), stop the side jobs, cut what the database still owes, close the pool, exit 0.

Threads: the event loop's (everything but the side jobs), and one per side job, each with a
connection of its own: the reaper, the materialiser (fizzbuzz_cli.materialiser: it keeps each
active schedule's next occurrence in the tasks table, as every `fizz work` does), the purger.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
import signal
from collections.abc import Callable

from fizzbuzz_cli.config import ServerSettings
from fizzbuzz_cli.errors import FizzError
from fizzbuzz_cli.materialiser import Materialiser
from fizzbuzz_cli.purge import Purger
from fizzbuzz_cli.server.database import Database
from fizzbuzz_cli.server.logs import Batches, log_loop_error
from fizzbuzz_cli.server.reaper import Reaper
from fizzbuzz_cli.server.routes import Api
from fizzbuzz_cli.server.schedule_routes import ScheduleRoutes
from fizzbuzz_cli.server.transport import HttpServer

log = logging.getLogger("fizz.server")

GRACE = 10.0  # seconds requests in flight get to finish on a stop
SPARE_FILES = HttpServer.MAX_REFUSING + 100  # descriptors beyond the connections:
#                                             refusals, the pool, the probe, logs


def serve(url: str, settings: ServerSettings,
          ready: Callable[[str], None] | None = None) -> int:
    """Serve until SIGINT/SIGTERM; returns the exit status (0). Failures to start raise
    FizzError (DatabaseUnavailable, or a FizzError naming the address that is taken)."""
    with Batches() as logs:
        return asyncio.run(_serve(url, settings, ready, logs))


async def _serve(url: str, settings: ServerSettings,
                 ready: Callable[[str], None] | None, logs: Batches) -> int:
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(log_loop_error)
    writer = loop.create_task(logs.keep_writing(), name="fizz-log-writer")
    connections = _allow_open_files(settings.max_connections, settings.pool_size)
    database = Database(url, pool_size=settings.pool_size, timeout=settings.db_timeout,
                        health_timeout=settings.health_timeout)
    await database.open()
    try:
        api = Api(database, settings, ScheduleRoutes(database).routes())
        server = HttpServer(api, settings, max_connections=connections)
        try:
            host, port = await server.start()
        except OSError as exc:  # asyncio words it its own way; the system's words are clearer
            reason = os.strerror(exc.errno) if exc.errno else str(exc)
            raise FizzError(f"cannot listen on {settings.host}:{settings.port}: "
                            f"{reason}") from None
        reaper = Reaper(url, settings.reap_interval)
        reaper.start()
        materialiser = Materialiser(url, application="fizz serve")
        materialiser.start()
        purger = Purger(url, settings.retain) if settings.retain else None
        if purger is not None:
            purger.start()
        stop = asyncio.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        address = f"http://{host}:{port}"
        log.info("serving the fizz API on %s%s", address,
                 " (bearer token required)" if settings.token else "")
        logs.drain()
        if ready:
            ready(address)
        try:
            await stop.wait()
            log.info("stopping: finishing requests in flight")
            await server.close(GRACE)
        finally:
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signum)
            reaper.stop()
            materialiser.stop(timeout=1.0)  # a daemon: a frozen database cannot hold the exit
            if purger is not None:
                purger.stop(timeout=2.0)
    finally:
        await database.close()
        writer.cancel()
    log.info("stopped")
    return 0


def _allow_open_files(max_connections: int, pool_size: int) -> int:
    """Raise the soft limit on open files (to the hard one, or beyond as root) so that
    `max_connections` fit; the number of connections that do fit."""
    wanted = max_connections + pool_size + SPARE_FILES
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        for limits in ((wanted, max(hard, wanted)), (min(wanted, hard), hard)):
            with contextlib.suppress(ValueError, OSError):
                resource.setrlimit(resource.RLIMIT_NOFILE, limits)
                break
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    fits = max(16, soft - pool_size - SPARE_FILES)
    if fits < max_connections:
        log.warning("the open-file limit (%s) allows %s connections at once, not %s "
                    "(raise it with ulimit -n)", soft, fits, max_connections)
        return fits
    return max_connections
