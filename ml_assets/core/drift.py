"""Drift between consecutive months (no Dagster here): a warning, never a reason to stop training.

Month M against M-1: population stability index and the two-sample Kolmogorov-Smirnov statistic
of duration and trip distance, the total variation distance of the pickup-zone shares, and how much
the share of missing values grew in each code the model reads that cleaning keeps missing (a column
TLC renamed or stopped filling reads as missing on every row, and the model would say nothing).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ml_assets.core.features import FEATURE_INPUTS
from ml_assets.core.rules import RuleResult, threshold
from ml_assets.core.schema import DURATION, OPTIONAL, PICKUP_ZONE

DRIFT_COLUMNS = [DURATION, "trip_distance"]
MISSING_COLUMNS = [name for name in FEATURE_INPUTS if name in OPTIONAL]  # feature inputs that may stay missing
DRIFT_INPUTS = [*DRIFT_COLUMNS, PICKUP_ZONE, *MISSING_COLUMNS]  # all a month's drift is computed from
PSI_FLOOR = 1e-4  # share given to an empty bin, so that log() stays finite


@dataclass(frozen=True)
class DriftThresholds:
    """Warn above these."""

    # The usual rule of thumb: < 0.1 stable, 0.1-0.2 some shift, > 0.2 shifted.
    psi: float = threshold(0.2, "positive", "warn above this population stability index of duration or distance")
    ks: float = threshold(0.1, "share", "warn above this Kolmogorov-Smirnov statistic of duration or distance")
    # Consecutive real green months: 0.03-0.045.
    tvd: float = threshold(0.1, "share", "warn above this total variation distance of the pickup-zone shares")
    # Consecutive real green months: at most 0.035 (2021-03); a column gone reads 0.5 to 0.93 (2021's share to 2023's).
    missing: float = threshold(0.2, "share", "warn when a code's share of missing values grew by more than this")


def _finite(values) -> np.ndarray:
    array = np.asarray(pd.Series(values, dtype="float64").to_numpy(), dtype="float64")
    return array[np.isfinite(array)]


def _both_sides(reference, current, what: str) -> tuple[np.ndarray, np.ndarray]:
    reference, current = _finite(reference), _finite(current)
    if not len(reference) or not len(current):
        raise ValueError(f"{what} needs at least one finite value on each side")
    return reference, current


def psi(reference, current, bins: int = 10) -> float:
    """Population stability index of `current` against `reference`, with bins at reference quantiles.

    Edges are the reference's inner quantiles (deciles for bins=10), deduplicated, so heavy ties
    (e.g. many zero distances) merge bins instead of making empty ones; the outer bins are open.
    PSI = sum((c - r) * ln(c / r)) over bins, with empty bins counted as a share of PSI_FLOOR.
    """
    reference, current = _both_sides(reference, current, "psi")
    edges = np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)[1:-1]))
    ref = np.bincount(np.searchsorted(edges, reference, side="right"), minlength=len(edges) + 1) / len(reference)
    cur = np.bincount(np.searchsorted(edges, current, side="right"), minlength=len(edges) + 1) / len(current)
    ref, cur = np.maximum(ref, PSI_FLOOR), np.maximum(cur, PSI_FLOOR)
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def ks_statistic(reference, current) -> float:
    """Two-sample Kolmogorov-Smirnov statistic: the largest gap between the two empirical CDFs, taken
    at every value of either sample (scipy's `ks_2samp` statistic). In numpy because an ingestion run
    imports nothing else of scipy.stats, which costs it a second of CPU."""
    reference, current = (np.sort(side) for side in _both_sides(reference, current, "ks_statistic"))
    values = np.concatenate([reference, current])

    def cdf(sorted_sample: np.ndarray) -> np.ndarray:
        return np.searchsorted(sorted_sample, values, side="right") / len(sorted_sample)

    return float(np.max(np.abs(cdf(reference) - cdf(current))))


def _shares(values) -> pd.Series:
    """Share of each value (NaN included), indexed by plain values so that two samples' categories align."""
    shares = pd.Series(values).value_counts(normalize=True, dropna=False)
    shares.index = shares.index.astype(object)
    return shares


def total_variation(reference, current) -> float:
    """Total variation distance between the category shares of two samples (0 same, 1 disjoint)."""
    if not len(reference) or not len(current):
        raise ValueError("total_variation needs at least one value on each side")
    ref, cur = _shares(reference).align(_shares(current), fill_value=0.0)
    return float(0.5 * np.abs(ref - cur).sum())


def missing_growth(reference, current) -> float:
    """How much the share of missing values grew from one sample to the other (0 where it did not grow)."""
    return max(0.0, float(pd.Series(current).isna().mean()) - float(pd.Series(reference).isna().mean()))


def drift(
    previous: pd.DataFrame,
    current: pd.DataFrame,
    thresholds: DriftThresholds,
    previous_month: str = "M-1",
    month: str = "M",
) -> RuleResult:
    """PSI and KS of duration and trip_distance, TVD of pickup-zone shares, growth of the codes' missing values;
    fails above any threshold."""
    figures: dict[str, float] = {}
    for column in DRIFT_COLUMNS:
        figures[f"psi_{column}"] = round(psi(previous[column], current[column]), 6)
        figures[f"ks_{column}"] = round(ks_statistic(previous[column], current[column]), 6)
    figures["tvd_pickup_zone"] = round(total_variation(previous[PICKUP_ZONE], current[PICKUP_ZONE]), 6)
    for column in MISSING_COLUMNS:
        figures[f"missing_{column}"] = round(missing_growth(previous[column], current[column]), 6)
    limits = {"psi": thresholds.psi, "ks": thresholds.ks, "tvd": thresholds.tvd, "missing": thresholds.missing}
    exceeded = {name: value for name, value in figures.items() if value > limits[name.split("_")[0]]}
    metadata = {
        "month": month,
        "previous_month": previous_month,
        "compared": True,
        "rows": len(current),
        "previous_rows": len(previous),
        **figures,
        **{f"threshold_{name}": limit for name, limit in limits.items()},
        "exceeded": sorted(exceeded),
    }
    if exceeded:
        over = (f"{name} = {value:.3f} > {limits[name.split('_')[0]]}" for name, value in exceeded.items())
        return RuleResult("drift", False, f"{month} drifted from {previous_month}: " + ", ".join(over), metadata)
    summary = ", ".join(f"{name} = {value:.3f}" for name, value in figures.items())
    return RuleResult("drift", True, f"{month} is close to {previous_month}: {summary}", metadata)


def nothing_to_compare(month: str, previous_month: str, why: str) -> RuleResult:
    return RuleResult(
        "drift",
        True,
        f"nothing to compare {month} with: {why}",
        {"month": month, "previous_month": previous_month, "compared": False},
    )
