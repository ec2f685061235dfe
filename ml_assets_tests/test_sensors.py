"""new_month_sensor against real sources and a real instance; the automation that trains after it; the schedule."""

from __future__ import annotations

import datetime
import gc
import os
import shutil

import pytest
from dagster import (
    AssetKey,
    AssetMaterialization,
    DagsterRunStatus,
    DefaultScheduleStatus,
    DefaultSensorStatus,
    Definitions,
    RunRequest,
    SensorResult,
    SkipReason,
    build_schedule_context,
    build_sensor_context,
    evaluate_automation_conditions,
)

from ml_assets import settings
from ml_assets.automation.conditions import WINDOW_READY
from ml_assets.automation.jobs import ingest_month_job
from ml_assets.automation.schedules import monthly_retrain_schedule
from ml_assets.automation.sensors import new_month_sensor
from ml_assets.core import month_plan
from ml_assets.core.month_plan import dump_cursor, fingerprint_hash, load_cursor
from ml_assets.core.sources import tlc
from ml_assets.partitions import monthly_partitions
from ml_assets.resources import build_resources
from ml_assets.resources.trip_source import TripSourceResource
from ml_assets.runner.runs import materialize_month
from ml_assets_tests.http_server import answering, serve_directory
from ml_assets_tests.support import FAST_CONFIG, ROOT, TLC_DATA, template_home, use_new_home

MAX_MONTHS_ENV = settings.SENSOR_MAX_MONTHS.variable
INGESTION = ["raw_trips", "cleaned_trips"]

MONTHS = ["2021-01", "2021-02", "2021-03", "2022-01", "2022-02", "2022-03", "2023-01", "2023-02"]
TRAINING = ["trip_features", "best_params", "trained_model"]


def tlc_file(month: str):
    return TLC_DATA / f"green_tripdata_{month}.parquet"


@pytest.fixture(autouse=True)
def default_max_months(monkeypatch):
    monkeypatch.delenv(MAX_MONTHS_ENV, raising=False)


@pytest.fixture
def files(tmp_path):
    """A directory of TLC files (copies, so tests may re-publish them) and a function adding more."""
    folder = tmp_path / "tlc-mirror"
    folder.mkdir()

    def publish(*months: str, content_of: str | None = None):
        for month in months:
            target = folder / f"green_tripdata_{month}.parquet"
            target.unlink(missing_ok=True)
            shutil.copyfile(tlc_file(content_of or month), target)
        return folder

    return publish


def directory_source(folder, tmp_path) -> TripSourceResource:
    return TripSourceResource(kind="directory", directory=str(folder), cache_dir=str(tmp_path / "cache"))


def sensor_context(instance, trip_source: TripSourceResource, cursor: str | None = None):
    """A tick's context, in the code location, as the daemon evaluates it (its jobs are looked at)."""
    from ml_assets.definitions import defs

    return build_sensor_context(
        instance=instance, cursor=cursor, resources={"trip_source": trip_source}, definitions=defs
    )


def tick(instance, trip_source: TripSourceResource, cursor: str | None = None):
    """One evaluation: (run requests, the cursor after the tick, skip message or None)."""
    context = sensor_context(instance, trip_source, cursor)
    result = new_month_sensor(context)
    if isinstance(result, SkipReason):
        return [], context.cursor, result.skip_message
    assert isinstance(result, SensorResult)
    for request in result.run_requests:
        assert isinstance(request, RunRequest)
    skip = result.skip_reason.skip_message if result.skip_reason else None
    return list(result.run_requests), result.cursor, skip


def months_of(requests) -> list[str]:
    return [request.partition_key for request in requests]


def report(instance, asset: str, month: str, **metadata):
    """A materialization of `asset` for `month`, as if a run had stored it."""
    instance.report_runless_asset_event(AssetMaterialization(asset_key=asset, partition=month, metadata=metadata))


def test_every_new_month_is_requested_oldest_first_a_few_per_tick(instance, files, tmp_path):
    source = directory_source(files(*reversed(MONTHS)), tmp_path)
    seen_keys, cursor, ticks = [], None, []
    for _ in range(4):
        requests, cursor, skip = tick(instance, source, cursor)
        ticks.append(months_of(requests))
        seen_keys += [request.run_key for request in requests]
    assert ticks == [MONTHS[:3], MONTHS[3:6], MONTHS[6:], []]
    assert skip and "nothing new" in skip
    assert len(set(seen_keys)) == len(seen_keys) == len(MONTHS)
    assert all(key.startswith(f"{month}:") for key, month in zip(seen_keys, MONTHS, strict=True))
    assert sorted(load_cursor(cursor)) == MONTHS


def test_max_months_per_tick_comes_from_the_environment(instance, files, tmp_path, monkeypatch):
    monkeypatch.setenv(MAX_MONTHS_ENV, "5")
    requests, _, _ = tick(instance, directory_source(files(*MONTHS), tmp_path))
    assert months_of(requests) == MONTHS[:5]


def test_no_duplicates_while_runs_are_pending(instance, files, tmp_path):
    """Requested months are neither materialized nor asked for again; run keys are deterministic."""
    source = directory_source(files("2021-01", "2021-02"), tmp_path)
    first, cursor, _ = tick(instance, source)
    assert months_of(first) == ["2021-01", "2021-02"]
    again, cursor_again, skip = tick(instance, source, cursor)
    assert again == [] and load_cursor(cursor_again) == load_cursor(cursor)
    assert "requested earlier but not materialized: 2021-01, 2021-02" in skip
    # A lost cursor repeats the same run keys, which Dagster never launches twice for one sensor.
    replay, _, _ = tick(instance, source)
    assert [r.run_key for r in replay] == [r.run_key for r in first]
    # A file landing later is picked up by comparison with the cursor, whatever happened meanwhile.
    files("2021-03")
    later, _, _ = tick(instance, source, cursor_again)
    assert months_of(later) == ["2021-03"]


