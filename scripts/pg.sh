#!/usr/bin/env bash
# A private PostgreSQL on loopback for trying the server (or a cluster of servers) out:
#   bash scripts/pg.sh start DIR    creates DIR (if new), starts PostgreSQL on a free port and prints its URL
#   bash scripts/pg.sh stop DIR     stops it (fast shutdown)
# The server then takes `--database-url URL`. As root, PostgreSQL runs as the `postgres` user (it refuses root).
# Install it first with `bash scripts/setup.sh --cluster`.
set -euo pipefail

usage() { echo "usage: pg.sh start|stop DIR" >&2; exit 2; }
[ $# -eq 2 ] || usage
cmd=$1
dir=$(mkdir -p "$2" && cd "$2" && pwd)

bin=${PRESENCE_PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)}
if [ -z "$bin" ] || [ ! -x "$bin/postgres" ]; then
  echo "pg.sh: PostgreSQL is not installed: run bash scripts/setup.sh --cluster (or set PRESENCE_PG_BIN)" >&2
  exit 1
fi
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

case "$cmd" in
  start)
    [ "$(id -u)" = 0 ] && chown postgres:postgres "$dir"
    if [ ! -f "$dir/pg/PG_VERSION" ]; then
      as_pg "$bin/initdb" -D "$dir/pg" -U presence --auth=trust -E UTF8 --no-sync >"$dir/initdb.log"
    fi
    port=$(node -e 'const s = require("net").createServer().listen(0, "127.0.0.1", () => { console.log(s.address().port); s.close(); })')
    as_pg "$bin/pg_ctl" -D "$dir/pg" -l "$dir/postgres.log" -w -s \
      -o "-p $port -k $dir -c listen_addresses=127.0.0.1" start
    "$bin/psql" -h 127.0.0.1 -p "$port" -U presence -d postgres -tAc \
      "SELECT 1 FROM pg_database WHERE datname = 'presence'" | grep -q 1 \
      || "$bin/createdb" -h 127.0.0.1 -p "$port" -U presence presence
    echo "postgres://presence@127.0.0.1:$port/presence"
    ;;
  stop)
    as_pg "$bin/pg_ctl" -D "$dir/pg" -m fast -w -s stop
    ;;
  *) usage ;;
esac
