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

MODEL_NAME = "trip_duration_xgboost"  # green's registered model; another taxi type's adds its name (`registered_model`)
GREEN = "green"  # the taxi type of the registries from before there was another
CHAMPION, CHALLENGER = "champion", "challenger"
PARTITION_TAG, DAGSTER_RUN_TAG = "partition", "dagster_run_id"
TAXI_TAG = "taxi"  # on each version and its run: the taxi type whose trips made the model
TRAINING_MONTHS_TAG, REALIZED_RMSE = "training_months", "realized_rmse"
CHAMPION_BEFORE_TAG = "champion_before"  # on a version made champion: the version it took the alias from
ALIAS_AT_REGISTRATION_TAG = "alias_at_registration"  # the alias `publish` moved to the version
LINEAGE = "lineage.json"  # core.lineage's record of what made the model


def registered_model(taxi: str) -> str:
    """The registered model of `taxi`'s models. Each taxi type has its own, so that homes of both types can share a
    tracking server without one's gate, monitoring or predictions reading the other's models; green keeps the name
    it had before there was a second type, so existing registries go on as they were."""
    return MODEL_NAME if taxi == GREEN else f"{MODEL_NAME}_{taxi}"


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


def champion_version(taxi: str = GREEN):
    """The version the `champion` alias of `taxi`'s registered model points at, or None (no model, or no alias yet)."""
    return aliased_version(CHAMPION, taxi)


def aliased_version(alias: str, taxi: str = GREEN):
    """The version `alias` of `taxi`'s registered model points at, or None (no model, or no such alias yet)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    client, name = mlflow.MlflowClient(), registered_model(taxi)
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as error:
        # MLflow's auth app refuses (403) to look up a model that does not exist yet, as it would one we may not read.
        absent = error.error_code == "PERMISSION_DENIED" and not client.search_registered_models(f"name = '{name}'")
        if error.error_code not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE") and not absent:
            raise  # a server that does not answer is not "no champion yet"
        return None


def load_version(version):
    """(version, model, encoder) of a registry version."""
    import mlflow

    loaded = model.load_from_mlflow(f"models:/{version.name}/{version.version}")
    encoder = mlflow.artifacts.load_dict(f"runs:/{version.run_id}/encoder.json")
    return version, loaded, encoder


class UnloadableChampion(ValueError):
    """The `champion` alias names a version that cannot be loaded as this project's model; the message says which
    and what to do, so that the steps can fail with it alone."""


class OtherTaxiModel(ValueError):
    """A version of `taxi`'s registered model is a model of another taxi type (its `taxi` tag says so)."""


def other_taxi(version, taxi: str, run=None) -> str | None:
    """Why `version` is no model of `taxi` trips, naming both types and where each belongs; None when it is one, or
    says nothing (registered before versions recorded their type: taken as its registered model's). One is there when
    registered by hand from a run of the other type, or tagged by hand as the other type's (a registry a home of the
    other type trained into before each type had a registered model of its own: docs/configuration.md)."""
    found = taxi_of(version, run)
    if found is None or found == taxi:
        return None
    return (
        f"version {version.version} of {version.name} is a model of {found} taxis (`{TAXI_TAG}` {found} on it or its "
        f"run), but this home holds {taxi} taxis, whose models are registered in {registered_model(taxi)}: register "
        f"its run's model in {registered_model(found)} instead, where {found} homes find it, and delete the version "
        f"from {version.name}"
    )