def test_a_month_a_queued_run_or_backfill_will_ingest_is_not_requested_again(instance, files, tmp_path):
    """A month a backfill (or another run) has queued was requested again, and ingested twice."""
    import time

    from dagster._core.execution.backfill import BulkActionStatus, PartitionBackfill

    from ml_assets.definitions import defs

    source = directory_source(files("2021-01", "2021-02", "2021-03"), tmp_path)
    run = instance.create_run_for_job(
        job_def=defs.resolve_job_def("ingest_month"),
        tags={"dagster/partition": "2021-01"},
        status=DagsterRunStatus.NOT_STARTED,  # created, not yet launched
        asset_selection=frozenset({AssetKey("raw_trips"), AssetKey("cleaned_trips")}),
    )
    backfill = PartitionBackfill.from_asset_partitions(
        backfill_id="queued",
        asset_graph=defs.resolve_asset_graph(),
        partition_names=["2021-02"],
        asset_selection=[AssetKey("raw_trips"), AssetKey("cleaned_trips")],
        backfill_timestamp=time.time(),
        tags={},
        dynamic_partitions_store=instance,
        all_partitions=False,
        title=None,
        description=None,
        run_config=None,
    )
    instance.add_backfill(backfill)
    requests, cursor, _ = tick(instance, source)
    assert months_of(requests) == ["2021-03"]
    assert sorted(load_cursor(cursor)) == ["2021-03"]  # the others are the run's and the backfill's to ingest
    again, cursor, skip = tick(instance, source, cursor)
    assert again == [] and "queued or running in a run or backfill, not requested: 2021-01, 2021-02" in skip

    instance.report_run_canceled(run)
    instance.update_backfill(backfill.with_status(BulkActionStatus.CANCELED))
    assert months_of(tick(instance, source, cursor)[0]) == ["2021-01", "2021-02"]


def job_backfill(instance, job: str, months: list[str], submitted: str | None = None):
    """A backfill of `job` over `months`, as `dagster job backfill` or the job's page in the UI records it, whose
    runs the daemon has created up to `submitted`."""
    import time

    from dagster._core.execution.backfill import BulkActionStatus, PartitionBackfill
    from dagster._core.remote_origin import (
        RegisteredCodeLocationOrigin,
        RemotePartitionSetOrigin,
        RemoteRepositoryOrigin,
    )

    repository = RemoteRepositoryOrigin(
        code_location_origin=RegisteredCodeLocationOrigin(location_name="ml_assets"), repository_name="__repository__"
    )
    backfill = PartitionBackfill(
        backfill_id=f"{job}-backfill",
        status=BulkActionStatus.REQUESTED,
        from_failure=False,
        tags={},
        backfill_timestamp=time.time(),
        partition_set_origin=RemotePartitionSetOrigin(
            repository_origin=repository, partition_set_name=f"{job}_partition_set"
        ),
        partition_names=months,
        last_submitted_partition_name=submitted,
    )
    instance.add_backfill(backfill)
    return backfill


def test_the_months_a_job_backfill_has_still_to_launch_are_not_requested(instance, files, tmp_path):
    """A backfill of the ingest_month job (not of assets) was not looked at: the sensor requested the months it was
    about to ingest, and they were ingested twice. A backfill of a job that does not ingest holds back nothing."""
    from dagster._core.execution.backfill import BulkActionStatus

    source = directory_source(files("2021-01", "2021-02", "2021-03", "2022-01"), tmp_path)
    ingesting = job_backfill(instance, "ingest_month", ["2021-01", "2021-02", "2021-03"], submitted="2021-01")
    job_backfill(instance, "retrain_month", ["2022-01"])
    # 2021-01's run was launched and is over, unmaterialized (it failed): the month is the sensor's again.
    requests, cursor, _ = tick(instance, source)
    assert months_of(requests) == ["2021-01", "2022-01"]
    again, cursor, skip = tick(instance, source, cursor)
    assert again == [] and "queued or running in a run or backfill, not requested: 2021-02, 2021-03" in skip

    instance.update_backfill(ingesting.with_status(BulkActionStatus.CANCELED))
    assert months_of(tick(instance, source, cursor)[0]) == ["2021-02", "2021-03"]


def test_the_months_a_running_make_backfill_has_not_reached_are_not_requested(instance, files, tmp_path, monkeypatch):
    """`make backfill` runs a range month by month, so only the month it was at showed as in progress: the sensor
    requested the months after it, which the range then ingested again."""
    import logging

    from dagster import LoggerDefinition

    from ml_assets.runner.runs import RunFailed, run

    source = directory_source(files("2021-01", "2021-02", "2021-03"), tmp_path)
    (tmp_path / "unpublished").mkdir()  # the runner's own source has no month: its first run fails
    monkeypatch.setenv(settings.SOURCE.variable, str(tmp_path / "unpublished"))
    during = []

    class TickOnce(logging.Handler):
        def emit(self, record):
            if not during:
                during.append(tick(instance, source))

    def make(_context):
        logger = logging.Logger("tick_once")
        logger.addHandler(TickOnce())
        return logger

    with pytest.raises(RunFailed):
        run("2021-01", "2021-03", instance, loggers={"tick_once": LoggerDefinition(make)})
    ((requests, _, skip),) = during
    assert requests == [] and "queued or running in a run or backfill, not requested: 2021-01, 2021-02, 2021-03" in skip
    assert months_of(tick(instance, source)[0]) == ["2021-01", "2021-02", "2021-03"]  # the range stopped there


