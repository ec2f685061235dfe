"""The production topology of docker-compose.yml without containers, on 127.0.0.1 (docs/deployment.md).

    python -m ml_assets.deploy.local FOLDER      # `make stack`; Ctrl-C or SIGTERM stops it all

    with Topology(workdir, env={"ML_ASSETS_SOURCE": incoming}) as topology:   # topology.py
        topology.wait_until_ready()
        launch(topology, "2023-02")                                          # ui_actions.py

One process group per compose service, each started as `deploy/service.sh SERVICE` (the image's
entry point) as a container would be: a throwaway PostgreSQL cluster behind PgBouncer
(postgres.py), the MLflow server behind its login (mlflow_server.py), the gRPC code server, the
webserver, the daemon and, with Celery, `redis-server` and the workers. The deployment tests and
the benchmarks run this topology; a person can too, to try the deployment without Docker.

Needs a checkout (deploy/ is not part of the installed package), the `deploy` extra, and Debian's
`postgresql` and `pgbouncer` packages (`redis-server` for Celery). The code location never
imports this package: its modules import Dagster, MLflow and YAML only where they use them.
"""