def load_champion(taxi: str = GREEN):
    """(version, model, encoder) of the model the `champion` alias of `taxi`'s registered model points at, or None.
    A champion that cannot be loaded (its files gone, a model of another kind aliased by hand) or that is a model of
    another taxi type is named as the cause, not the model in hand."""
    version = champion_version(taxi)
    if version is None:
        return None
    if mixed := other_taxi(version, taxi):
        raise UnloadableChampion(
            f"the {CHAMPION} alias of {version.name} names a model of another taxi type: {mixed} (its alias goes with "
            f"it: the next model that passes the gate becomes {CHAMPION}), or move the alias to a {taxi} version first"
        )
    try:
        return load_version(version)
    except Exception as error:  # noqa: BLE001 (whatever MLflow raises for what it cannot load)
        if is_outage(error):
            raise
        raise UnloadableChampion(
            f"the {CHAMPION} alias of {version.name} names version {version.version}, which cannot be loaded as "
            f"this project's model ({type(error).__name__}: {error}); move the alias to a version that loads (MLflow "
            f"UI), or delete the alias and materialize trained_model again to publish a new {CHAMPION}"
        ) from error


def no_champion(taxi: str = GREEN) -> str:
    """Why there is no champion to load, and what to do: a registry with versions but no alias had one deleted
    (MLflow deletes a version's aliases with it) or moved away by hand, which is no "not trained yet"."""
    versions = [str(version.version) for version in registered_versions(taxi)]
    if not versions:
        return (
            f"no `{CHAMPION}` model in the MLflow registry yet ({registered_model(taxi)} has no version): materialize "
            "trained_model for a month with an earlier month to train on first"
        )
    return (
        f"no version of {registered_model(taxi)} has the `{CHAMPION}` alias, though it has version(s) "
        f"{', '.join(versions)}: the version it named was deleted (MLflow deletes its aliases with it) or the alias "
        f"was removed; set `{CHAMPION}` on a version in the MLflow UI, or materialize trained_model again to publish "
        "a new one"
    )


def registered_versions(taxi: str = GREEN) -> list:
    """The versions of `taxi`'s registered model, newest first."""
    import mlflow

    versions = mlflow.MlflowClient().search_model_versions(f"name = '{registered_model(taxi)}'")
    return sorted(versions, key=lambda version: int(version.version), reverse=True)


def _recorded(version, tag: str, valid: Callable[[str | None], bool], run=None) -> str | None:
    """A version's `tag` where `valid`, else its run's (an ml_assets model registered again by hand, as the MLflow
    UI's "Register model" does, to roll back, has only its run's tags); None where neither is. `run`: the version's
    run where the caller has it already."""
    import mlflow
    from mlflow.exceptions import MlflowException

    own = version.tags.get(tag)
    if valid(own):
        return own
    if not version.run_id:
        return None
    try:
        found = (run or mlflow.MlflowClient().get_run(version.run_id)).data.tags.get(tag)
    except MlflowException as error:
        if error.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise  # a server that does not answer is not "never recorded"
        return None
    return found if valid(found) else None


def tested_on(version, run=None) -> str | None:
    """A version's test month, from it or its run (`_recorded`); None for a model ml_assets never tested. A tag edited
    by hand to what is no month is none: every month computed from it would fail."""
    return _recorded(version, PARTITION_TAG, is_month, run)


def taxi_of(version, run=None) -> str | None:
    """The taxi type whose trips made a version, from it or its run (`_recorded`); None for a version registered
    before ml_assets recorded it, or a model ml_assets never trained."""
    return _recorded(version, TAXI_TAG, bool, run)


def versions_tested_before(month: str, champion, newest: int | None = None, taxi: str = GREEN) -> list:
    """The versions of `taxi`'s registered model tested before `month`, newest first: at most `newest` of them, plus
    `champion` (a version, or None) however old, since its decay is what the check and the retraining policy judge. A
    version without a test month (a model ml_assets never tested) is none of them."""
    versions = [v for v in registered_versions(taxi) if (tested_on(v) or month) < month]
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


def load_registered(version, taxi: str = GREEN) -> RegisteredModel:
    """A registry version with what monitoring compares: its training and test months, its test RMSE, its model.
    A model of another taxi type than `taxi` is refused: its RMSE on `taxi`'s months says nothing of its own."""
    import mlflow

    run = mlflow.MlflowClient().get_run(version.run_id)
    if mixed := other_taxi(version, taxi, run):
        raise OtherTaxiModel(mixed)
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


