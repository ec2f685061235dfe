"""Faults on the ingestion side: killed writes, file modes, bad re-publications, settings, the sensor, automation."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import sys

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from dagster import AssetKey, AssetMaterialization, SkipReason, build_sensor_context, evaluate_automation_conditions

from ml_assets import settings
from ml_assets.automation.sensors import new_month_sensor
from ml_assets.core.months import shift_month
from ml_assets.core.storage import write_json
from ml_assets.partitions import monthly_partitions
from ml_assets.records import latest_metadata
from ml_assets.resources.trip_source import TripSourceResource
from ml_assets.runner import __main__ as runner
from ml_assets.runner.runs import materialize_month
from ml_assets_tests.support import TLC_DATA, free_port, replace_column, start_writer

INGESTION = ["raw_trips", "cleaned_trips"]
LAST_PARTITION = monthly_partitions.get_last_partition_key()
ENDED = "(the last month that has ended)"


def temp_files(folder) -> list[str]:
    return sorted(path.name for path in folder.iterdir() if path.name.endswith(".tmp"))


@pytest.mark.process
def test_a_write_killed_midway_leaves_no_temp_file_after_the_next_write(tmp_path):
    target = tmp_path / "2021-02.json"
    writer = start_writer(target)
    try:
        write_json({"other": "writer"}, target)  # a live writer's temporary file is left alone
        assert len(temp_files(tmp_path)) == 1
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait(timeout=30)
    assert len(temp_files(tmp_path)) == 1
    (tmp_path / ".2021-03.json.x1.tmp").touch()  # another file's leftover is not this write's business
    write_json({"month": "2021-02"}, target)
    assert temp_files(tmp_path) == [".2021-03.json.x1.tmp"]
    assert target.read_text() == '{\n  "month": "2021-02"\n}'


def test_files_follow_the_umask(tmp_path):
    previous = os.umask(0o027)
    try:
        write_json({}, tmp_path / "value.json")
    finally:
        os.umask(previous)
    assert (tmp_path / "value.json").stat().st_mode & 0o777 == 0o640


# --- a re-published month that reads but is bad never replaces the last good value -----------


def all_null_distance(table: pa.Table) -> pa.Table:
    return replace_column(table, "trip_distance", pa.nulls(table.num_rows, pa.float64()))


def all_longer_than_an_hour(table: pa.Table) -> pa.Table:
    pickup = table["lpep_pickup_datetime"]
    return replace_column(table, "lpep_dropoff_datetime", pc.add(pickup, pa.scalar(90 * 60 * 10**6, pa.duration("us"))))


def us_format_pickups(table: pa.Table) -> pa.Table:
    return replace_column(
        table, "lpep_pickup_datetime", pc.strftime(table["lpep_pickup_datetime"], "%m/%d/%Y %I:%M:%S %p")
    )


REPUBLISHED = {  # how the month is spoiled, what the failure says
    "trip_distance all null": (all_null_distance, "no trips left after cleaning"),
    "durations all > 60 min": (all_longer_than_an_hour, "no trips left after cleaning"),
    "US-format pickup strings": (
        us_format_pickups,
        "raw_trips: column(s) not castable to the canonical schema: pickup_datetime",
    ),
}


def stored_values(home) -> dict:
    return {path: path.read_bytes() for path in (home / "ml_assets" / "assets").rglob("*") if path.is_file()}


@pytest.mark.parametrize("case", REPUBLISHED)
def test_a_bad_republication_replaces_nothing_and_the_good_file_comes_back(
    case, instance, dagster_home, tmp_path, monkeypatch
):
    source = tmp_path / "source"
    source.mkdir()
    good = TLC_DATA / "green_tripdata_2021-02.parquet"
    shutil.copy(good, source)
    monkeypatch.setenv("ML_ASSETS_SOURCE", str(source))
    assert materialize_month(instance, "2021-02", INGESTION).success
    before = stored_values(dagster_home)

    spoil, message = REPUBLISHED[case]
    pq.write_table(spoil(pq.read_table(good)), source / good.name)
    result = materialize_month(instance, "2021-02", INGESTION, raise_on_error=False)
    assert not result.success
    failures = [event for event in result.all_events if event.is_step_failure]
    assert [event.step_key for event in failures] == ["ingest_trips"]
    error = str(failures[0].step_failure_data.error)
    assert message in error and "2021-02" in error and str(source / good.name) in error
    assert stored_values(dagster_home) == before
    for asset in INGESTION:
        assert len(instance.fetch_materializations(AssetKey(asset), limit=10).records) == 1

    shutil.copy(good, source)
    for asset in INGESTION:  # what a kill -9 during an earlier write left behind
        (dagster_home / "ml_assets" / "assets" / asset / ".2021-02.parquet.x4b2k9q1.tmp").touch()
    assert materialize_month(instance, "2021-02", INGESTION).success
    assert stored_values(dagster_home).keys() == before.keys()
    assert latest_metadata(instance, "raw_trips", "2021-02")["sha256"] == hashlib.sha256(good.read_bytes()).hexdigest()


def test_a_month_re_published_while_it_is_ingested_is_stored_with_the_hash_of_the_rows_it_holds(
    instance, dagster_home, tmp_path, monkeypatch
):
    """The open file pins the version whose rows are stored; its hash and size were read from the path again
    after cleaning, so they were the new version's, and its data version hid that the rows were older."""
    from ml_assets.assets import ingestion

    source = tmp_path / "source"
    source.mkdir()
    good = TLC_DATA / "green_tripdata_2021-02.parquet"
    shutil.copy(good, source)
    monkeypatch.setenv("ML_ASSETS_SOURCE", str(source))
    clean = ingestion.clean_trips

    def republished_meanwhile(table, month, origin):
        newer = pq.read_table(good)
        pq.write_table(newer.slice(0, newer.num_rows // 2), tmp_path / "newer.parquet")
        os.replace(tmp_path / "newer.parquet", source / good.name)
        return clean(table, month, origin)

    monkeypatch.setattr(ingestion, "clean_trips", republished_meanwhile)
    assert materialize_month(instance, "2021-02", INGESTION).success
    metadata = latest_metadata(instance, "raw_trips", "2021-02")
    stored = dagster_home / "ml_assets" / "assets" / "raw_trips" / "2021-02.parquet"
    assert pq.read_metadata(stored).num_rows == pq.read_metadata(good).num_rows == metadata["rows"]
    assert metadata["sha256"] == hashlib.sha256(good.read_bytes()).hexdigest()
    assert metadata["size_bytes"] == good.stat().st_size


# --- settings, the sensor and the command line say what is wrong instead of raising ----------


@pytest.mark.parametrize(
    ("variable", "raw", "allowed"),
    [
        ("ML_ASSETS_TRAINING_MONTHS", "-1", "a whole number of months >= 1"),
        ("ML_ASSETS_TRAINING_MONTHS", "abc", "a whole number of months >= 1"),
    ],
)
def test_a_bad_training_window_is_named_when_settings_load(variable, raw, allowed, monkeypatch):
    monkeypatch.setenv(variable, raw)
    with pytest.raises(
        settings.SettingError, match=re.escape(f"{variable}={raw!r} is not allowed: expected {allowed}")
    ):
        settings.validate_all()


def sensor_tick(instance, trip_source: TripSourceResource):
    from ml_assets.definitions import defs

    context = build_sensor_context(instance=instance, resources={"trip_source": trip_source}, definitions=defs)
    return new_month_sensor(context)


def test_the_sensor_skips_a_source_url_requests_cannot_use(instance, tmp_path):
    """The resource is resolved at run time, so an `EnvVar` set after loading can still be bad."""
    source = TripSourceResource(kind="tlc", tlc_url="ftp://x", cache_dir=str(tmp_path))
    result = sensor_tick(instance, source)
    assert isinstance(result, SkipReason)
    assert "tlc ftp://x is unreachable" in result.skip_message and "No connection adapters" in result.skip_message


def test_a_source_folder_not_there_yet_is_said_at_load_and_in_each_skipped_tick(instance, tmp_path, monkeypatch):
    """A folder that appears later (a volume mounted after the code location loads) is accepted, with a warning."""
    folder = tmp_path / "incoming"
    monkeypatch.setenv("ML_ASSETS_SOURCE", str(folder))
    with pytest.warns(UserWarning, match=re.escape(f"ML_ASSETS_SOURCE={str(folder)!r}: {settings.MISSING_FOLDER}")):
        settings.validate_all()
    source = TripSourceResource(kind="directory", directory=str(folder), cache_dir="unused")
    skipped = sensor_tick(instance, source)
    assert isinstance(skipped, SkipReason)
    assert f"directory {folder} does not exist (yet): its months are read once it appears" in skipped.skip_message

    folder.mkdir()
    shutil.copy(TLC_DATA / "green_tripdata_2021-01.parquet", folder)
    assert [request.partition_key for request in sensor_tick(instance, source).run_requests] == ["2021-01"]


def test_the_sensor_shows_no_password_of_the_tlc_url(instance, tmp_path):
    """A TLC mirror behind a login, unreachable: the skip reason names it with the password masked."""
    url = f"http://alice:PASSWORD@127.0.0.1:{free_port()}/trip-data"  # nothing listens there
    result = sensor_tick(instance, TripSourceResource(kind="tlc", tlc_url=url, cache_dir=str(tmp_path)))
    assert isinstance(result, SkipReason) and "PASSWORD" not in result.skip_message
    assert f"tlc {url.replace('PASSWORD', '***')} is unreachable" in result.skip_message


def test_the_sensor_requests_a_month_whose_file_is_not_parquet(instance, tmp_path, monkeypatch):
    """Probing only looks at the file's size and time: the run refuses it, saying why."""
    month_file = tmp_path / "green_tripdata_2021-01.parquet"
    month_file.write_text("not parquet")
    result = sensor_tick(instance, TripSourceResource(kind="directory", directory=str(tmp_path), cache_dir="unused"))
    assert [request.partition_key for request in result.run_requests] == ["2021-01"]
    monkeypatch.setenv("ML_ASSETS_SOURCE", str(tmp_path))
    run = materialize_month(instance, "2021-01", INGESTION, raise_on_error=False)
    (failure,) = [event for event in run.all_events if event.is_step_failure]
    error = str(failure.step_failure_data.error)
    assert failure.step_key == "ingest_trips" and "is not readable parquet" in error and str(month_file) in error


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["../../etc"], "argument month: '../../etc' is not a month YYYY-MM"),
        (["2021-13"], "argument month: '2021-13' is not a month YYYY-MM"),
        (["2020-12"], "argument month: 2020-12 is before the first partition, 2021-01"),
        (["2021-03", "--to", "2021-02"], "argument --to: 2021-02 is before the first month, 2021-03"),
        (["2021-02", "--to", "soon"], "argument --to: 'soon' is not a month YYYY-MM"),
        # After the last partition (the last month that has ended): refused before anything runs,
        # where Dagster raised DagsterUnknownPartitionError (for --to, once the range had started).
        (["2099-01"], f"argument month: 2099-01 is after the last partition, {LAST_PARTITION} {ENDED}"),
        (
            ["2021-02", "--to", "2099-01"],
            f"argument --to: 2099-01 is after the last partition, {LAST_PARTITION} {ENDED}",
        ),
        (
            [shift_month(LAST_PARTITION, 1)],
            f"argument month: {shift_month(LAST_PARTITION, 1)} is after the last partition, {LAST_PARTITION} {ENDED}",
        ),
    ],
)
def test_the_runner_names_a_bad_month_argument(argv, message, fresh_home, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["ml_assets.runner", *argv])
    with pytest.raises(SystemExit) as exit_:
        runner.main()
    assert exit_.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == f"ml_assets.runner: error: {message}"
    assert [path.name for path in fresh_home.iterdir()] == ["dagster.yaml"], "nothing ran, nothing was written"


