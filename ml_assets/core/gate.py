"""The model gate: may a newly trained model become the `champion` the registry serves?"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from ml_assets.core import frame_parts
from ml_assets.core.features import digest_of_test_rows
from ml_assets.core.rules import percent
from ml_assets.core.tracking import tested_on
from ml_assets.core.training import NotComparable, champion_rmse

CHAMPION_TOLERANCE = 0.02  # how much worse (relative RMSE) than the champion a new model may be


@dataclass(frozen=True)
class GateResult:
    passed: bool
    reason: str
    champion_rmse: float | None  # the current champion on the same test month; None without one
    champion_version: str | None  # the version that was champion before this model


def compare(
    rmse: float, baseline: float, champion: float | None, tolerance: float, newer_run: str | None = None
) -> tuple[bool, str]:
    """A new model must beat the baseline and be at most `tolerance` (relative) worse than the champion.

    A model of a month whose newer model was recorded meanwhile (`newer_run`, its MLflow run: two runs of
    one month at once) does not pass either: the alias never goes back to a superseded model.
    """
    if newer_run is not None:
        return False, f"a newer model of this month was recorded meanwhile (MLflow run {newer_run})"
    if rmse >= baseline:
        return False, f"RMSE {rmse:.3f} does not beat the LinearRegression baseline {baseline:.3f}"
    if champion is None:
        return (
            True,
            f"RMSE {rmse:.3f} beats the baseline {baseline:.3f}; there is no champion "
            "(none yet, or its alias was removed)",
        )
    if rmse > champion * (1 + tolerance):
        return False, f"RMSE {rmse:.3f} is worse than the champion's {champion:.3f} by more than {percent(tolerance)}"
    return True, (
        f"RMSE {rmse:.3f} beats the baseline {baseline:.3f} and is within {percent(tolerance)} "
        f"of the champion's {champion:.3f}"
    )


def tested_after(month: str | None, champion) -> str | None:
    """The champion's test month (`tracking.tested_on`, as monitoring reads it: its version's tag, else its run's)
    when it is after `month`: the champion may have trained on `month`, so its RMSE there is no test score. None
    otherwise (no champion, a model ml_assets never tested, or one tested on `month` or before)."""
    champion_month = None if champion is None else tested_on(champion[0])
    return champion_month if month and champion_month and month < champion_month else None


def gate_model(
    frame: pd.DataFrame,
    rmse: float,
    baseline: float,
    tolerance: float,
    champion,
    newer_run: str | None = None,
    *,
    scored_on: str | None,
) -> GateResult:
    """Judge a model against the baseline and against `champion` evaluated on the frame's test month (`compare`).
    A model of a month before the champion's test month, or one the champion could not be compared with (another
    feature set's), does not replace it.

    `rmse` and `baseline` were scored when the model trained, on the test rows `scored_on` (`digest_of_test_rows`;
    None: not recorded). A frame with other test rows (the month's features rebuilt since, the gate executed on its
    own) is refused, not scored again: the model is then one of superseded features (stale in Dagster), and only its
    retraining keeps the RMSE, baseline and plots Dagster recorded for it the ones it is judged by."""
    version = None if champion is None else str(champion[0].version)
    month = frame_parts.attrs(frame).get("test_month")
    if scored_on != digest_of_test_rows(frame):
        reason = (
            f"the model was scored on other test rows of {month} than trip_features {month} holds now: it was trained "
            f"on another version of {month}'s features (rebuilt since); materialize trained_model {month} again to "
            "judge a model of these"
        )
        return GateResult(False, reason, None, version)
    if champion_month := tested_after(month, champion):
        reason = (
            f"the champion (version {version}) was tested on {champion_month}, after this model's month {month}: "
            "a model of an earlier month, whose test month the champion may have trained on, does not replace it"
        )
        return GateResult(False, reason, None, version)
    try:
        against = champion_rmse(frame, champion)
    except NotComparable as error:
        return GateResult(False, f"{error}; a model not compared with the champion does not replace it", None, version)
    passed, reason = compare(rmse, baseline, against, tolerance, newer_run)
    return GateResult(passed, reason, against, version)