def load_registered_models(versions: list, taxi: str = GREEN) -> tuple[list[RegisteredModel], dict[str, str]]:
    """The versions loaded for scoring `taxi`'s months, and why each one that could not be was left out (its run or
    files deleted, a model of another kind or taxi type): one broken version must not stop every later month's
    scores. An unreachable store is raised, to be waited out."""
    loaded, refused = [], {}
    for version in versions:
        try:
            loaded.append(load_registered(version, taxi))
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


def publish(model_uri: str, gate: Callable[[object], object], tags: dict, taxi: str = GREEN) -> Published:
    """Judge the model of `taxi` trips against the champion of this moment, register it in `taxi`'s registered
    model (tagged with its type), and move its alias.

    The caller is the only one moving aliases meanwhile (module docstring), so two runs of one month never both
    take `champion` from the same predecessor.
    """
    import mlflow

    client, name = mlflow.MlflowClient(), registered_model(taxi)
    verdict = gate(load_champion(taxi))
    alias = CHAMPION if verdict.passed else CHALLENGER
    tags = {**tags, TAXI_TAG: taxi}
    if verdict.passed and verdict.champion_version is not None:
        # Where `restore_recorded_champion` puts the alias back.
        tags[CHAMPION_BEFORE_TAG] = verdict.champion_version
    before = aliased_version(alias, taxi)
    version = mlflow.register_model(model_uri, name, tags=tags)
    try:
        client.set_registered_model_alias(name, alias, version.version)
        # Only once the alias moved: an interrupt inside register_model leaves a version no alias names.
        client.set_model_version_tag(name, version.version, ALIAS_AT_REGISTRATION_TAG, alias)
    except BaseException:
        _undo_publishing(client, taxi, alias, version.version, before)
        raise
    return Published(str(version.version), alias, verdict)


def _undo_publishing(client, taxi: str, alias: str, version: str, before) -> None:
    """Delete a version whose alias could not be moved, and put the alias back on `before` (None: no version)
    if it moved all the same: an interrupt after MLflow's commit, or an answer that timed out."""
    now, name = aliased_version(alias, taxi), registered_model(taxi)
    if now is not None and str(now.version) == str(version):
        if before is None:
            client.delete_registered_model_alias(name, alias)
        else:
            client.set_registered_model_alias(name, alias, before.version)
    client.delete_model_version(name, version)


def _exists(client, name: str, version: str) -> bool:
    from mlflow.exceptions import MlflowException

    try:
        client.get_model_version(name, version)
    except MlflowException as error:
        # INVALID_PARAMETER_VALUE: a tag edited by hand to what is no version number names no version either.
        if error.error_code not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise
        return False
    return True


def restore_recorded_champion(is_recorded: Callable[[object], bool], taxi: str = GREEN) -> list[str]:
    """Move `champion` back while it names a version whose publishing was never recorded, and return those.

    `publish` moves the alias before the caller can record the gate's evaluation; a process killed in
    between leaves a champion nobody recorded. It goes back to the version it replaced (or nowhere, if there
    was none or it was deleted since); the version stays registered, without an alias, as after a kill before
    the alias moved.
    """
    import mlflow

    client, taken, name = mlflow.MlflowClient(), [], registered_model(taxi)
    while (champion := champion_version(taxi)) is not None and not is_recorded(champion):
        before = champion.tags.get(CHAMPION_BEFORE_TAG)
        if before is not None and (before in taken or not _exists(client, name, before)):
            # Deleted since: no champion, rather than an alias to nothing; taken back already (tags edited by hand
            # into a round): no champion, rather than going round for ever.
            before = None
        if before is None:
            client.delete_registered_model_alias(name, CHAMPION)
        else:
            client.set_registered_model_alias(name, CHAMPION, before)
        taken.append(str(champion.version))
    return taken
