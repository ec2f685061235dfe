#!/bin/sh
# The official postgres image's entry point, as far as docker-compose.yml uses it: on an empty
# PGDATA, a cluster whose superuser is POSTGRES_USER with POSTGRES_PASSWORD (scram-sha-256 from any
# host), the database POSTGRES_DB, and /docker-entrypoint-initdb.d/*.sql run in it; then the server
# on every interface. The password goes to initdb in a file, never on a command line or to the log.
set -eu

if [ "${1:-}" = postgres ] && [ ! -s "$PGDATA/PG_VERSION" ]; then
  : "${POSTGRES_PASSWORD:?the postgres image needs POSTGRES_PASSWORD}"
  user="${POSTGRES_USER:-postgres}"
  db="${POSTGRES_DB:-$user}"
  pwfile="$(mktemp)"
  printf '%s\n' "$POSTGRES_PASSWORD" > "$pwfile"
  initdb --username="$user" --pwfile="$pwfile" --auth-local=trust --auth-host=scram-sha-256 \
    --encoding=UTF8 --locale=C.UTF-8 >/dev/null
  rm -f "$pwfile"
  echo 'host all all all scram-sha-256' >> "$PGDATA/pg_hba.conf"
  # Only the local socket while initializing, as the official image does.
  pg_ctl --wait --silent -o "-c listen_addresses=''" start
  if [ "$db" != postgres ]; then
    psql --quiet -v ON_ERROR_STOP=1 --username="$user" --dbname=postgres -c "CREATE DATABASE \"$db\""
  fi
  for script in /docker-entrypoint-initdb.d/*.sql; do
    [ -e "$script" ] || continue
    echo "docker-entrypoint.sh: running $script"
    psql --quiet -v ON_ERROR_STOP=1 --username="$user" --dbname="$db" --file="$script"
  done
  pg_ctl --wait --silent --mode=fast stop
  echo "docker-entrypoint.sh: PostgreSQL init process complete; ready for start up"
fi

if [ "${1:-}" = postgres ]; then
  shift
  exec postgres -c listen_addresses='*' "$@"
fi
exec "$@"
