-- Run once by the postgres image on a new data volume (/docker-entrypoint-initdb.d), as
-- POSTGRES_USER in POSTGRES_DB (Dagster's database). MLflow and optuna each get a database of
-- their own: all three keep an `alembic_version` table. MLflow's users (its basic-auth app) get one too.
CREATE DATABASE mlflow;
CREATE DATABASE mlflow_auth;
CREATE DATABASE optuna;
