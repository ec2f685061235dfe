"""The Dagster UI in headless Chromium, clicked as a person would: lineage, a month, a backfill, a failed check.

One `dagster dev` (webserver and daemon) serves every test of the module, on a free port of
127.0.0.1, with its own DAGSTER_HOME. The person first turns the sensors off on the Automation
page, so that only what they launch runs. Screenshots of each step go to the folder printed at
the start (run pytest with -s to see it).
"""

import os
import re
import shutil
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from dagster import AssetKey, DagsterInstance, DagsterRunStatus, RunsFilter

from ml_assets.core.months import shift_month
from ml_assets_tests import forked
from ml_assets_tests.support import (
    ASSETS,
    ROOT,
    SAMPLE_EVERY,
    TLC_DATA,
    drop_month,
    free_port,
    http_ok,
    start_dagster_dev,
    stop_process_group,
    wait_until,
)

playwright_api = pytest.importorskip("playwright.sync_api")
# What the UI draws after a page loads (a partition's metadata, a run's status) may take longer than Playwright's
# 5 s when the rest of the suite shares the two cores: trained_model's Partitions tab once showed no `rmse` in time.
playwright_api.expect.set_options(timeout=30_000)
pytestmark = pytest.mark.ui

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# The backfill starts after MONTH, which the one-month test trains: 2023-04 still trains on a month of the
# backfill, 2023-03 on one materialized before it.
FIRST, MONTH, BACKFILL, AFTER_BACKFILL = "2023-01", "2023-02", ["2023-03", "2023-04"], "2023-05"
BAD_MONTH = "2023-06"
TRAINING_MONTHS = 1  # ML_ASSETS_TRAINING_MONTHS of the dagster dev below: each month trains on the one before
MODEL_PLOTS = ["predicted_vs_actual", "residuals", "feature_importance", "rmse"]
WAIT_SECONDS = 420  # per month: a shared 2-core machine trains one month in 1 to 3 minutes
FINISHED = [DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED]


def write_bad_month(source: Path) -> None:
    """A month whose trip_distance holds one value that is no number: raw_trips' `schema` check must fail."""
    table = pq.read_table(TLC_DATA / f"green_tripdata_{BAD_MONTH}.parquet")[::SAMPLE_EVERY]
    values = pc.cast(table["trip_distance"], pa.string()).to_pylist()
    values[100] = "n/a"
    table = table.set_column(table.schema.get_field_index("trip_distance"), "trip_distance", pa.array(values))
    pq.write_table(table, source / f"green_tripdata_{BAD_MONTH}.parquet")


class DagsterUI:
    """The browser page on `dagster dev`, the instance behind it, and where screenshots go."""

    def __init__(self, page, url: str, instance: DagsterInstance, shots: Path, log: Path):
        self.page, self.url, self.instance, self.shots, self.log = page, url, instance, shots, log
        self.backfill_runs = []  # the runs of the backfill test, for the test after it

    def open(self, path: str):
        self.page.goto(self.url + path)
        return self.page

    def shot(self, name: str) -> None:
        # Dialogs fade in: "disabled" ends CSS animations and transitions before the picture is taken.
        self.page.screenshot(path=self.shots / f"{name}.png", full_page=True, animations="disabled")

    def launch(self, path: str, button: str, partitions: str, shot: str, along: str | None = None) -> None:
        """Materialize from an asset page: the partition dialog, the partitions typed in, then Launch.

        `along`: the asset the UI says must be materialized with the chosen one (one op makes both); confirmed.
        """
        page = self.open(path)
        page.get_by_role("button", name=re.compile(button)).first.click()
        if along:
            alert = page.get_by_role("dialog").filter(has_text="Additional assets will be materialized")
            playwright_api.expect(alert.get_by_text(along, exact=True)).to_be_visible()
            self.shot(f"{shot}-along")
            alert.get_by_role("button", name="Confirm").click()
            playwright_api.expect(alert).to_be_hidden()
        dialog = page.get_by_role("dialog")
        typed = dialog.get_by_placeholder(re.compile("^ex: "))
        typed.fill(partitions)
        typed.press("Enter")  # the dialog reads the selection when it is submitted
        launch = dialog.get_by_role("button", name=re.compile("^Launch"))
        playwright_api.expect(launch).to_be_enabled()
        self.shot(shot)
        launch.click()
        playwright_api.expect(dialog).to_be_hidden()

    def materialized_at(self, asset: str, month: str) -> float:
        """When `asset` for `month` was last materialized (0 if never)."""
        records = self.instance.fetch_materializations(AssetKey(asset), limit=100).records
        return max((r.timestamp for r in records if r.partition_key == month), default=0.0)

    def wait_for(self, condition, what: str, seconds: float = WAIT_SECONDS) -> None:
        """Poll `condition`; on a timeout, a screenshot of the page as it was and dagster dev's log."""
        try:
            wait_until(condition, what, seconds, poll=3, log=lambda: self.log.read_text()[-6000:])
        except AssertionError:
            self.shot(f"timeout {what}")
            raise

    def stop_sensors(self) -> None:
        page = self.open("/automation")
        page.get_by_role("button", name="Skip").click()  # "Join the Dagster community": a fresh instance asks once
        running = page.locator("input[type=checkbox]:checked")  # the sensors' on/off switches
        playwright_api.expect(running).to_have_count(3)  # new_month, training_automation, pool_watch
        for left in (2, 1, 0):
            running.first.locator("xpath=..").click()  # the switch's label: the input itself is hidden
            playwright_api.expect(running).to_have_count(left)  # the sensor stopped, its switch redrawn
        self.shot("0-sensors-stopped")


