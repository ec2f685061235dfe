"""A range of months gives what one-by-one runs give; re-materializing a month changes nothing."""

import pytest
from dagster import DagsterInstance

from ml_assets.runner.runs import materialize_month, run
from ml_assets_tests.support import FAST_CONFIG, stored_values, use_new_home

# A time budget that never cuts a study short, so both ways run exactly the same trials.
TUNING = FAST_CONFIG["ops"]["best_params"]["config"]
CONFIG = {"ops": {**FAST_CONFIG["ops"], "best_params": {"config": {**TUNING, "timeout_seconds": 3600}}}}


def stored(home) -> dict[str, object]:
    return stored_values(home / "ml_assets" / "assets")


@pytest.fixture
def synthetic(monkeypatch):
    monkeypatch.setenv("ML_ASSETS_SYNTHETIC_ROWS", "5000")


@pytest.mark.slow
def test_range_equals_one_by_one_and_is_idempotent(tmp_path, monkeypatch, synthetic, empty_home):
    one_by_one = use_new_home(tmp_path / "one_by_one", monkeypatch, template=empty_home)
    with DagsterInstance.get() as instance:
        materialize_month(instance, "2021-01", ["raw_trips", "cleaned_trips"], run_config=FAST_CONFIG)
        for month in ("2021-02", "2021-03"):
            materialize_month(instance, month, run_config=CONFIG)
    singles = stored(one_by_one)

    ranged = use_new_home(tmp_path / "range", monkeypatch, template=empty_home)
    with DagsterInstance.get() as instance:
        # From the first partition, as `make backfill FROM=2021-01` runs it: that month is ingested only (the
        # whole range had stopped at its trip_features, which has no earlier month to train on).
        models = run("2021-01", "2021-03", instance, run_config=CONFIG)
        assert set(models) == {"2021-02", "2021-03"}
        backfilled = stored(ranged)

        assert backfilled.keys() == singles.keys()
        assert "trained_model/2021-03.ubj" in backfilled
        for name, value in backfilled.items():
            assert value == singles[name], name

        materialize_month(instance, "2021-02", ["raw_trips", "cleaned_trips", "trip_features"], run_config=FAST_CONFIG)
        again = stored(ranged)
        assert {name: again[name] for name in again if name.endswith(".parquet")} == {
            name: backfilled[name] for name in backfilled if name.endswith(".parquet")
        }
