#!/usr/bin/env bash
# A throwaway PostgreSQL server on loopback, for the distributed-search tests (CI and local runs).
#
#   url=$(.ci/postgres.sh start DIR)   # initdb in DIR, start on 127.0.0.1 at a free port, print the URL
#   .ci/postgres.sh stop DIR           # stop the server and delete DIR
#
# Installs Debian's `postgresql` package when no server binaries are found. PostgreSQL refuses to
# run as root, so as root the server runs as the `postgres` user (DIR is handed to it).
# The URL names the database `sparsetune` (created empty); the superuser is `postgres`, trust auth.
set -euo pipefail

say() { echo "postgres: $*" >&2; }

bindir() {
  local d
  if command -v pg_ctl >/dev/null 2>&1 && command -v initdb >/dev/null 2>&1; then
    dirname "$(readlink -f "$(command -v pg_ctl)")"
    return 0
  fi
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  [ -n "$d" ] && [ -x "$d/pg_ctl" ] && { echo "$d"; return 0; }
  return 1
}

ensure_installed() {
  bindir >/dev/null && return 0
  say "no PostgreSQL server found: installing Debian's postgresql package"
  [ "$(id -u)" -eq 0 ] || { say "need root to install it (apt-get install postgresql)"; exit 1; }
  DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
  bindir >/dev/null || { say "installed, but no pg_ctl under /usr/lib/postgresql/*/bin"; exit 1; }
}

# Run a server binary as the unprivileged owner of the data directory.
as_owner() {
  if [ "$(id -u)" -eq 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

start() {
  local dir=$1 bin port
  ensure_installed
  bin=$(bindir)
  mkdir -p "$dir"
  [ "$(id -u)" -eq 0 ] && chown postgres: "$dir"
  as_owner "$bin/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 --no-sync >/dev/null
  port=$(free_port)
  # Loopback only; the Unix socket goes into DIR too (not /var/run/postgresql).
  as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
    -o "-h 127.0.0.1 -p $port -k $dir -c fsync=off -c max_connections=200" start >/dev/null
  echo "$port" > "$dir/port"
  as_owner "$bin/createdb" -h 127.0.0.1 -p "$port" -U postgres sparsetune
  say "running on 127.0.0.1:$port (data in $dir/data, log $dir/server.log)"
  echo "postgresql://postgres@127.0.0.1:$port/sparsetune"
}

stop() {
  local dir=$1 bin
  if [ -f "$dir/data/postmaster.pid" ] && bin=$(bindir); then
    as_owner "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null || say "pg_ctl stop failed"
  fi
  rm -rf "$dir"
}

case "${1:-}" in
  start) start "${2:?usage: postgres.sh start DIR}" ;;
  stop) stop "${2:?usage: postgres.sh stop DIR}" ;;
  *) echo "usage: $0 start DIR | stop DIR" >&2; exit 2 ;;
esac
