"""What made a model: its data (each raw file's sha256), settings, seeds and code, to rebuild it exactly.

Recorded as `lineage.json` on the model's MLflow run when it is trained; `python -m ml_assets.reproduce`
reads it back (docs/models-over-time.md).
"""

from __future__ import annotations

import subprocess
from importlib import metadata
from pathlib import Path

FORMAT = 1


class LineageError(ValueError):
    """A model cannot be rebuilt or compared as recorded: no lineage, data that is not the one it was trained on,
    or a registered model that cannot be loaded."""


def _git_commit() -> str | None:
    """The checkout's commit when the package runs from one (an installed wheel has none)."""
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def code_identity() -> dict:
    """The code that trains: this package's version and commit, and the learner's version."""
    return {
        "ml_assets": metadata.version("ml_assets"),
        "git_commit": _git_commit(),
        "xgboost": metadata.version("xgboost"),
    }


def record(
    *,
    test_month: str,
    training_months: list[str],
    raw_sha256: dict[str, str],
    feature_config: dict,
    params: dict,
    num_boost_round: int,
    early_stopping_rounds: int,
    threads: int,
    refit: bool = False,
) -> dict:
    """The lineage of one trained model, as stored beside it."""
    return {
        "format": FORMAT,
        "test_month": test_month,
        "training_months": list(training_months),
        "raw_sha256": dict(sorted(raw_sha256.items())),
        "feature_config": feature_config,
        "params": params,
        "num_boost_round": num_boost_round,
        "early_stopping_rounds": early_stopping_rounds,
        "threads": threads,
        "refit": refit,  # trained again on train + holdout (core.training)
        "code": code_identity(),
    }


def check_file(lineage: dict, month: str, sha256: str, file: str) -> None:
    """Refuse a month's file that is not the one the model was trained on."""
    recorded = lineage["raw_sha256"][month]
    if recorded is None:  # trained_model found no sha256 in raw_trips' metadata (a month ingested by older code)
        raise LineageError(
            f"month {month}: no sha256 was recorded for the file the model was trained on (raw_trips recorded none "
            f"when it was trained), so {file} cannot be shown to be that file"
        )
    if sha256 != recorded:
        raise LineageError(
            f"month {month}: {file} has sha256 {sha256}, but the model was trained on a file with sha256 {recorded}, "
            "so it cannot be rebuilt from this one (perhaps TLC re-published the month since, or the source is "
            "another one)"
        )