def test_materialized_months_are_not_requested(instance, files, tmp_path):
    folder = files("2021-01", "2021-02", "2021-03")
    report(instance, "raw_trips", "2021-01")  # no size recorded: the current file is adopted
    report(instance, "raw_trips", "2021-02", size_bytes=tlc_file("2021-02").stat().st_size)
    report(instance, "raw_trips", "2021-03", size_bytes=123)  # ingested from another version of the file
    requests, cursor, _ = tick(instance, directory_source(folder, tmp_path))
    assert months_of(requests) == ["2021-03"]
    assert requests[0].tags["ml_assets/trigger"] == "republished"
    assert sorted(load_cursor(cursor)) == ["2021-01", "2021-02", "2021-03"]


def test_months_adopted_on_a_tick_that_requests_nothing_are_in_its_cursor(instance, files, tmp_path):
    """Materialized months the cursor did not know are adopted as the baseline even when the tick has nothing to
    request: a month with no recorded size re-published later is then requested, not adopted again."""
    folder = files("2021-01", "2021-02")
    source = directory_source(folder, tmp_path)
    for month in ("2021-01", "2021-02"):
        report(instance, "raw_trips", month)  # no size recorded: the current file is adopted
    requests, cursor, skip = tick(instance, source)
    assert requests == [] and "nothing new" in skip
    assert sorted(load_cursor(cursor)) == ["2021-01", "2021-02"]

    files("2021-02", content_of="2022-02")
    requests, _, _ = tick(instance, source, cursor)
    assert [(r.partition_key, r.tags["ml_assets/trigger"]) for r in requests] == [("2021-02", "republished")]