@pytest.fixture(scope="module")
def ui(tmp_path_factory):
    root = tmp_path_factory.mktemp("ui")
    home, source = root / "dagster_home", root / "source"
    for folder in (home, source):
        folder.mkdir()
    shots = Path(tempfile.mkdtemp(prefix="ml_assets_ui_screenshots_"))  # kept after the test, unlike tmp_path
    shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
    print(f"\nscreenshots of the UI tests: {shots}")
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "ML_ASSETS_SOURCE": str(source),
        "ML_ASSETS_START_MONTH": FIRST,
        "ML_ASSETS_TUNING_TRIALS": "2",
        "ML_ASSETS_TUNING_TIMEOUT_SECONDS": "5",
        "ML_ASSETS_TRAINING_MONTHS": str(TRAINING_MONTHS),
        "ML_ASSETS_SENSOR_INTERVAL_SECONDS": "3600",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        # This checkout's ml_assets, not one installed elsewhere.
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    for name in (
        "ML_ASSETS_TLC_URL",
        "ML_ASSETS_STORAGE_ROOT",
        "ML_ASSETS_CACHE_DIR",
        "ML_ASSETS_OPTUNA_STORAGE",
        "MLFLOW_TRACKING_URI",
    ):
        env.pop(name, None)
    port, log = free_port(), root / "dagster_dev.log"
    url = f"http://127.0.0.1:{port}"
    # The instance's databases are created here, before dagster dev's processes race to create them.
    with DagsterInstance.from_config(str(home)) as instance:
        dev = start_dagster_dev(env, port, log)
        try:
            with playwright_api.sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1400, "height": 900})
                dagster_ui = DagsterUI(page, url, instance, shots, log)
                dagster_ui.wait_for(lambda: http_ok(f"{url}/server_info"), "the webserver answering")
                dagster_ui.stop_sensors()
                for month in (FIRST, MONTH, *BACKFILL):  # a tenth of each month: the UI is tested here, not the model
                    drop_month(source, month)
                write_bad_month(source)
                # January is ingested before the person arrives: February trains on it.
                selection = ["--select", "raw_trips,cleaned_trips", "--partition", FIRST]
                ingested = forked.run(
                    ["-m", "dagster", "asset", "materialize", "-m", "ml_assets.definitions", *selection], env
                )
                assert ingested.returncode == 0, ingested.stderr[-3000:]
                yield dagster_ui
                browser.close()
        finally:
            stop_process_group(dev)


