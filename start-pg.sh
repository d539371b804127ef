#!/usr/bin/env bash
# Start a PostgreSQL for fizz and print the line that points fizz at it:
#
#     eval "$(./start-pg.sh)"
#
# With a Docker engine that answers, this runs the original project's postgres:15
# container (port 5432, database fizzbuzz-task-db); otherwise it starts fizz's embedded
# server. Either way the schema is created, and only the export line goes to stdout.
set -euo pipefail

if command -v fizz >/dev/null 2>&1; then
    fizz=(fizz)
else
    fizz=(python3 -m fizzbuzz_cli)
fi

if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
    if ! docker ps --format '{{.Names}}' | grep -qx fizzbuzz-task-db; then
        echo "starting the postgres:15 container fizzbuzz-task-db" >&2
        docker run -d --rm --name fizzbuzz-task-db \
            -e POSTGRES_HOST_AUTH_METHOD=trust \
            -e POSTGRES_DB=fizzbuzz-task-db \
            -p 5432:5432 postgres:15 >/dev/null
    fi
    url="postgresql://postgres@localhost:5432/fizzbuzz-task-db"
    for _ in $(seq 1 120); do
        if docker exec fizzbuzz-task-db psql -U postgres -d fizzbuzz-task-db -qAtc 'SELECT 1' \
            >/dev/null 2>&1; then
            break
        fi
        sleep 0.5
    done
else
    echo "no Docker engine answers: using fizz's embedded PostgreSQL" >&2
    url=$("${fizz[@]}" db url)
fi

"${fizz[@]}" --quiet init-db --database-url "$url" >&2
printf "export FIZZ_DATABASE_URL='%s'\n" "$url"