def test_republished_month_is_requested_again(instance, files, tmp_path):
    folder = files("2021-01", "2021-02", "2021-03")
    source = directory_source(folder, tmp_path)
    first, cursor, _ = tick(instance, source)
    for month in months_of(first):
        report(instance, "raw_trips", month)
    assert tick(instance, source, cursor)[0] == []

    files("2021-02", content_of="2022-02")  # TLC re-publishes February: new size and mtime
    requests, cursor, _ = tick(instance, source, cursor)
    assert months_of(requests) == ["2021-02"]
    assert requests[0].tags["ml_assets/trigger"] == "republished"
    assert requests[0].run_key not in {r.run_key for r in first}
    assert tick(instance, source, cursor)[0] == []

    stat = (folder / "green_tripdata_2021-03.parquet").stat()  # same bytes, touched: a new mtime
    os.utime(folder / "green_tripdata_2021-03.parquet", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert months_of(tick(instance, source, cursor)[0]) == ["2021-03"]


def test_a_month_put_back_to_a_version_ingested_before_is_requested_under_a_new_run_key(instance, files, tmp_path):
    """A bad re-publication, then the original file moved back (its size and mtime as before): the sensor
    requested it under the run key of its first request, and Dagster, which launches a run key once per sensor,
    dropped the run; the month kept the bad version while the cursor named the good one."""
    folder = files("2021-01", "2021-02")
    source = directory_source(folder, tmp_path)
    month_file, original = folder / "green_tripdata_2021-02.parquet", tmp_path / "original.parquet"
    keys = []
    requests, cursor, _ = tick(instance, source)
    for content_of in ("2022-02", None):
        for request in requests:
            keys.append(request.run_key)
            report(instance, "raw_trips", request.partition_key)
        if content_of:  # re-published: the original kept aside as it was
            os.replace(month_file, original)
            files("2021-02", content_of=content_of)
        else:  # the original moved back
            os.replace(original, month_file)
        requests, cursor, _ = tick(instance, source, cursor)
        assert [(r.partition_key, r.tags["ml_assets/trigger"]) for r in requests] == [("2021-02", "republished")]
    assert requests[0].run_key not in keys
    assert tick(instance, source, cursor)[0] == []


def test_unreachable_directory_skips_and_keeps_the_cursor(instance, files, tmp_path):
    folder = files("2021-01")
    first, cursor, _ = tick(instance, directory_source(folder, tmp_path))
    shutil.rmtree(folder)
    context = sensor_context(instance, directory_source(folder, tmp_path), cursor)
    result = new_month_sensor(context)
    assert isinstance(result, SkipReason)
    assert "unreachable" in result.skip_message and str(folder) in result.skip_message
    assert context.cursor == cursor


def test_tlc_source_over_http(instance, files, tmp_path):
    folder = files("2021-01", "2021-02")
    with serve_directory(folder) as server:
        source = TripSourceResource(kind="tlc", tlc_url=server.url, cache_dir=str(tmp_path / "cache"))
        first, cursor, _ = tick(instance, source)
        assert months_of(first) == ["2021-01", "2021-02"]  # every other month answers 404: not published
        assert server.count("HEAD") == len(monthly_partitions.get_partition_keys())
        assert server.count("GET") == 0
        fingerprints = load_cursor(cursor)

        assert tick(instance, source, cursor)[0] == []
        files("2021-02", content_of="2022-02")  # new ETag, size and Last-Modified
        files("2021-03")
        requests, cursor, _ = tick(instance, source, cursor)
        assert [(r.partition_key, r.tags["ml_assets/trigger"]) for r in requests] == [
            ("2021-02", "republished"),
            ("2021-03", "new"),
        ]
        assert load_cursor(cursor)["2021-01"] == fingerprints["2021-01"]
        assert load_cursor(cursor)["2021-02"] != fingerprints["2021-02"]

    # The server is gone: the tick is skipped quickly, the cursor kept.
    context = sensor_context(instance, source, cursor)
    result = new_month_sensor(context)
    assert isinstance(result, SkipReason) and "unreachable" in result.skip_message
    assert context.cursor == cursor


def test_a_month_that_fails_or_answers_late_waits_for_the_next_tick_and_the_others_go_ahead(
    instance, files, tmp_path, monkeypatch, caplog
):
    """One month answering 500 (a broken object behind the CDN) had skipped every tick as if the source were
    unreachable, holding back every other month; a slow one could run the tick past Dagster's 60 s."""
    folder = files("2021-01", "2021-02", "2021-03")
    monkeypatch.setattr(month_plan, "PROBE_SECONDS", 3.0)
    with serve_directory(folder) as server:
        server.always = {"green_tripdata_2021-02.parquet": 500, "green_tripdata_2021-03.parquet": "hang"}
        source = TripSourceResource(kind="tlc", tlc_url=server.url, cache_dir=str(tmp_path / "cache"))
        context = sensor_context(instance, source)
        context.log.addHandler(caplog.handler)  # a tick's log is a logger of its own, not under the root one
        result = new_month_sensor(context)
        assert months_of(result.run_requests) == ["2021-01"]
        (warning,) = [
            record.getMessage() for record in caplog.records if "not checked this tick" in record.getMessage()
        ]
        assert "2021-02: " in warning and "HTTP 500" in warning
        assert "2021-03: not checked within the tick's 3 s" in warning

        server.always = {}  # both answer again: the next tick requests them
        requests, _, _ = tick(instance, source, result.cursor)
        assert months_of(requests) == ["2021-02", "2021-03"]


@pytest.mark.parametrize("request_timeout", [0.3, None], ids=["requests-time-out", "tick-ends-first"])
def test_months_that_answer_errors_are_named_with_them_when_every_other_month_times_out(
    request_timeout, instance, tmp_path, monkeypatch
):
    """Two months answering 500 while every other one timed out (its requests, or the tick's probing) skipped
    the tick as if the source were unreachable, naming one month's error; only the others went unanswered."""
    monkeypatch.setattr(month_plan, "PROBE_SECONDS", 3.0)
    if request_timeout is not None:
        monkeypatch.setattr(tlc, "PROBE_TIMEOUT_SECONDS", request_timeout)
    months = monthly_partitions.get_partition_keys()
    erroring = months[-2:]  # probed first, newest first
    with serve_directory(tmp_path) as server:
        server.always = {f"green_tripdata_{month}.parquet": "hang" for month in months}
        server.always |= {f"green_tripdata_{month}.parquet": 500 for month in erroring}
        source = TripSourceResource(kind="tlc", tlc_url=server.url, cache_dir=str(tmp_path / "cache"))
        requests, cursor, skip = tick(instance, source, dump_cursor({"2021-01": "abc"}))
    assert requests == [] and load_cursor(cursor) == {"2021-01": "abc"}
    assert f"no month of tlc {server.url} could be checked" in skip and "is unreachable" not in skip
    said = dict(part.split(": ", 1) for part in skip.split(": ", 1)[1].split("; "))
    assert sorted(said) == months
    for month in erroring:
        assert said[month] == f"{server.url}/green_tripdata_{month}.parquet unavailable after 2 attempts: HTTP 500"
    for month in months[:-2]:
        assert said[month] == "not checked within the tick's 3 s" or (
            said[month].startswith("unreachable: ") and "timed out" in said[month]
        ), said[month]


def test_a_wrong_tlc_url_where_every_month_answers_403_is_named_not_nothing_new(instance, files, tmp_path):
    """TLC's CDN answers 403 for a file it does not have, so a wrong base URL read as "nothing new" forever.
    A source that lacks only the first partition's month is no wrong URL."""
    with answering((403, [], b"")) as server:
        url = f"{server.url}/wrong-path"
        source = TripSourceResource(kind="tlc", tlc_url=url, cache_dir=str(tmp_path / "cache"))
        requests, cursor, skip = tick(instance, source)
    assert requests == [] and load_cursor(cursor) == {}
    first = monthly_partitions.get_partition_keys()[0]
    looked_for = f"{url}/green_tripdata_{first}.parquet"
    assert f"tlc {url} publishes no month, not even the first partition {first} ({looked_for})" in skip
    assert "nothing new" not in skip

    with serve_directory(files("2021-02", "2021-03")) as server:
        source = TripSourceResource(kind="tlc", tlc_url=server.url, cache_dir=str(tmp_path / "cache"))
        requests, cursor, _ = tick(instance, source)
        assert months_of(requests) == ["2021-02", "2021-03"]
        requests, _, skip = tick(instance, source, cursor)
    assert requests == [] and "nothing new" in skip and "publishes no month" not in skip


def test_a_month_found_published_that_then_answers_403_is_warned_about(instance, files, tmp_path, caplog):
    folder = files("2021-01", "2021-02")
    with serve_directory(folder) as server:
        source = TripSourceResource(kind="tlc", tlc_url=server.url, cache_dir=str(tmp_path / "cache"))
        first, cursor, _ = tick(instance, source)
        for month in months_of(first):
            report(instance, "raw_trips", month)
        server.always = {"green_tripdata_2021-01.parquet": 403}
        requests, after, skip = tick(instance, source, cursor)
        assert requests == [] and load_cursor(after) == load_cursor(cursor)  # what was ingested stays
        looked_for = f"{server.url}/green_tripdata_2021-01.parquet"
        assert (
            f"tlc {server.url} no longer publishes 2021-01, found published by an earlier tick ({looked_for})" in skip
        )

        files("2021-03")  # a new month still goes ahead, with the warning in the tick's log
        context = sensor_context(instance, source, after)
        context.log.addHandler(caplog.handler)
        assert months_of(new_month_sensor(context).run_requests) == ["2021-03"]
        assert any("no longer publishes 2021-01" in record.getMessage() for record in caplog.records)


LAST_MODIFIED = "Tue, 01 Jun 2021 00:00:00 GMT"


def head_answer(etag: str, last_modified: str = LAST_MODIFIED):
    """What a CDN answers a HEAD for a month's file of 1000 bytes (every month alike)."""
    return (200, [("Content-Length", "1000"), ("ETag", etag), ("Last-Modified", last_modified)], b"")


def test_an_etag_that_changes_on_every_request_is_no_re_publication(instance, tmp_path):
    """A misconfigured CDN that hands out a new ETag on each request had every month re-requested every tick."""
    with answering(head_answer('"a"')) as server:
        source = TripSourceResource(kind="tlc", tlc_url=server.url, cache_dir=str(tmp_path / "cache"))
        first, cursor, _ = tick(instance, source)
        server.answers = [head_answer('"b"')]  # same size and Last-Modified
        again, cursor, _ = tick(instance, source, cursor)
        assert months_of(first) and not set(months_of(first)) & set(months_of(again))
        server.answers = [head_answer('"c"', "Wed, 02 Jun 2021 00:00:00 GMT")]  # re-published: a new Last-Modified
        third, _, _ = tick(instance, source, cursor)
    assert [(r.partition_key, r.tags["ml_assets/trigger"]) for r in third] == [
        (month, "republished") for month in months_of(first)
    ]


def test_a_cursor_written_before_etags_were_told_apart_re_requests_nothing(instance, tmp_path):
    """The hash a cursor of earlier versions holds for a month (of its size, ETag and Last-Modified) still matches."""
    earlier = "57fd2789f19b640f"  # 1000 bytes, ETag "a", LAST_MODIFIED
    with answering(head_answer('"a"')) as server:
        source = TripSourceResource(kind="tlc", tlc_url=server.url, cache_dir=str(tmp_path / "cache"))
        requests, cursor, _ = tick(instance, source, dump_cursor({"2021-01": earlier}))
        assert "2021-01" not in months_of(requests) and months_of(requests)
        server.answers = [head_answer('"b"')]  # and the cursor now tells a new ETag alone from a re-publication
        assert "2021-01" not in months_of(tick(instance, source, cursor)[0])


def test_fingerprint_hash_ignores_key_order():
    assert fingerprint_hash({"size": 1, "etag": "x"}) == fingerprint_hash({"etag": "x", "size": 1})
    assert fingerprint_hash({"size": 1, "etag": "x"}) != fingerprint_hash({"size": 1, "etag": "y"})
    assert fingerprint_hash({"url": "http://a/f", "size": 1}) == fingerprint_hash({"url": "http://b/f", "size": 1})


def requested(result, asset: str) -> set[str]:
    return set(result.get_requested_partitions(AssetKey(asset)))


@pytest.mark.slow
def test_training_waits_for_the_whole_window(instance, files, monkeypatch):
    """The sensor's job ingests one month; features and models of M wait until every window month is in."""
    from ml_assets.definitions import all_asset_checks, all_assets, defs

    monkeypatch.setenv("ML_ASSETS_SOURCE", str(files("2021-01", "2021-02", "2021-03")))
    ingest = Definitions(
        assets=all_assets, asset_checks=all_asset_checks, resources=build_resources(), jobs=[ingest_month_job]
    ).resolve_job_def(ingest_month_job.name)

    def ingest_month(month: str):
        result = ingest.execute_in_process(partition_key=month, instance=instance)
        assert result.success  # a month's ingestion never needs another month, whatever the order
        assert month in instance.get_materialized_partitions(AssetKey("cleaned_trips"))

    result = evaluate_automation_conditions(defs=defs, instance=instance)
    assert result.total_requested == 0

    def requested_but_monitoring(result) -> int:  # model_performance scores a month as soon as it is in
        return result.total_requested - len(requested(result, "model_performance"))

    ingest_month("2021-03")  # the window of 2021-03 is 2021-01..2021-03 (nothing exists before 2021-01)
    result = evaluate_automation_conditions(defs=defs, instance=instance, cursor=result.cursor)
    assert requested_but_monitoring(result) == 0

    ingest_month("2021-02")
    result = evaluate_automation_conditions(defs=defs, instance=instance, cursor=result.cursor)
    assert requested_but_monitoring(result) == 0  # 2021-02 and 2021-03 both still wait for 2021-01

    ingest_month("2021-01")
    result = evaluate_automation_conditions(defs=defs, instance=instance, cursor=result.cursor)
    for asset in TRAINING:  # in one tick: features, then params and model of the same month after them
        assert requested(result, asset) == {"2021-02", "2021-03"}  # 2021-01 has nothing to train on

    result = evaluate_automation_conditions(defs=defs, instance=instance, cursor=result.cursor)
    assert result.total_requested == 0  # handled: not requested twice


def test_training_is_not_limited_to_the_latest_partition(instance):
    """Plain eager() would only ever train the latest month; WINDOW_READY trains every month."""
    from ml_assets.definitions import defs

    for asset in TRAINING:
        assert defs.resolve_assets_def(asset).automation_conditions_by_key[AssetKey(asset)] == WINDOW_READY
    assert "in_latest_time_window" not in repr(WINDOW_READY)
    result = evaluate_automation_conditions(defs=defs, instance=instance)
    from ml_assets.core.months import month_range, shift_month
    from ml_assets.partitions import TRAINING_MONTHS

    # The full window of 2022-01 (the default window's months before it), then 2022-01 and 2022-02 themselves.
    for month in month_range(shift_month("2022-01", -TRAINING_MONTHS), "2022-02"):
        report(instance, "cleaned_trips", month)
    result = evaluate_automation_conditions(defs=defs, instance=instance, cursor=result.cursor)
    assert requested(result, "trip_features") == {"2022-01", "2022-02"}  # windows complete, months old


def test_a_month_scored_and_trained_in_one_tick_keeps_every_check_of_its_run(instance):
    """When the month a tick scores (model_performance) is also the month it trains, both go in one run;
    that run must still hold trained_model's model_gate (predictions wait for it to name a champion)
    and every other check of its assets. A check bundled into model_performance's own op once made
    Dagster request that check alone, and the run lost the rest."""
    from dagster._core.definitions.automation_tick_evaluation_context import build_run_requests

    from ml_assets.definitions import defs

    result = evaluate_automation_conditions(defs=defs, instance=instance)
    for month in ("2021-01", "2021-02"):
        report(instance, "cleaned_trips", month)
    result = evaluate_automation_conditions(defs=defs, instance=instance, cursor=result.cursor)
    assert "2021-02" in requested(result, "model_performance") & requested(result, "trained_model")

    # Dagster's own step from a tick's requested subsets to its runs (dagster 1.13.27), as the daemon takes it.
    graph = defs.resolve_asset_graph()
    requests = build_run_requests(result._requested_subsets, graph, run_tags={}, emit_backfills=False)
    (run,) = [request for request in requests if request.partition_key == "2021-02"]
    assert AssetKey("trained_model") in run.asset_selection
    checks = graph.get_check_keys_for_assets(set(run.asset_selection))
    assert run.asset_check_keys is None or set(run.asset_check_keys) == checks, run.asset_check_keys
    assert any(check.name == "model_gate" for check in checks)


@pytest.fixture(scope="module")
def first_quarter(tmp_path_factory):
    """Automation's first evaluation on a fresh home, then real 2021-01 to 2021-03 ingested from a folder;
    built once for the module: (the home, the folder, the evaluation's cursor)."""
    from ml_assets.definitions import defs

    root = tmp_path_factory.mktemp("first_quarter")
    folder = root / "tlc-mirror"
    folder.mkdir()
    for month in ("2021-01", "2021-02", "2021-03"):
        shutil.copyfile(tlc_file(month), folder / tlc_file(month).name)
    with template_home(root, ML_ASSETS_SOURCE=str(folder)) as instance:
        cursor = evaluate_automation_conditions(defs=defs, instance=instance).cursor
        for month in ("2021-01", "2021-02", "2021-03"):
            materialize_month(instance, month, INGESTION)
    return root / "dagster_home", folder, cursor


@pytest.mark.slow
@pytest.mark.parametrize(
    ("stricter", "failed_check"),
    [
        ({"min_rows": 10**9}, ("raw_trips", "row_count")),  # cleaned_trips' rules are then not evaluated
        ({"max_dropped_share": 0.0}, ("cleaned_trips", "dropped_share")),
    ],
)
def test_a_failed_blocking_check_keeps_its_month_out_of_training(
    stricter, failed_check, first_quarter, tmp_path, monkeypatch
):
    """A stored month ingested again with a stricter threshold (e.g. from the launchpad) fails a blocking check:
    its stored value stays, and neither automation nor the schedule trains a month whose window holds it until it
    passes again (the schedule had launched training on it)."""
    from dagster import DagsterInstance

    from ml_assets.definitions import defs

    home, folder, cursor = first_quarter  # this test's copy of the home; the folder is only read
    use_new_home(tmp_path / "dagster_home", monkeypatch, template=home)
    monkeypatch.setenv("ML_ASSETS_SOURCE", str(folder))
    config = {"ops": {"ingest_trips": {"config": stricter}}}
    with DagsterInstance.get() as instance:
        checked = materialize_month(instance, "2021-02", INGESTION, run_config=config, raise_on_error=False)
        assert not checked.success
        evaluations = checked.get_asset_check_evaluations()
        failed = [(e.asset_key.to_user_string(), e.check_name, e.partition) for e in evaluations if not e.passed]
        assert failed == [(*failed_check, "2021-02")]
        records = instance.fetch_materializations(AssetKey("cleaned_trips"), limit=10).records
        assert len(records) == 3  # nothing replaced
        result = evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
        assert not requested(result, "trip_features")  # both windows hold 2021-02; 2021-01 has nothing to train on
        skip = schedule_tick(instance)
        assert isinstance(skip, SkipReason)
        assert "not retraining 2021-03: " in skip.skip_message
        assert f"{failed_check[0]}:{failed_check[1]} failed for 2021-02" in skip.skip_message

        materialize_month(instance, "2021-02", INGESTION)  # the usual thresholds: it passes again
        result = evaluate_automation_conditions(defs=defs, instance=instance, cursor=result.cursor)
        assert requested(result, "trip_features") == {"2021-02", "2021-03"}
        assert schedule_tick(instance).partition_key == "2021-03"


def test_training_waits_while_a_window_month_is_being_ingested(instance):
    """A month's features wait while an earlier window month is (re)ingested, then follow."""
    from ml_assets.definitions import defs

    result = evaluate_automation_conditions(defs=defs, instance=instance)
    for month in ("2021-01", "2021-02", "2021-03"):
        report(instance, "cleaned_trips", month)
    run = instance.create_run_for_job(
        job_def=defs.resolve_job_def("ingest_month"),
        tags={"dagster/partition": "2021-02"},
        status=DagsterRunStatus.STARTED,
        asset_selection=frozenset({AssetKey("raw_trips"), AssetKey("cleaned_trips")}),
    )
    result = evaluate_automation_conditions(defs=defs, instance=instance, cursor=result.cursor)
    assert not requested(result, "trip_features") & {"2021-02", "2021-03"}
    instance.report_run_canceled(run)  # the run is over (how it ended does not matter here)
    result = evaluate_automation_conditions(defs=defs, instance=instance, cursor=result.cursor)
    assert requested(result, "trip_features") == {"2021-02", "2021-03"}


def test_a_month_scored_before_an_earlier_model_was_trained_is_scored_again_once_it_is(instance):
    """Catching up on several months, automation scores 2021-03 while the model tested on 2021-02 still trains:
    2021-03's table lacked that model for good (and Dagster did not mark it stale). Once the model is registered,
    2021-03 is scored again, once: a run that fails is not launched again until another model is trained."""
    from ml_assets.definitions import defs

    def launch(asset: str, month: str, status=DagsterRunStatus.STARTED):
        """A run of `asset` for `month` as the daemon launches it (its materialization planned)."""
        job = "retrain_month" if asset == "trained_model" else "__ASSET_JOB"
        return instance.create_run_for_job(
            job_def=defs.resolve_job_def(job),
            tags={"dagster/partition": month},
            status=status,
            asset_selection=frozenset({AssetKey(asset)}),
        )

    result = evaluate_automation_conditions(defs=defs, instance=instance)
    for month in ("2021-01", "2021-02", "2021-03"):
        report(instance, "cleaned_trips", month)
    result = evaluate_automation_conditions(defs=defs, instance=instance, cursor=result.cursor)
    assert requested(result, "model_performance") == {"2021-01", "2021-02", "2021-03"}
    training = launch("trained_model", "2021-02")
    for month in ("2021-01", "2021-02", "2021-03"):
        report(instance, "model_performance", month)  # scored while 2021-02's model trains
    result = evaluate_automation_conditions(defs=defs, instance=instance, cursor=result.cursor)
    assert not requested(result, "model_performance")

    report(instance, "trained_model", "2021-02")  # registered, and its run ends
    instance.report_run_canceled(training)
    result = evaluate_automation_conditions(defs=defs, instance=instance, cursor=result.cursor)
    assert requested(result, "model_performance") == {"2021-03"}  # 2021-02's own month does not score its model
    rescoring = launch("model_performance", "2021-03")
    result = evaluate_automation_conditions(defs=defs, instance=instance, cursor=result.cursor)
    assert not requested(result, "model_performance")  # requested once
    instance.report_run_failed(rescoring)
    result = evaluate_automation_conditions(defs=defs, instance=instance, cursor=result.cursor)
    assert not requested(result, "model_performance")  # a failed try is not launched again and again

    report(instance, "trained_model", "2021-01")  # a month trained again (from the UI)
    result = evaluate_automation_conditions(defs=defs, instance=instance, cursor=result.cursor)
    assert requested(result, "model_performance") == {"2021-02", "2021-03"}


def test_months_are_scored_again_after_every_earlier_model_they_miss_and_none_is_training():
    from ml_assets.core.performance import months_to_score_again

    scored = {"2021-02": 5, "2021-03": 6, "2021-04": 9}
    assert months_to_score_again(scored, {"2021-01": 4, "2021-02": 7, "2021-03": 8}, set()) == {"2021-03"}
    assert months_to_score_again(scored, {"2021-03": 10}, set()) == {"2021-04"}
    assert months_to_score_again(scored, {"2021-03": 10}, {"2021-02"}) == set()  # wait: 2021-02 still to train
    assert months_to_score_again(scored, {"2021-03": 10}, {"2021-04"}) == {"2021-04"}  # its own month's model
    assert months_to_score_again({}, {"2021-01": 1}, set()) == set()


@pytest.mark.slow
def test_a_model_the_gate_refused_leaves_its_month_s_predictions_to_the_champion(instance, monkeypatch):
    """model_gate's refusal is a WARN that blocks nothing, and predictions score the month with the champion:
    the failed check had held the month's predictions back for good (a blocking check of a dependency)."""
    from ml_assets.definitions import defs

    monkeypatch.setenv("ML_ASSETS_SYNTHETIC_ROWS", "5000")
    result = evaluate_automation_conditions(defs=defs, instance=instance)
    for month in ("2021-01", "2021-02"):
        assert materialize_month(instance, month, INGESTION).success
    result = evaluate_automation_conditions(defs=defs, instance=instance, cursor=result.cursor)
    assert requested(result, "trip_features") == {"2021-02"}
    result = evaluate_automation_conditions(defs=defs, instance=instance, cursor=result.cursor)  # while it runs
    crippled = {"ops": {**FAST_CONFIG["ops"], "trained_model": {"config": {"num_boost_round": 1}}}}
    trained = materialize_month(instance, "2021-02", ["trip_features", "best_params", "trained_model"], crippled)
    (gate,) = [e for e in trained.get_asset_check_evaluations() if e.check_name == "model_gate"]
    assert not gate.passed  # one round does not beat the baseline
    result = evaluate_automation_conditions(defs=defs, instance=instance, cursor=result.cursor)
    assert requested(result, "trip_duration_predictions") == {"2021-02"}


def test_definitions_wire_sensor_automation_and_schedule():
    from ml_assets.definitions import defs

    repo = defs.get_repository_def()
    sensors = {s.name: s for s in repo.sensor_defs}
    assert sensors["new_month_sensor"].default_status == DefaultSensorStatus.RUNNING
    assert sensors["training_automation_sensor"].default_status == DefaultSensorStatus.RUNNING
    assert "default_automation_condition_sensor" not in sensors  # it would start STOPPED
    assert sensors["new_month_sensor"].job_name == "ingest_month"
    assert repo.get_schedule_def("monthly_retrain_schedule").default_status == DefaultScheduleStatus.STOPPED
    ingest = defs.resolve_job_def("ingest_month")
    assert {key.to_user_string() for key in ingest.asset_layer.executable_asset_keys} == {"raw_trips", "cleaned_trips"}
    retrain = defs.resolve_job_def("retrain_month")
    assert {key.to_user_string() for key in retrain.asset_layer.executable_asset_keys} == set(TRAINING)


def test_every_training_run_carries_the_tag_the_run_queue_limits_to_one():
    """Automation's runs and every run of retrain_month (the schedule's among them: they had no tag, so a
    scheduled retrain ran beside automation's training, both on every core) queue behind one another."""
    import yaml

    from ml_assets.automation.jobs import TRAINING_TAG
    from ml_assets.definitions import defs

    limits = yaml.safe_load((ROOT / "deploy" / "dagster.yaml").read_text())["concurrency"]["runs"]
    (limit,) = [rule for rule in limits["tag_concurrency_limits"] if rule["key"] == TRAINING_TAG[0]]
    assert (limit["value"], limit["limit"]) == (TRAINING_TAG[1], 1)
    sensor = defs.get_repository_def().get_sensor_def("training_automation_sensor")
    assert sensor.run_tags[TRAINING_TAG[0]] == TRAINING_TAG[1]
    schedule = defs.get_repository_def().get_schedule_def("monthly_retrain_schedule")
    assert defs.resolve_job_def(schedule.job_name).tags[TRAINING_TAG[0]] == TRAINING_TAG[1]


TICK_TIME = datetime.datetime(2026, 11, 2, 6, tzinfo=datetime.timezone.utc)


def schedule_tick(instance, when: datetime.datetime | None = TICK_TIME):
    """One evaluation of the schedule. Its context is closed here, as the daemon closes it: the instance it opens
    for `context.instance` otherwise stayed Dagster's current one until garbage collection closed it, in the middle
    of a later test, and left that test's runs an instance already gone ("undefined DagsterInstance weakref")."""
    with build_schedule_context(instance=instance, scheduled_execution_time=when) as context:
        return monthly_retrain_schedule(context)


def test_a_schedule_tick_leaves_dagster_s_current_instance_as_it_found_it(instance):
    """The instance a tick opens is closed with it, so the runs of the rest of the test (and of the tests after it)
    see the test's own instance, whenever the garbage collector runs."""
    from dagster._core.storage.defs_state.base import DefsStateStorage

    for month in ("2021-01", "2021-02"):
        report(instance, "cleaned_trips", month)
    assert isinstance(schedule_tick(instance), RunRequest)  # the path that read the instance most
    assert DefsStateStorage.get() is instance.defs_state_storage
    gc.collect()
    assert DefsStateStorage.get() is instance.defs_state_storage


def test_schedule_retrains_the_latest_complete_month(instance):
    assert isinstance(schedule_tick(instance), SkipReason)
    report(instance, "cleaned_trips", "2021-01")
    assert isinstance(schedule_tick(instance), SkipReason)  # the first month has nothing to train on
    for month in ("2021-02", "2021-03", "2022-03"):  # 2022-03 lacks 2021-12..2022-02
        report(instance, "cleaned_trips", month)
    request = schedule_tick(instance)
    assert isinstance(request, RunRequest)
    assert request.partition_key == "2021-03"
    assert request.run_key == "retrain:2021-03:2026-11-02"

    # A tick evaluated late (the daemon was down): the month of its scheduled time had not ended then.
    for month in ("2021-09", "2021-10", "2021-11", "2021-12", "2022-01", "2022-02"):
        report(instance, "cleaned_trips", month)  # with 2022-03 above, the whole windows of 2022-02 and 2022-03
    late = schedule_tick(instance, datetime.datetime(2022, 3, 2, 6, tzinfo=datetime.timezone.utc))
    assert (late.partition_key, late.run_key) == ("2022-02", "retrain:2022-02:2022-03-02")


def test_schedule_evaluated_without_a_scheduled_time_uses_the_current_time(instance):
    """A preview (`dagster schedule preview`, build_schedule_context()) has no scheduled time: the schedule raised."""
    for month in ("2021-01", "2021-02"):
        report(instance, "cleaned_trips", month)
    request = schedule_tick(instance, when=None)
    assert isinstance(request, RunRequest) and request.partition_key == "2021-02"
    today = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    assert request.run_key == f"retrain:2021-02:{today}"


def test_the_schedule_names_only_the_failed_checks_of_the_window_it_holds_back(instance):
    """A blocking check failed within the month's window and one failed on a later month: the skip names the first
    alone, as the later month is no reason to hold this one back."""
    from dagster import AssetCheckEvaluation, AssetCheckSeverity

    for month in ("2021-01", "2021-02", "2021-03"):
        report(instance, "cleaned_trips", month)
    for month in ("2021-02", "2021-05"):
        failed = AssetCheckEvaluation(
            asset_key=AssetKey("raw_trips"),
            check_name="row_count",
            passed=False,
            partition=month,
            severity=AssetCheckSeverity.ERROR,
        )
        instance.report_runless_asset_event(failed)
    skip = schedule_tick(instance)
    assert isinstance(skip, SkipReason)
    assert "not retraining 2021-03: " in skip.skip_message
    assert "raw_trips:row_count failed for 2021-02" in skip.skip_message
    assert "2021-05" not in skip.skip_message
