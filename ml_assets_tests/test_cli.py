"""The command line: `dg launch` and `dagster asset materialize` in subprocesses, read back from the instance."""

import json
import os
import subprocess
from pathlib import Path

import pytest
from dagster import AssetKey, DagsterInstance

from ml_assets.records import latest_metadata
from ml_assets_tests.support import BIN, FAST_CONFIG, ROOT, TLC_DATA

pytestmark = pytest.mark.process


def run_cli(*args: str, env: dict) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [str(BIN / args[0]), *args[1:]], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return result


def test_cli_materializes_the_graph_into_dagster_home(dagster_home):
    env = {
        **os.environ,
        "ML_ASSETS_SOURCE": str(TLC_DATA),
        "VIRTUAL_ENV": str(BIN.parent),
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
    }
    run_cli("dg", "check", "defs", env=env)
    run_cli("dg", "launch", "--assets", "raw_trips,cleaned_trips", "--partition", "2021-01", env=env)
    run_cli(
        "dagster",
        "asset",
        "materialize",
        "-m",
        "ml_assets.definitions",
        "--select",
        "*",
        "--partition",
        "2021-02",
        "--config-json",
        json.dumps(FAST_CONFIG),
        env=env,
    )

    with DagsterInstance.get() as instance:
        assert instance.get_materialized_partitions(AssetKey("cleaned_trips")) == {"2021-01", "2021-02"}
        assert latest_metadata(instance, "cleaned_trips", "2021-01")["rows"] == 73_906
        model = latest_metadata(instance, "trained_model", "2021-02")
        assert model["rmse"] < model["baseline_rmse"]
        assert Path(model["path"]).is_relative_to(dagster_home)
