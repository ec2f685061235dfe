#!/usr/bin/env bash
# Start ml_assets as a service (docker-compose.yml): PostgreSQL, the MLflow tracking server, the
# Dagster code server, webserver and daemon. Then open the Dagster UI on http://127.0.0.1:3000.
#
#   ./scripts/start.sh            # foreground; Ctrl-C stops the containers (state stays in volumes)
#   ./scripts/start.sh -d         # extra arguments go to `docker compose up`
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "start.sh: $*" >&2; exit 1; }

command -v docker >/dev/null 2>&1 || die "Docker is not installed (https://docs.docker.com/get-docker/)"
docker info >/dev/null 2>&1 || die "the Docker engine is not running, or this user may not use it (docker info failed)"
if docker compose version >/dev/null 2>&1; then
  compose=(docker compose)
elif command -v docker-compose >/dev/null 2>&1; then
  compose=(docker-compose)
else
  die "Docker Compose is not installed (the 'docker compose' plugin or 'docker-compose')"
fi

random() { od -An -N16 -tx1 /dev/urandom | tr -d ' \n'; }
umask 077  # .env and its rewrites: this user's only
if [ ! -f .env ]; then
  [ -f .env.example ] || die ".env.example is missing"
  # A random password for this machine's PostgreSQL; it never leaves .env.
  password="$(random)"
  awk -v password="$password" '/^POSTGRES_PASSWORD=$/ { print "POSTGRES_PASSWORD=" password; next } { print }' \
    .env.example > .env
  echo "start.sh: created .env from .env.example, with a generated POSTGRES_PASSWORD"
fi
grep -Eq '^POSTGRES_PASSWORD=.+' .env || die "POSTGRES_PASSWORD is empty in .env"
# MLflow's logins, generated like the PostgreSQL password, also into a .env made before they existed.
for secret in MLFLOW_AUTH_ADMIN_PASSWORD MLFLOW_TRACKING_PASSWORD MLFLOW_FLASK_SERVER_SECRET_KEY; do
  if ! grep -Eq "^${secret}=.+" .env; then
    value="$(random)"
    awk -v name="$secret" -v value="$value" \
      '$0 == name "=" { print name "=" value; done = 1; next } { print } END { if (!done) print name "=" value }' \
      .env > .env.new && mv .env.new .env
    echo "start.sh: generated ${secret} in .env"
  fi
done

# Compose prefers a variable of the environment to the one in .env: so does this message.
ui_port="${DAGSTER_UI_PORT:-$(sed -n 's/^DAGSTER_UI_PORT=//p' .env | tail -n 1)}"
mlflow_port="${MLFLOW_UI_PORT:-$(sed -n 's/^MLFLOW_UI_PORT=//p' .env | tail -n 1)}"
echo "start.sh: Dagster UI http://127.0.0.1:${ui_port:-3000}   MLflow http://127.0.0.1:${mlflow_port:-5000}"
exec "${compose[@]}" up --build "$@"
