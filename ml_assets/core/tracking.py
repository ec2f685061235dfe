"""MLflow bookkeeping: one run per trained model, registry versions, and the aliases that serve them.

A model becomes visible to other runs only through the registry, so `publish` registers a version
and moves its alias as the very last steps, after judging it against the champion of that moment;
if moving the alias fails, the new version is deleted again. MLflow has no compare-and-set for an
alias: whoever calls `publish` or `restore_recorded_champion` must be the only one moving it (the
steps that do hold Dagster's concurrency pool `keys.CHAMPION_POOL`, limited to one slot).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import NamedTuple

from ml_assets.core import model
from ml_assets.core.locks import file_lock, sqlite_file, store_lock
from ml_assets.core.months import is_month
from ml_assets.core.outages import is_outage
from ml_assets.core.performance import RegisteredModel

REGISTERED_MODEL = "trip_duration_xgboost"
CHAMPION, CHALLENGER = "champion", "challenger"
PARTITION_TAG, DAGSTER_RUN_TAG = "partition", "dagster_run_id"
TRAINING_MONTHS_TAG, REALIZED_RMSE = "training_months", "realized_rmse"
CHAMPION_BEFORE_TAG = "champion_before"  # on a version made champion: the version it took the alias from
ALIAS_AT_REGISTRATION_TAG = "alias_at_registration"  # the alias `publish` moved to the version
LINEAGE = "lineage.json"  # core.lineage's record of what made the model


def ensure_experiment(tracking_uri: str | None, name: str) -> None:
    """Create the store's schema and `name` once, whatever runs start at the same time, on whatever machines.

    With a sqlite store the artifacts go beside the database, not into `./mlruns` of whatever
    directory the run starts in. MLflow stores an experiment's artifact location as an absolute
    path: when the store was copied or moved with its DAGSTER_HOME, the experiment still points at
    the old folder, so it is renamed (its runs keep their artifacts where they are) and `name` is
    created again beside the store; new runs never write into another home.
    """
    import mlflow

    database = sqlite_file(tracking_uri)
    if database is None:  # a server: it creates its own tables, and of two creators of `name` refuses the second
        client = mlflow.MlflowClient(tracking_uri)
        if client.get_experiment_by_name(name) is None:
            _create_experiment(client, name, None)
        return
    # Two first runs on a fresh home would both create MLflow's sqlite tables: one process at a time, by a lock
    # beside the database (a sqlite file is only ever shared by the processes of its machine).
    with file_lock(store_lock(database)):
        client = mlflow.MlflowClient(tracking_uri)
        experiment = client.get_experiment_by_name(name)
        location = (database.parent / "mlartifacts").as_uri()
        if experiment is not None and experiment.artifact_location != location:
            client.rename_experiment(experiment.experiment_id, f"{name} (artifacts in {experiment.artifact_location})")
            experiment = None
        if experiment is None:
            _create_experiment(client, name, location)


def _create_experiment(client, name: str, location: str | None) -> None:
    """Create experiment `name`; one that another process created since it was looked up is taken as found
    (MLflow refuses the second creation with RESOURCE_ALREADY_EXISTS: no lock needed)."""
    from mlflow.exceptions import MlflowException

    try:
        client.create_experiment(name, artifact_location=location)
    except MlflowException as error:
        if error.error_code != "RESOURCE_ALREADY_EXISTS":
            raise


def fail_stale_runs(current_run_id: str, is_alive: Callable[[str], bool]) -> list[str]:
    """Mark FAILED the experiment's other RUNNING runs whose Dagster run is not `is_alive(dagster run id)`.

    A killed process or a full disk leaves them RUNNING, not always tagged with their month yet. Whether one
    is still written to is told by its Dagster run, which every machine of a deployment sees alike, never by
    a process on this machine: a run of the month on another worker is no dead process here.
    """
    import mlflow

    client = mlflow.MlflowClient()
    experiment = mlflow.get_experiment(mlflow.active_run().info.experiment_id)
    stale = []
    for run in client.search_runs([experiment.experiment_id], "attributes.status = 'RUNNING'"):
        dagster_run = run.data.tags.get(DAGSTER_RUN_TAG)
        if run.info.run_id != current_run_id and dagster_run and not is_alive(dagster_run):
            client.set_terminated(run.info.run_id, "FAILED")
            stale.append(run.info.run_id)
    return stale


def log_trained_model(*, params: dict, metrics: dict, trained, encoder: dict, lineage: dict, input_example) -> dict:
    """Log params, metrics, encoder, lineage and model into the active run (not registered: see `publish`)."""
    import mlflow
    from mlflow.models import infer_signature

    mlflow.log_params(params)
    mlflow.log_metrics(metrics)
    mlflow.log_dict(encoder, "encoder.json")
    mlflow.log_dict(lineage, LINEAGE)
    with warnings.catch_warnings():
        # The zone and code columns are integers on purpose; MLflow's hint about missing values is not for users.
        warnings.filterwarnings("ignore", message=".*Integer columns in Python cannot represent missing values")
        signature = infer_signature(input_example, model.predict(trained, input_example))
    info = model.log_to_mlflow(trained, signature)
    run = mlflow.active_run().info
    return {"run_id": run.run_id, "experiment_id": run.experiment_id, "model_uri": info.model_uri}


def log_pngs(pngs: dict[str, bytes], folder: str = "plots") -> None:
    """Figures (PNG bytes) into the active run, shown under its artifacts."""
    import io

    import mlflow
    from PIL import Image

    for name, png in pngs.items():
        mlflow.log_image(Image.open(io.BytesIO(png)), artifact_file=f"{folder}/{name}.png")


def champion_version(registered_model: str = REGISTERED_MODEL):
    """The registry's version the `champion` alias points at, or None (no model, or no alias yet)."""
    return aliased_version(CHAMPION, registered_model)


