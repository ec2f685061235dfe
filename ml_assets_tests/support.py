"""What several test modules share: paths, a fresh Dagster home, small run budgets."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from ml_assets import keys, settings
from ml_assets.core.tracking import GREEN, registered_model
from ml_assets.deploy.local.environment import BIN, ROOT
from ml_assets.deploy.local.ports import free_port  # noqa: F401 - for the tests, as the stack picks its ports
from ml_assets.deploy.local.waiting import http_ok, wait_until

GREEN_MODEL = registered_model(GREEN)  # the registered model of the tests' homes: they read green months

TLC_DATA = ROOT.parent / "shared" / "data" / "nyc-tlc"  # real TLC files, read-only

# The graph's assets, upstream first: what "Materialize all" selects.
ASSETS = [key.to_user_string() for key in keys.ASSETS]

SAMPLE_EVERY = 10  # drop_month keeps every 10th trip of a real month

# Small budgets: tests check behaviour, benchmarks check model quality and speed. Two trials: a study
# that continues, a warm start followed by a sampled trial; tests of a trial count set their own. At most
# 40 boosting rounds a fit, the trials' too: at the fixed learning rate of 0.05 a model has then gone 87 % of
# the way from the mean, enough to beat the LinearRegression baseline the gate asks for.
ROUNDS = {"num_boost_round": 40, "early_stopping_rounds": 15}
# The same rounds for runs that carry no run config, by their settings' variables (conftest.py sets them).
ROUNDS_ENV = {
    setting.variable: str(ROUNDS["num_boost_round"]) for setting in (settings.TUNING_ROUNDS, settings.TRAINING_ROUNDS)
}
FAST_CONFIG = {
    "ops": {
        "best_params": {"config": {"n_trials": 2, "timeout_seconds": 20, **ROUNDS}},
        "trained_model": {"config": ROUNDS},
    }
}


def use_new_home(home: Path, monkeypatch, template: Path | None = None) -> Path:
    """A fresh DAGSTER_HOME with the project's dagster.yaml; every project path derives from it.

    With `template`: a copy of that home instead (runs, events, stored values), prepared once for
    several tests by a fixture, with no instance open on it. No trained model goes into a template:
    MLflow records an experiment's artifact location as an absolute path, and the product treats a
    copied experiment as another home's (test_faults_ingestion.py shows it).
    """
    if template is None:
        home.mkdir()
        shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
    else:
        shutil.copytree(template, home, symlinks=True)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    for name in (
        "ML_ASSETS_SOURCE",
        "ML_ASSETS_TLC_URL",
        "ML_ASSETS_STORAGE_ROOT",
        "ML_ASSETS_CACHE_DIR",
        "ML_ASSETS_OPTUNA_STORAGE",
        "MLFLOW_TRACKING_URI",
        "ML_ASSETS_SYNTHETIC_PUBLISHED_THROUGH",
    ):
        monkeypatch.delenv(name, raising=False)
    return home


@contextlib.contextmanager
def template_home(root: Path, **env: str) -> Iterator:
    """A home for `use_new_home(..., template=root / "dagster_home")`, built by a module-scoped fixture:
    a fresh home and the environment `env` while the block runs (under a MonkeyPatch of its own, as a
    module fixture cannot take the test's), and its instance, closed when the block ends."""
    from dagster import DagsterInstance

    with pytest.MonkeyPatch.context() as patch:
        use_new_home(root / "dagster_home", patch)
        for name, value in env.items():
            patch.setenv(name, value)
        with DagsterInstance.get() as instance:
            yield instance


def holding(words: list[str], *places: Path, printed: str = "") -> list[str]:
    """The files under `places` (and what was `printed`) in which any of `words` appears."""
    found = ["output"] if any(word in printed for word in words) else []
    for place in places:
        for path in place.rglob("*"):
            if path.is_file() and any(word.encode() in path.read_bytes() for word in words):
                found.append(str(path))
    return found


def replace_column(table: pa.Table, name: str, values) -> pa.Table:
    return table.set_column(table.schema.get_field_index(name), name, values)


def zero_durations(table: pa.Table) -> pa.Table:
    """30 % of a green month's trips end when they start: cleaning drops them, failing `dropped_share`."""
    pickup, dropoff = table["lpep_pickup_datetime"], table["lpep_dropoff_datetime"]
    zero = np.arange(table.num_rows) % 10 < 3
    return replace_column(table, "lpep_dropoff_datetime", pc.if_else(pa.array(zero), pickup, dropoff))


def start_writer(target: str | Path) -> subprocess.Popen:
    """A process inside `atomic_path(target)` (a path or URL), its temporary file half written, waiting to be killed."""
    code = textwrap.dedent(
        f"""
        import time
        from ml_assets.core.storage import atomic_path
        with atomic_path({str(target)!r}) as tmp:
            tmp.write_bytes(b"half")
            print("writing", flush=True)
            time.sleep(600)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    writer = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env)
    assert writer.stdout.readline().strip() == "writing"
    return writer


def wait_until_answers(url: str, alive: Callable[[], bool], log: Path, seconds: float = 120) -> None:
    """Wait until a server just started answers `url`; fail with its log's tail if it dies or takes too long."""
    wait_until(
        lambda: http_ok(url),
        f"{url} answering",
        seconds,
        poll=0.2,
        exited=lambda: "" if alive() else "the server",
        log=lambda: log.read_text()[-3000:],
    )


@contextlib.contextmanager
def cpu_quota(cpus: int) -> Iterator[list[str]]:
    """A command prefix that runs a command as a container limited to `cpus` CPUs runs.

    The command runs in a new cgroup with that CPU quota (what Docker's `cpus` and a Kubernetes CPU
    limit set) and, in a private mount namespace, sees that cgroup where a container sees its own:
    mounted over the hierarchy's root. The machine keeps every core in the affinity. Needs root.
    """
    quota, period = str(cpus * 100000), "100000"
    root = Path("/sys/fs/cgroup/cpu")  # cgroup v1's cpu controller, where it is mounted
    if (root / "cpu.cfs_quota_us").exists():
        limits = {"cpu.cfs_period_us": period, "cpu.cfs_quota_us": quota}
    else:  # cgroup v2 only
        root, limits = root.parent, {"cpu.max": f"{quota} {period}"}
        (root / "cgroup.subtree_control").write_text("+cpu")
    group = root / f"ml_assets_test_{secrets.token_hex(4)}"
    group.mkdir()
    try:
        for name, value in limits.items():
            (group / name).write_text(value)
        inner = f'mount --bind {group} {root} && exec "$@"'
        yield ["sh", "-c", f"echo $$ > {group}/cgroup.procs && exec unshare -m sh -c '{inner}' sh \"$@\"", "sh"]
    finally:
        group.rmdir()  # its processes have exited


def stop_process_group(process: subprocess.Popen) -> None:
    """Stop a process started with `start_new_session=True` and everything it started: SIGTERM, a minute for the
    leader to exit, then SIGKILL for what is left of the group."""
    from ml_assets.deploy.local.service import kill_group_left

    os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=60)
    kill_group_left(process)
    process.wait()


# Yellow taxi files by year: `tpep_` times, no trip_type or ehail_fee, the airport fee spelled two
# ways, and integer widths that change (as TLC publishes them; no real yellow month is at hand).
YELLOW_TYPES = {
    2021: ({"VendorID": pa.int64(), "PULocationID": pa.int64(), "DOLocationID": pa.int64()}, "airport_fee"),
    2022: ({"VendorID": pa.int64(), "PULocationID": pa.int64(), "DOLocationID": pa.int64()}, "airport_fee"),
    2023: ({"VendorID": pa.int32(), "PULocationID": pa.int32(), "DOLocationID": pa.int32()}, "Airport_fee"),
    2024: ({"VendorID": pa.int32(), "PULocationID": pa.int32(), "DOLocationID": pa.int32()}, "Airport_fee"),
}


def as_yellow(green: pa.Table, year: int) -> pa.Table:
    """A real green month in the columns, names and types of a yellow file of `year`."""
    types, airport_fee = YELLOW_TYPES[year]
    table = green.drop_columns(["trip_type", "ehail_fee"])
    table = table.rename_columns([name.replace("lpep_", "tpep_") for name in table.column_names])
    for name, kind in types.items():
        table = replace_column(table, name, pc.cast(table[name], kind))
    fee = pa.array(np.where(np.arange(table.num_rows) % 7 == 0, 1.75, 0.0))
    return table.append_column(airport_fee, fee)


def start_dagster_dev(env: dict, port: int, log: Path) -> subprocess.Popen:
    """`dagster dev` on 127.0.0.1:`port` in its own session (process group), so that
    `stop_process_group` stops its webserver, daemon and code server too; output goes to `log`."""
    with log.open("w") as output:
        return subprocess.Popen(
            [str(BIN / "dagster"), "dev", "-m", "ml_assets.definitions", "-h", "127.0.0.1", "-p", str(port)],
            cwd=ROOT,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def drop_month(incoming: Path, month: str, every: int = SAMPLE_EVERY) -> None:
    """A real TLC month, every `every`-th trip, appearing at once in a folder (written aside, then renamed)."""
    import pyarrow.parquet as pq

    name = f"green_tripdata_{month}.parquet"
    table = pq.read_table(TLC_DATA / name)
    partial = incoming / f".{name}.partial"
    pq.write_table(table.take(list(range(0, table.num_rows, every))), partial)
    os.replace(partial, incoming / name)


def cleaned_months(months, every: int = 1) -> dict:
    """Real TLC months, cleaned, every `every`-th trip kept: month -> trips."""
    import pyarrow.parquet as pq

    from ml_assets.core.cleaning import clean_trips

    return {
        m: clean_trips(pq.read_table(TLC_DATA / f"green_tripdata_{m}.parquet"), m, m).trips.iloc[::every]
        for m in months
    }


def stored_values(root: Path) -> dict[str, object]:
    """Every asset value under a storage root, comparable across runs: best_params as JSON, models as
    their trees, the rest as bytes."""
    from ml_assets.core.model import from_bytes

    values = {}
    for path in sorted(root.rglob("*.*")):
        name = str(path.relative_to(root))
        if name.startswith("best_params/"):
            values[name] = json.loads(path.read_bytes())
        elif name.startswith("trained_model/"):
            values[name] = from_bytes(path.read_bytes()).get_dump()
        else:
            values[name] = path.read_bytes()
    return values


def assert_champion_was_recorded(instance, dagster_home: Path) -> None:
    """The champion's MLflow run is the newest trained_model materialization of its month; MLflow's store
    under `dagster_home` becomes the tracking URI."""
    import mlflow

    from ml_assets.core import tracking
    from ml_assets.records import latest_materialization

    mlflow.set_tracking_uri(f"sqlite:///{dagster_home}/ml_assets/mlflow.db")
    champion = tracking.champion_version()
    assert champion is not None, "no champion"
    _, model = latest_materialization(instance, "trained_model", champion.tags[tracking.PARTITION_TAG])
    assert champion.run_id == model["mlflow_run_id"]


def failed_runs(instance) -> dict[str, list[str]]:
    """Each failed run (its month and id) and why it failed (its failure events' messages), for assertion messages."""
    from dagster import DagsterEventType

    failed = {}
    for run in instance.get_runs():
        if run.is_failure:
            events = instance.all_logs(
                run.run_id, of_type={DagsterEventType.STEP_FAILURE, DagsterEventType.RUN_FAILURE}
            )
            reasons = [event.message or "" for event in events]
            reasons += [
                str(event.dagster_event.step_failure_data.error)
                for event in events
                if event.dagster_event.is_step_failure
            ]
            failed[f"{run.tags.get('dagster/partition')} {run.run_id}"] = reasons  # a month may fail twice
    return failed
