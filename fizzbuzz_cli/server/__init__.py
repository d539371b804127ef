"""`fizz serve`: the original project's HTTP API on asyncio streams, with no web framework.

    protocol   HTTP/1.1 messages, strictly (RFC 9112): request heads in, response heads out
    transport  connections: limits, deadlines, bodies, streamed answers, closing in stages
    routes     the API: routing, the token, one small function per route
    schedule_routes  the routes of recurring tasks (/schedules), added to the API by app
    database   PostgreSQL through psycopg's async pool, every wait bounded; the health probe
    metrics    Prometheus counters and histograms
    reaper     hands back expired claims (the shared reaper, on a thread of its own)
    app        start-up, signals and a graceful stop

Threads: everything runs on one event loop's thread, but reaping and materialising the
schedules' occurrences, which each have their own thread and database connection. Modules
below `app` never import each other upwards: protocol <- transport <- routes <-
schedule_routes <- app, and database is used by the routes and app only.
"""

from fizzbuzz_cli.server.app import serve

__all__ = ["serve"]