def test_lineage_shows_every_asset(ui):
    page = ui.open("/assets/trip_duration_predictions?view=lineage&lineageScope=upstream&lineageDepth=5")
    for asset in ASSETS[: ASSETS.index("trip_duration_predictions") + 1]:
        playwright_api.expect(page.get_by_text(asset, exact=True).first).to_be_visible()
    ui.shot("1-lineage")
    # Monitoring hangs off cleaned_trips: a month is scored as soon as it is ingested.
    page = ui.open("/assets/cleaned_trips?view=lineage&lineageScope=downstream&lineageDepth=1")
    playwright_api.expect(page.get_by_text("model_performance", exact=True).first).to_be_visible()
    ui.shot("1-lineage-monitoring")


def test_one_month_from_the_materialize_dialog_shows_the_model_and_its_plots(ui):
    ui.launch("/asset-groups", "Materialize all", MONTH, "2-materialize-dialog")
    ui.wait_for(lambda: ui.materialized_at("trip_duration_predictions", MONTH), f"materializing {MONTH}")
    # The month's own materialization: the Partitions tab with the month selected.
    page = ui.open(f"/assets/trained_model?view=partitions&partition={MONTH}")
    metadata = page.get_by_role("row")
    playwright_api.expect(metadata.filter(has=page.get_by_text("rmse", exact=True))).to_have_count(1)
    run_link = metadata.filter(has=page.get_by_text("mlflow_run", exact=True)).get_by_role("link").first
    playwright_api.expect(run_link).to_have_attribute("href", re.compile(r"/#/experiments/\d+/runs/\w+$"))
    ui.shot("2-trained-model")
    # Dagster shows a Markdown entry as a "[Show Markdown]" link that opens it in a dialog.
    for plot in MODEL_PLOTS:
        metadata.filter(has=page.get_by_text(f"plot_{plot}", exact=True)).get_by_text("[Show Markdown]").click()
        dialog = page.get_by_role("dialog")
        playwright_api.expect(dialog.get_by_text(f"plot_{plot}", exact=True)).to_be_visible()
        image = dialog.locator("img[src^='data:image/png;base64,']")
        playwright_api.expect(image).to_have_count(1)
        image.evaluate("image => image.decode()")  # resolves once the PNG is decoded, rejects if it cannot be
        width, height = image.evaluate("image => [image.naturalWidth, image.naturalHeight]")
        assert width > 100 and height > 100, (plot, width, height)
        ui.shot(f"2-plot-{plot}")
        dialog.get_by_role("button", name="Close").click()
        playwright_api.expect(dialog).to_be_hidden()
    # The registry's answer is on the model_gate check of the month: version, alias, link.
    page = ui.open("/assets/trained_model?view=checks")
    page.get_by_role("tab", name="Execution history").click()
    execution = page.get_by_role("row").filter(has=page.get_by_role("cell", name=MONTH, exact=True))
    playwright_api.expect(execution).to_have_count(1)
    playwright_api.expect(execution.get_by_text("Passed", exact=True)).to_be_visible()
    execution.get_by_role("button").last.click()  # the metadata button, "{}"
    dialog = page.get_by_role("dialog")
    for entry in ("model_version", "alias", "registered_model"):
        playwright_api.expect(dialog.get_by_text(entry, exact=True)).to_be_visible()
    playwright_api.expect(dialog.get_by_text("champion", exact=True)).to_be_visible()
    playwright_api.expect(dialog.get_by_role("link").first).to_have_attribute(
        "href", re.compile(r"/#/models/\w+/versions/1$")
    )
    ui.shot("2-model-gate")