@pytest.fixture
def started_in_the_background():
    """SIGINT ignored, as a shell's background job (`make backfill &`) inherits it; put back afterwards."""
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    yield
    for sig, handler in handlers.items():
        signal.signal(sig, handler)


def test_a_runner_started_in_the_background_still_stops_on_sigterm_after_a_run(
    started_in_the_background, instance, tmp_path, monkeypatch
):
    """Dagster gives SIGTERM what SIGINT has once a run ends: a range's runner ignored SIGTERM between months."""
    monkeypatch.setenv("ML_ASSETS_SOURCE", str(tmp_path))  # an empty folder: each run fails at once
    materialize_month(instance, "2021-01", INGESTION, raise_on_error=False)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN, "the fault: a run left SIGTERM ignored"

    monkeypatch.setattr(sys, "argv", ["ml_assets.runner", "2021-01"])
    with pytest.raises(SystemExit, match="FAILED ingest_trips 2021-01: MonthNotPublishedError"):
        runner.main()
    assert signal.getsignal(signal.SIGTERM) is signal.default_int_handler  # SIGTERM stops it, as Ctrl-C would
    with pytest.raises(KeyboardInterrupt):
        os.kill(os.getpid(), signal.SIGTERM)


@pytest.mark.parametrize("error", [RuntimeError("\n"), AssertionError()])
def test_a_step_error_without_a_message_is_printed_with_its_class(error, instance, tmp_path, monkeypatch, capsys):
    """An error whose message is blank (a bare `assert`, a message of whitespace): the runner's step line raised
    IndexError for the blank one, inside Dagster's logging, so neither the step line nor the error was printed and
    `make run` said only that the run failed; a bare `assert` printed `AssertionError: AssertionError`."""
    from ml_assets.core.sources.directory import DirectorySource

    def fails(self, month):
        raise error

    monkeypatch.setenv("ML_ASSETS_SOURCE", str(tmp_path))
    monkeypatch.setattr(DirectorySource, "fetch", fails)
    monkeypatch.setattr(sys, "argv", ["ml_assets.runner", "2021-01"])
    with pytest.raises(SystemExit) as failed:
        runner.main()
    name = type(error).__name__
    assert f"FAILED ingest_trips 2021-01: {name}\n" in str(failed.value)
    assert f"  ingest_trips                           2021-01  FAILED  {name}\n" in capsys.readouterr().out


