# One image for every process of the production topology (docker-compose.yml): the gRPC code
# server and the runs it starts, the webserver, the daemon, the Celery workers and the MLflow
# tracking server. Its entry point is deploy/service.sh, which the topology test
# (ml_assets_tests/test_deployment.py) runs without containers.
#
# Dependencies are exactly uv.lock (with the deploy, gcs and k8s extras), installed by uv, itself
# pinned with hashes (requirements-uv.txt): the base image's pip only unpacks uv's wheel, and
# nothing is resolved at build time.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DAGSTER_HOME=/opt/dagster/dagster_home \
    MLFLOW_DISABLE_TELEMETRY=true \
    UV_PROJECT_ENVIRONMENT=/opt/venv \
    UV_PYTHON_DOWNLOADS=never \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_NO_CACHE=1 \
    PATH=/opt/venv/bin:$PATH

# XGBoost's wheel needs the OpenMP runtime, which the slim image lacks.
RUN apt-get update \
    && apt-get install --yes --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 ml_assets \
    && useradd --system --uid 10001 --gid ml_assets --home-dir /opt/dagster --shell /usr/sbin/nologin ml_assets

WORKDIR /opt/dagster/app
COPY requirements-uv.txt ./
RUN python -m pip install --no-deps --require-hashes --requirement requirements-uv.txt
# The dependencies alone first: this layer is rebuilt when the lock changes, not with the code.
COPY pyproject.toml uv.lock ./
RUN uv sync --frozen --no-install-project --extra deploy --extra gcs --extra k8s
COPY setup.py README.md ./
COPY ml_assets ./ml_assets
RUN uv sync --frozen --no-editable --extra deploy --extra gcs --extra k8s

COPY deploy/dagster.yaml deploy/workspace.yaml deploy/celery.yaml /opt/dagster/dagster_home/
COPY deploy/service.sh /usr/local/bin/ml-assets-service

# Mount points of the named volumes: a new volume takes over this ownership.
RUN mkdir -p /data/assets /data/downloads /data/mlartifacts /data/pgbouncer /opt/dagster/dagster_home/storage \
    && chown -R ml_assets:ml_assets /data /opt/dagster \
    && chmod 0755 /usr/local/bin/ml-assets-service

USER ml_assets
ENTRYPOINT ["ml-assets-service"]
CMD ["code-server"]