@pytest.mark.timeout(WAIT_SECONDS * (len(BACKFILL) + 1))  # its own waits, not the suite's 900 s, bound it
def test_backfill_from_the_ui_trains_each_month_after_its_window(ui):
    started = time.time()
    ui.launch("/asset-groups", "Materialize all", f"[{BACKFILL[0]}...{BACKFILL[-1]}]", "3-backfill-dialog")
    since = RunsFilter(created_after=datetime.fromtimestamp(started, tz=timezone.utc))

    def backfilled() -> bool:
        runs = ui.instance.get_runs(since)
        trained = all(ui.materialized_at("trip_duration_predictions", month) > started for month in BACKFILL)
        return trained and all(run.status in FINISHED for run in runs)

    ui.wait_for(backfilled, "the backfill", seconds=WAIT_SECONDS * len(BACKFILL))

    def ended_on_the_backfills_page() -> bool:
        page = ui.open("/overview/backfills")
        # Runs > Backfills: a list of divs (no table roles) with a "View" button per backfill once drawn.
        playwright_api.expect(page.get_by_text("View", exact=True).first).to_be_visible()
        return page.get_by_text("Started", exact=True).count() == 0  # a running backfill's status reads "Started"

    ui.wait_for(ended_on_the_backfills_page, "the backfill's end on the Backfills page")
    ui.shot("3-backfill-done")
    ui.backfill_runs = ui.instance.get_runs(since)
    for month in BACKFILL:
        trained = ui.materialized_at("trained_model", month)
        window = [shift_month(month, -k) for k in range(TRAINING_MONTHS + 1)]
        for needed in (m for m in window if m in BACKFILL):
            assert started < ui.materialized_at("cleaned_trips", needed) < trained, (month, needed)
    assert ui.backfill_runs and all(run.tags.get("dagster/backfill") for run in ui.backfill_runs)
    chosen = {run.run_id: run.status for run in ui.backfill_runs if run.tags.get("dagster/partition") in BACKFILL}
    assert set(chosen.values()) == {DagsterRunStatus.SUCCESS}, chosen


@pytest.mark.xfail(
    strict=True,
    reason=f"The UI backfill of [{BACKFILL[0]}...{BACKFILL[-1]}] over the whole graph also targets trip_features, "
    f"best_params and trained_model of {AFTER_BACKFILL}: Dagster gives the root raw_trips the chosen months and "
    "maps them downstream through trip_features' look-back window (AssetBackfillData.from_asset_partitions), "
    f"so {AFTER_BACKFILL} reads {BACKFILL[-1]}; that run fails with NotMaterializedError, because "
    f"cleaned_trips for {AFTER_BACKFILL} is not in the backfill and was never materialized. Dagster 1.13 offers no "
    "way around it from the launch dialog (it sends partitionNames; only the API's partitionsByAssets targets "
    "exactly the chosen months), and ending those steps without an output instead (output_required=False) leaves "
    "the backfill Failed all the same: its daemon marks targeted partitions that successful runs did not "
    "materialize as failed (asset_backfill._backfill_is_stalled).",
)
def test_backfill_from_the_ui_runs_only_the_chosen_months(ui):
    runs = getattr(ui, "backfill_runs", None)
    assert runs, "test_backfill_from_the_ui_trains_each_month_after_its_window must run first"
    outside = {run.tags.get("dagster/partition"): run.status for run in runs}.keys() - set(BACKFILL)
    failed = {run.tags.get("dagster/partition"): run.status for run in runs if run.status != DagsterRunStatus.SUCCESS}
    assert not outside and not failed, (sorted(outside), failed)


def test_failed_blocking_check_shows_on_the_checks_tab(ui):
    started = datetime.now(timezone.utc)
    ui.launch(
        "/assets/raw_trips", r"Materialize(…|\.\.\.)$", BAD_MONTH, "4-materialize-bad-month", along="cleaned_trips"
    )
    finished = RunsFilter(tags={"dagster/partition": BAD_MONTH}, statuses=FINISHED, created_after=started)
    ui.wait_for(lambda: ui.instance.get_runs(finished), f"the run of {BAD_MONTH}")
    (run,) = ui.instance.get_runs(finished)
    assert run.status == DagsterRunStatus.FAILURE, run.status  # the failed blocking check fails its step
    for asset in ("raw_trips", "cleaned_trips"):
        assert not ui.materialized_at(asset, BAD_MONTH)  # nothing stored
    page = ui.open("/assets/raw_trips?view=checks")
    page.get_by_text("schema", exact=True).first.click()
    playwright_api.expect(page.get_by_text("This is a blocking asset check.")).to_be_visible()
    page.get_by_role("tab", name="Execution history").click()
    execution = page.get_by_role("row").filter(has=page.get_by_role("cell", name=BAD_MONTH, exact=True))
    playwright_api.expect(execution).to_have_count(1)
    playwright_api.expect(execution.get_by_text("Failed", exact=True)).to_be_visible()
    playwright_api.expect(execution.get_by_text(re.compile("trip_distance"))).to_be_visible()
    ui.shot("4-failed-check")