# --- automation requests only months that can train, and says what a waiting month waits for --


def report_cleaned(instance, *months: str) -> None:
    for month in months:
        instance.report_runless_asset_event(AssetMaterialization(asset_key="cleaned_trips", partition=month))


def evaluate_twice(instance, *months: str):
    """Automation's first tick on a fresh instance, then the tick after `months` of cleaned_trips landed."""
    from ml_assets.definitions import defs

    first = evaluate_automation_conditions(defs=defs, instance=instance)
    report_cleaned(instance, *months)
    return evaluate_automation_conditions(defs=defs, instance=instance, cursor=first.cursor)


def test_automation_never_requests_the_first_month(instance):
    result = evaluate_twice(instance, "2021-01", "2021-02")
    for asset in ("trip_features", "best_params", "trained_model", "trip_duration_predictions"):
        assert "2021-01" not in result.get_requested_partitions(AssetKey(asset))
    assert set(result.get_requested_partitions(AssetKey("trip_features"))) == {"2021-02"}


def labelled(result, label: str):
    if result.condition.get_label() == label:
        return result
    return next((found for child in result.child_results if (found := labelled(child, label))), None)


def partitions(result) -> set[str]:
    return set(result.true_subset.expensively_compute_partition_keys())


def test_the_evaluation_names_the_window_months_a_month_waits_for(instance):
    """2022-01 is in, the five months of its window (the default ML_ASSETS_TRAINING_MONTHS) are not: the UI's
    evaluation says so, per node, naming those months and no other."""
    result = evaluate_twice(instance, "2022-01")
    assert not result.get_requested_partitions(AssetKey("trip_features"))
    (features,) = [r for r in result.results if r.key == AssetKey("trip_features")]
    waiting = labelled(features, "window_months_missing")
    assert "2022-01" in partitions(waiting)
    (missing,) = [r for dep in waiting.child_results for r in dep.child_results if r.key == AssetKey("cleaned_trips")]
    before = {month for month in partitions(missing) if month < "2022-01"}  # later months' windows hold later ones
    assert before == {"2021-08", "2021-09", "2021-10", "2021-11", "2021-12"}
    assert "2022-01" not in partitions(missing)


def test_a_copied_home_writes_mlflow_artifacts_into_the_copy(tmp_path):
    import mlflow

    from ml_assets.core.tracking import ensure_experiment

    (tmp_path / "old").mkdir()
    ensure_experiment(f"sqlite:///{tmp_path / 'old' / 'mlflow.db'}", "trip_duration")
    shutil.copytree(tmp_path / "old", tmp_path / "copy")
    copy = f"sqlite:///{tmp_path / 'copy' / 'mlflow.db'}"
    ensure_experiment(copy, "trip_duration")
    client = mlflow.MlflowClient(copy)
    assert (
        client.get_experiment_by_name("trip_duration").artifact_location == (tmp_path / "copy" / "mlartifacts").as_uri()
    )
    old_location = (tmp_path / "old" / "mlartifacts").as_uri()
    assert client.get_experiment_by_name(f"trip_duration (artifacts in {old_location})") is not None
