"""`mlflow`: dagster-mlflow's `mlflow_tracking`, started by the step that trains rather than with the run.

A run initializes its resources before its first step, so a tracking server that is down would
otherwise fail ingestion steps that never talk to MLflow.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator

from dagster import Failure, InitResourceContext, IntSource, Noneable, StringSource, resource
from dagster import Field as ConfigField

from ml_assets import settings
from ml_assets.checks.model_gate import MODEL_GATE
from ml_assets.core import credentials, tracking
from ml_assets.records import check_evaluations
from ml_assets.ui_metadata import mlflow_ui_url


class MlflowTracking:
    def __init__(self, context: InitResourceContext):
        config = context.resource_config
        given = config.get("mlflow_tracking_uri")
        # A user and password in the URI go to MLflow as its own variables, never in the URI it prints
        # ("View run at ...") or raises: only `shown_uri`, with the password masked, appears in messages.
        self.tracking_uri, user, password = credentials.split_userinfo(given) if given else (None, None, None)
        self.shown_uri = credentials.mask(given) if given else None
        self._context = context.replace_config({**config, "mlflow_tracking_uri": self.tracking_uri})
        self.experiment_name = config["experiment_name"]
        # The home's taxi type: its models are registered in `registered_model`, of that type alone.
        self.taxi = config["taxi"]
        self.registered_model = tracking.registered_model(self.taxi)
        self.ui_url = mlflow_ui_url(config.get("ui_url"), self.tracking_uri)
        self._client_env = {
            settings.MLFLOW_HTTP_REQUEST_MAX_RETRIES.variable: str(config["http_request_max_retries"]),
            settings.MLFLOW_HTTP_REQUEST_TIMEOUT.variable: str(config["http_request_timeout"]),
        }
        if user is not None:
            self._client_env.update({"MLFLOW_TRACKING_USERNAME": user, "MLFLOW_TRACKING_PASSWORD": password or ""})

    @contextlib.contextmanager
    def restoring_process_settings(self) -> Iterator[MlflowTracking]:
        """This resource for one run; at its teardown, what `connect` set process-wide (MLflow's tracking URI,
        which it also writes into os.environ, and the client variables) is put back as it was, so that the
        next run in this process, or a subprocess, does not find this run's store."""
        with settings.restoring_environ([*self._client_env, "MLFLOW_TRACKING_URI"]):
            try:
                yield self
            finally:
                if "mlflow" in sys.modules:  # no URI of MLflow's own: it reads the environment's again
                    sys.modules["mlflow"].set_tracking_uri(None)

    def connect(self, what: str, in_champion_pool: bool = False) -> None:
        """Point MLflow at the store (creating the experiment once); a clear Failure if it cannot be reached.

        A step `in_champion_pool` (it holds keys.CHAMPION_POOL, as every step that moves the alias must) first
        puts back a champion whose publishing was never recorded; the others only read the registry.
        """
        import mlflow

        os.environ.update(self._client_env)  # MLflow reads its HTTP settings only from the environment
        try:
            mlflow.set_tracking_uri(self.tracking_uri)
            tracking.ensure_experiment(self.tracking_uri, self.experiment_name)
            restored = (
                tracking.restore_recorded_champion(self._publishing_recorded, self.taxi) if in_champion_pool else []
            )
        except Exception as error:  # MLflow raises its own, requests' and OS errors alike
            said = credentials.said(error)
            raise Failure(f"{what}: MLflow tracking at {self.shown_uri} cannot be reached: {said}") from error
        if restored:
            self._context.log.warning(
                f"{what}: `{tracking.CHAMPION}` named version(s) {', '.join(restored)}, published by runs that ended "
                f"before recording their {MODEL_GATE} evaluation; it was moved back to the version each replaced"
            )

    @contextlib.contextmanager
    def champion_must_load(self, what: str) -> Iterator[None]:
        """A block that loads the champion: one that cannot be loaded fails the step with core.tracking's message
        (which version, what to do) alone, not with MLflow's traceback under it."""
        try:
            yield
        except tracking.UnloadableChampion as error:
            raise Failure(f"{what}: {error}") from None

    def _publishing_recorded(self, version) -> bool:
        """Whether the run that published `version` recorded its model_gate evaluation, or still may.

        A version of another instance, or from before versions named their run, counts as recorded.
        """
        run_id = version.tags.get(tracking.DAGSTER_RUN_TAG)
        run = self._context.instance.get_run_by_id(run_id) if run_id else None
        if run is None or not run.is_finished:
            return True
        evaluations = check_evaluations(self._context.instance, run_id, MODEL_GATE)
        return any(str(evaluation.get("model_version")) == str(version.version) for evaluation in evaluations)

    @contextlib.contextmanager
    def run(self, what: str) -> Iterator[object]:
        """The Dagster run's MLflow run, active for the block; FINISHED after it, FAILED if it raises."""
        import mlflow
        from dagster_mlflow import mlflow_tracking

        self.connect(what)
        generator = mlflow_tracking.resource_fn(self._context)
        client = next(generator)
        try:
            yield client
        except BaseException:
            # Marking the run FAILED needs the server too: if it is gone, the first error is the one to see.
            with contextlib.suppress(Exception):
                mlflow.end_run("FAILED")
            raise
        mlflow.end_run()
        generator.close()


@resource(
    config_schema={
        "experiment_name": ConfigField(StringSource, description="MLflow experiment name"),
        "taxi": ConfigField(
            StringSource,
            default_value=settings.TAXI.default,
            description="the home's taxi type, whose registered model the steps use (core.tracking.registered_model)",
        ),
        "mlflow_tracking_uri": ConfigField(Noneable(StringSource), default_value=None, is_required=False),
        "ui_url": ConfigField(Noneable(StringSource), default_value=None, is_required=False),
        "http_request_max_retries": ConfigField(
            IntSource, default_value=settings.MLFLOW_HTTP_REQUEST_MAX_RETRIES.default
        ),
        "http_request_timeout": ConfigField(IntSource, default_value=settings.MLFLOW_HTTP_REQUEST_TIMEOUT.default),
    },
    description="dagster-mlflow's mlflow_tracking, started by the step that trains (one MLflow run per model)",
)
def mlflow_tracking_resource(context: InitResourceContext) -> Iterator[MlflowTracking]:
    with MlflowTracking(context).restoring_process_settings() as tracking_resource:
        yield tracking_resource
