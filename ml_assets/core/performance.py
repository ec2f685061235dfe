"""Realized performance: every earlier model's error on a later month, and when the champion has decayed."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from ml_assets.core import model
from ml_assets.core.features import derive_features, transform
from ml_assets.core.months import months_between
from ml_assets.core.rules import threshold
from ml_assets.core.schema import DURATION
from ml_assets.core.training import regression_metrics


@dataclass(frozen=True)
class DecayThresholds:
    decay_threshold: float = threshold(
        0.1,
        "positive",
        "the champion has decayed on a month when its realized RMSE there exceeds its own test RMSE by more than "
        "this share (a warning on model_performance; `on_decay` retrains)",
    )
    max_model_age_months: int = threshold(
        6, "count", "`on_decay` also retrains when the champion's test month is more than this many months back"
    )


COLUMNS = ["version", "trained_on", "tested_on", "months_since_test", "test_rmse", "realized_rmse", "ratio"]


@dataclass(frozen=True)
class RegisteredModel:
    """A registry version as monitoring needs it: what it learned from, how it tested, and the model itself."""

    version: str
    trained_on: list[str]
    tested_on: str
    test_rmse: float
    model: object
    encoder: dict

    def __post_init__(self) -> None:
        # Realized RMSEs are judged as a ratio to this one: a NaN ratio would pass every threshold, a zero divides.
        if not (math.isfinite(self.test_rmse) and self.test_rmse > 0):
            raise ValueError(
                f"its recorded test RMSE is {self.test_rmse}, which no realized RMSE can be judged against"
            )


def score_versions(
    trips: pd.DataFrame, month: str, versions: list[RegisteredModel]
) -> tuple[pd.DataFrame, dict[str, str]]:
    """One row per version tested before `month`: its RMSE on `month`'s trips beside its own test RMSE; and why
    each version that could not score them was left out (an encoder or model of other features, registered by
    hand): one such version must not stop the others' scores."""
    rows = derive_features(trips)
    actual = trips[DURATION].to_numpy()
    scored, refused = [], {}
    for registered in versions:
        if registered.tested_on >= month:
            continue  # a model is judged only on months after its own test month
        try:
            predicted = model.predict(registered.model, transform(rows, registered.encoder))
        except model.CANNOT_SCORE as error:
            refused[registered.version] = f"cannot score {month}'s trips: {type(error).__name__}: {error}"
            continue
        realized = regression_metrics(actual, predicted)["rmse"]
        scored.append(
            {
                "version": registered.version,
                "trained_on": ",".join(registered.trained_on),
                "tested_on": registered.tested_on,
                "months_since_test": months_between(registered.tested_on, month),
                "test_rmse": registered.test_rmse,
                "realized_rmse": realized,
                "ratio": realized / registered.test_rmse,
            }
        )
    frame = pd.DataFrame(scored, columns=COLUMNS)
    return frame.sort_values("version", key=lambda v: v.astype(int)).reset_index(drop=True), refused


def decayed(ratio: float, decay_threshold: float) -> bool:
    """Whether a realized RMSE is more than `decay_threshold` (relative) above the model's own test RMSE."""
    return ratio > 1 + decay_threshold


@dataclass(frozen=True)
class ChampionOnMonth:
    """The champion at the time a month was scored, as model_performance records it (its metadata)."""

    version: str | None  # None: no champion yet
    tested_on: str | None = None
    ratio: float | None = None  # realized / test RMSE on the month; None when it was tested on or after it

    def metadata(self) -> dict:
        return {f"champion_{name}": value for name, value in vars(self).items() if value is not None}

    @classmethod
    def from_metadata(cls, metadata: dict) -> ChampionOnMonth:
        return cls(*(metadata.get(f"champion_{name}") for name in ("version", "tested_on", "ratio")))


def champion_on_month(scores: pd.DataFrame, champion: str | None, tested_on: str | None) -> ChampionOnMonth:
    """The champion's line of a month's scores (its ratio), if it was scored."""
    row = scores[scores["version"] == champion]
    return ChampionOnMonth(champion, tested_on, None if row.empty else float(row["ratio"].iloc[0]))


def retrain_reasons(champion: ChampionOnMonth, month: str, thresholds: DecayThresholds) -> dict[str, bool]:
    """Which reasons of the `on_decay` policy hold for `month`: any of them means its model should train."""
    age = None if champion.tested_on is None else months_between(champion.tested_on, month)
    return {
        "no_champion": champion.version is None,
        "champion_decayed": champion.ratio is not None and decayed(champion.ratio, thresholds.decay_threshold),
        "champion_too_old": age is not None and age > thresholds.max_model_age_months,
    }


def months_to_score_again(scored: dict[str, int], trained: dict[str, int], training: set[str]) -> set[str]:
    """The scored months whose table misses a model: month M once a model tested before M was trained after M was
    last scored, and no model tested before M is still to train (so M is scored again once they are all in, not
    once for each). `scored` and `trained` hold each month's latest record id (ids grow with time); `training`
    the months whose model is queued or training."""
    return {
        month
        for month, record in scored.items()
        if max((trained[earlier] for earlier in trained if earlier < month), default=-1) > record
        and not any(earlier < month for earlier in training)
    }