def aliased_version(alias: str, registered_model: str = REGISTERED_MODEL):
    """The registry's version `alias` points at, or None (no model, or no such alias yet)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient()
    try:
        return client.get_model_version_by_alias(registered_model, alias)
    except MlflowException as error:
        # MLflow's auth app refuses (403) to look up a model that does not exist yet, as it would one we may not read.
        absent = error.error_code == "PERMISSION_DENIED" and not client.search_registered_models(
            f"name = '{registered_model}'"
        )
        if error.error_code not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE") and not absent:
            raise  # a server that does not answer is not "no champion yet"
        return None


def load_version(version, registered_model: str = REGISTERED_MODEL):
    """(version, model, encoder) of a registry version."""
    import mlflow

    loaded = model.load_from_mlflow(f"models:/{registered_model}/{version.version}")
    encoder = mlflow.artifacts.load_dict(f"runs:/{version.run_id}/encoder.json")
    return version, loaded, encoder


class UnloadableChampion(ValueError):
    """The `champion` alias names a version that cannot be loaded as this project's model; the message says which
    and what to do, so that the steps can fail with it alone."""


def load_champion(registered_model: str = REGISTERED_MODEL):
    """(version, model, encoder) of the model the `champion` alias points at, or None. A champion that cannot be
    loaded (its files gone, a model of another kind aliased by hand) is named as the cause, not the model in hand."""
    version = champion_version(registered_model)
    if version is None:
        return None
    try:
        return load_version(version, registered_model)
    except Exception as error:  # noqa: BLE001 (whatever MLflow raises for what it cannot load)
        if is_outage(error):
            raise
        raise UnloadableChampion(
            f"the {CHAMPION} alias of {registered_model} names version {version.version}, which cannot be loaded as "
            f"this project's model ({type(error).__name__}: {error}); move the alias to a version that loads (MLflow "
            f"UI), or delete the alias and materialize trained_model again to publish a new {CHAMPION}"
        ) from error


def no_champion(registered_model: str = REGISTERED_MODEL) -> str:
    """Why there is no champion to load, and what to do: a registry with versions but no alias had one deleted
    (MLflow deletes a version's aliases with it) or moved away by hand, which is no "not trained yet"."""
    versions = [str(version.version) for version in registered_versions(registered_model)]
    if not versions:
        return (
            f"no `{CHAMPION}` model in the MLflow registry yet: materialize trained_model for a month with an "
            "earlier month to train on first"
        )
    return (
        f"no version of {registered_model} has the `{CHAMPION}` alias, though it has version(s) {', '.join(versions)}: "
        f"the version it named was deleted (MLflow deletes its aliases with it) or the alias was removed; set "
        f"`{CHAMPION}` on a version in the MLflow UI, or materialize trained_model again to publish a new one"
    )


def registered_versions(registered_model: str = REGISTERED_MODEL) -> list:
    """The registry's versions, newest first."""
    import mlflow

    versions = mlflow.MlflowClient().search_model_versions(f"name = '{registered_model}'")
    return sorted(versions, key=lambda version: int(version.version), reverse=True)


def tested_on(version, run=None) -> str | None:
    """A version's test month: its own tag, else its run's (an ml_assets model registered again by hand, as the
    MLflow UI's "Register model" does, to roll back); None for a model ml_assets never tested. A tag edited by hand
    to what is no month is none: every month computed from it would fail. `run`: the version's run where the
    caller has it already."""
    import mlflow
    from mlflow.exceptions import MlflowException

    own = version.tags.get(PARTITION_TAG)
    if is_month(own):
        return own
    if not version.run_id:
        return None
    try:
        tag = (run or mlflow.MlflowClient().get_run(version.run_id)).data.tags.get(PARTITION_TAG)
    except MlflowException as error:
        if error.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise  # a server that does not answer is not "never tested"
        return None
    return tag if is_month(tag) else None


def versions_tested_before(
    month: str, champion, newest: int | None = None, registered_model: str = REGISTERED_MODEL
) -> list:
    """The versions tested before `month`, newest first: at most `newest` of them, plus `champion` (a version, or
    None) however old, since its decay is what the check and the retraining policy judge. A version without a test
    month (a model ml_assets never tested) is none of them."""
    versions = [v for v in registered_versions(registered_model) if (tested_on(v) or month) < month]
    chosen = versions[:newest] if newest else versions
    return chosen + [v for v in versions[len(chosen) :] if champion is not None and v.version == champion.version]


def log_realized_rmse(run_id: str, rmse: float, step: int, month: str) -> None:
    """`realized_rmse` at `step` (months since the test month) on a version's run, when it is not the step's
    newest value already: its timestamp is the month's first day, so MLflow's chart over time shows the month,
    and a millisecond later for each earlier point of the step, so that the newest is the month's current score."""
    import mlflow
    import pandas as pd

    client = mlflow.MlflowClient()
    earlier = [point for point in client.get_metric_history(run_id, REALIZED_RMSE) if point.step == step]
    if earlier and max(earlier, key=lambda point: point.timestamp).value == rmse:
        return  # already the month's score (a re-materialization of the same data)
    timestamp = int(pd.Timestamp(month + "-01", tz="UTC").timestamp() * 1000) + len(earlier)
    client.log_metric(run_id, REALIZED_RMSE, rmse, timestamp=timestamp, step=step)


def training_months(run) -> list[str]:
    """The months a version's MLflow run (`get_run`'s answer) trained on, as trained_model tagged it."""
    return [month for month in run.data.tags.get(TRAINING_MONTHS_TAG, "").split(",") if month]


def trained_on(version, month: str) -> bool:
    """Whether a registry version was trained on `month` (its RMSE there is then no test score)."""
    import mlflow

    return month in training_months(mlflow.MlflowClient().get_run(version.run_id))


def load_registered(version) -> RegisteredModel:
    """A registry version with what monitoring compares: its training and test months, its test RMSE, its model."""
    import mlflow

    run = mlflow.MlflowClient().get_run(version.run_id)
    if "rmse" not in run.data.metrics:  # trained_model logs it; a run of a notebook, or one edited by hand, may not
        raise ValueError(f"its run {version.run_id} has no `rmse` metric (its test RMSE) to judge a later one against")
    _, loaded, encoder = load_version(version)
    return RegisteredModel(
        version=str(version.version),
        trained_on=training_months(run),
        tested_on=tested_on(version, run),
        test_rmse=float(run.data.metrics["rmse"]),
        model=loaded,
        encoder=encoder,
    )


def load_registered_models(versions: list) -> tuple[list[RegisteredModel], dict[str, str]]:
    """The versions loaded for scoring, and why each one that could not be was left out (its run or files
    deleted, a model of another kind): one broken version must not stop every later month's scores. An
    unreachable store is raised, to be waited out."""
    loaded, refused = [], {}
    for version in versions:
        try:
            loaded.append(load_registered(version))
        except Exception as error:  # noqa: BLE001 (whatever MLflow raises for what it cannot load)
            if is_outage(error):
                raise
            refused[str(version.version)] = f"{type(error).__name__}: {error}"
    return loaded, refused


def realized_history(run_id: str) -> dict[int, float]:
    """A version's realized RMSE by months since its test month, as logged so far: each step's newest point."""
    import mlflow

    points = sorted(mlflow.MlflowClient().get_metric_history(run_id, REALIZED_RMSE), key=lambda point: point.timestamp)
    return {point.step: point.value for point in points}


class Published(NamedTuple):
    version: str
    alias: str
    verdict: object  # what `gate` returned; `.passed` decides the alias


def publish(
    model_uri: str, gate: Callable[[object], object], tags: dict, registered_model: str = REGISTERED_MODEL
) -> Published:
    """Judge the model against the champion of this moment, register it, and move its alias.

    The caller is the only one moving aliases meanwhile (module docstring), so two runs of one month never both
    take `champion` from the same predecessor.
    """
    import mlflow

    client = mlflow.MlflowClient()
    verdict = gate(load_champion(registered_model))
    alias = CHAMPION if verdict.passed else CHALLENGER
    if verdict.passed and verdict.champion_version is not None:
        # Where `restore_recorded_champion` puts the alias back.
        tags = {**tags, CHAMPION_BEFORE_TAG: verdict.champion_version}
    before = aliased_version(alias, registered_model)
    version = mlflow.register_model(model_uri, registered_model, tags=tags)
    try:
        client.set_registered_model_alias(registered_model, alias, version.version)
        # Only once the alias moved: an interrupt inside register_model leaves a version no alias names.
        client.set_model_version_tag(registered_model, version.version, ALIAS_AT_REGISTRATION_TAG, alias)
    except BaseException:
        _undo_publishing(client, registered_model, alias, version.version, before)
        raise
    return Published(str(version.version), alias, verdict)


def _undo_publishing(client, registered_model: str, alias: str, version: str, before) -> None:
    """Delete a version whose alias could not be moved, and put the alias back on `before` (None: no version)
    if it moved all the same: an interrupt after MLflow's commit, or an answer that timed out."""
    now = aliased_version(alias, registered_model)
    if now is not None and str(now.version) == str(version):
        if before is None:
            client.delete_registered_model_alias(registered_model, alias)
        else:
            client.set_registered_model_alias(registered_model, alias, before.version)
    client.delete_model_version(registered_model, version)


def _exists(client, registered_model: str, version: str) -> bool:
    from mlflow.exceptions import MlflowException

    try:
        client.get_model_version(registered_model, version)
    except MlflowException as error:
        # INVALID_PARAMETER_VALUE: a tag edited by hand to what is no version number names no version either.
        if error.error_code not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise
        return False
    return True


def restore_recorded_champion(
    is_recorded: Callable[[object], bool], registered_model: str = REGISTERED_MODEL
) -> list[str]:
    """Move `champion` back while it names a version whose publishing was never recorded, and return those.

    `publish` moves the alias before the caller can record the gate's evaluation; a process killed in
    between leaves a champion nobody recorded. It goes back to the version it replaced (or nowhere, if there
    was none or it was deleted since); the version stays registered, without an alias, as after a kill before
    the alias moved.
    """
    import mlflow

    client, taken = mlflow.MlflowClient(), []
    while (champion := champion_version(registered_model)) is not None and not is_recorded(champion):
        before = champion.tags.get(CHAMPION_BEFORE_TAG)
        if before is not None and (before in taken or not _exists(client, registered_model, before)):
            # Deleted since: no champion, rather than an alias to nothing; taken back already (tags edited by hand
            # into a round): no champion, rather than going round for ever.
            before = None
        if before is None:
            client.delete_registered_model_alias(registered_model, CHAMPION)
        else:
            client.set_registered_model_alias(registered_model, CHAMPION, before)
        taken.append(str(champion.version))
    return taken
