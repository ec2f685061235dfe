#!/bin/sh
# edoburu/pgbouncer's entry point, as far as docker-compose.yml uses it: pgbouncer.ini written from
# DB_HOST, DB_PORT, AUTH_FILE, AUTH_TYPE, POOL_MODE, LISTEN_PORT, MAX_CLIENT_CONN, DEFAULT_POOL_SIZE,
# LOG_CONNECTIONS and LOG_DISCONNECTIONS, and SERVER_CHECK_DELAY and SERVER_LOGIN_RETRY where set (how
# soon PgBouncer uses PostgreSQL again after a restart); where DB_USER and DB_PASSWORD are set, the user
# list too (mode 0600; the password never goes to the log).
set -eu
umask 077
auth_file="${AUTH_FILE:-/etc/pgbouncer/userlist.txt}"
if [ -n "${DB_USER:-}" ] && [ -n "${DB_PASSWORD:-}" ]; then
  printf '"%s" "%s"\n' "$DB_USER" "$DB_PASSWORD" > "$auth_file"
fi
cat > /etc/pgbouncer/pgbouncer.ini <<INI
[databases]
* = host=${DB_HOST:?} port=${DB_PORT:-5432}

[pgbouncer]
listen_addr = 0.0.0.0
listen_port = ${LISTEN_PORT:-5432}
unix_socket_dir =
auth_type = ${AUTH_TYPE:-md5}
auth_file = ${auth_file}
pool_mode = ${POOL_MODE:-session}
max_client_conn = ${MAX_CLIENT_CONN:-100}
default_pool_size = ${DEFAULT_POOL_SIZE:-20}
log_connections = ${LOG_CONNECTIONS:-1}
log_disconnections = ${LOG_DISCONNECTIONS:-1}
ignore_startup_parameters = extra_float_digits
${SERVER_CHECK_DELAY:+server_check_delay = ${SERVER_CHECK_DELAY}}
${SERVER_LOGIN_RETRY:+server_login_retry = ${SERVER_LOGIN_RETRY}}
INI
exec "$@"
