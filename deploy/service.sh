#!/bin/sh
# The one entry point of the image (Dockerfile ENTRYPOINT) for every long-running process of the
# production topology; the topology test (ml_assets_tests/test_deployment.py) starts the same
# commands without containers.
#
#   service.sh code-server | webserver | daemon | mlflow | worker
#   service.sh health code-server | webserver | daemon | mlflow | worker     (compose's healthchecks)
#   service.sh COMMAND [ARGS]                                                 (any other command)
#
# Addresses: BIND_HOST, default 127.0.0.1 (this machine only: the code server's gRPC has no
# authentication), and the ports below. Containers set 0.0.0.0 (docker-compose.yml), where the
# published ports decide who reaches a service; set it yourself only behind a firewall or proxy.
# The Dagster processes read DAGSTER_HOME/dagster.yaml (PostgreSQL: POSTGRES_*), the webserver and
# the daemon DAGSTER_HOME/workspace.yaml (DAGSTER_CODE_SERVER_HOST/PORT). The MLflow server
# reads MLFLOW_BACKEND_STORE_URI (with credentials, so never on its command line) and keeps
# artifacts at MLFLOW_ARTIFACTS_DESTINATION: a folder, or an object store such as s3://bucket/prefix
# (boto3 reads AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION and AWS_ENDPOINT_URL).
# A Celery worker reads DAGSTER_HOME/celery.yaml (broker and result backend: ML_ASSETS_CELERY_*_URL).
set -eu

service="${1:-}"
[ $# -gt 0 ] && shift
bind="${BIND_HOST:-127.0.0.1}"

case "$service" in
  code-server)
    # `dagster api grpc`, not the `dagster code-server start` proxy: run monitoring asks this
    # server which runs it executes (ml_assets/deploy/run_launcher.py). Runs are its child processes.
    exec dagster api grpc --host "$bind" --port "${DAGSTER_CODE_SERVER_PORT:-4000}" \
      --module-name ml_assets.definitions --location-name ml_assets "$@"
    ;;
  webserver)
    exec dagster-webserver --host "$bind" --port "${DAGSTER_WEBSERVER_PORT:-3000}" \
      --workspace "$DAGSTER_HOME/workspace.yaml" "$@"
    ;;
  daemon)
    exec dagster-daemon run --workspace "$DAGSTER_HOME/workspace.yaml" "$@"
    ;;
  worker)
    # Executes the steps of runs whose executor is Celery (ML_ASSETS_EXECUTOR=celery), one at a time,
    # from the queues in CELERY_WORKER_QUEUES (ingest, train or both), as CELERY_WORKER_NAME@host.
    # Extra options go to `celery worker`.
    # `celery worker` itself, as `dagster-celery worker start` would start it (checked against
    # dagster-celery 0.29.27): that command waits on Celery as a child and forwards no signal, so
    # `docker stop` (SIGTERM to the first process only) never reached the worker.
    # One comma-separated -Q: Celery 5 keeps only the last of several.
    config_dir="$(python -c 'import sys; from dagster_celery.cli import get_config_dir; print(get_config_dir(sys.argv[1]))' \
      "$DAGSTER_HOME/celery.yaml")"
    export PYTHONPATH="$config_dir${PYTHONPATH:+:$PYTHONPATH}"
    exec celery -A dagster_celery.app worker --prefetch-multiplier=1 --loglevel INFO \
      -Q "${CELERY_WORKER_QUEUES:-ingest,train}" -n "${CELERY_WORKER_NAME:-worker}@%h" \
      --concurrency "${CELERY_WORKER_CONCURRENCY:-1}" "$@"
    ;;
  mlflow)
    : "${MLFLOW_BACKEND_STORE_URI:?MLFLOW_BACKEND_STORE_URI must name the PostgreSQL database of MLflow}"
    # MLflow 3's job runner (a dozen huey worker processes, for GenAI scorers and trace archival)
    # serves nothing ml_assets uses and would cost a core-quarter while idle.
    export MLFLOW_SERVER_ENABLE_JOB_EXECUTION="${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false}"
    if [ -n "${MLFLOW_AUTH_DATABASE_URI:-}" ]; then
      # MLflow's basic-auth app (ml_assets/deploy/mlflow_auth.py): the admin MLFLOW_AUTH_ADMIN_USERNAME
      # and _PASSWORD, the pipeline's own user MLFLOW_TRACKING_USERNAME and _PASSWORD, and
      # MLFLOW_FLASK_SERVER_SECRET_KEY; the users live in MLFLOW_AUTH_DATABASE_URI.
      export MLFLOW_AUTH_CONFIG_PATH="${MLFLOW_AUTH_CONFIG_PATH:-${TMPDIR:-/tmp}/ml_assets-mlflow-auth-$(id -u).ini}"
    fi
    set -- --host "$bind" --port "${MLFLOW_PORT:-5000}" --workers "${MLFLOW_WORKERS:-2}" \
      --serve-artifacts --artifacts-destination "${MLFLOW_ARTIFACTS_DESTINATION:-/data/mlartifacts}" \
      --allowed-hosts "${MLFLOW_ALLOWED_HOSTS:-mlflow:5000,localhost:*,127.0.0.1:*}" "$@"
    # `mlflow server` with uvicorn in the same process (MLflow's server imported once), after the
    # logins where MLFLOW_AUTH_DATABASE_URI is set (ml_assets/deploy/mlflow_server.py).
    exec python -m ml_assets.deploy.mlflow_server "$@"
    ;;
  health)
    # Exit 0 when the service in this container answers at its address (ml_assets/deploy/health.py,
    # which imports neither Dagster nor the code location: compose runs these every few seconds).
    check="python -m ml_assets.deploy.health"
    case "${1:-}" in
      code-server) exec $check grpc "127.0.0.1:${DAGSTER_CODE_SERVER_PORT:-4000}" ;;
      webserver) exec $check http "http://127.0.0.1:${DAGSTER_WEBSERVER_PORT:-3000}/server_info" ;;
      mlflow) exec $check http "http://127.0.0.1:${MLFLOW_PORT:-5000}/health" ;;
      worker) exec $check celery "${CELERY_WORKER_NAME:-worker}" ;;
      daemon) exec dagster-daemon liveness-check ;;
      *) echo "usage: $0 health code-server|webserver|daemon|mlflow|worker" >&2; exit 64 ;;
    esac
    ;;
  "")
    echo "usage: $0 code-server|webserver|daemon|mlflow|worker [extra options] | health SERVICE | COMMAND..." >&2
    exit 64
    ;;
  *)
    # Any other command runs as given: Kubernetes run pods pass `dagster api execute_run ...` as
    # arguments to the image's entry point (deploy/helm/values.yaml).
    exec "$service" "$@"
    ;;
esac
