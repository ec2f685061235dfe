"""Data-quality rules for a month of trips, and drift between consecutive months (no Dagster here).

Every rule returns a `RuleResult`: whether it passed, one line saying why, and metadata with the
numbers it was judged on (always including `rule`), so a failed check in the UI names the rule and
shows the figures next to the threshold.

Blocking rules (a failure stops the month's downstream assets):
- raw_trips: `schema` (required columns present, every known column castable to the canonical
  schema), `row_count` (>= min_rows), `pickups_in_month` (share of pickups inside the month >=
  min_pickups_in_month; TLC files carry a few stray timestamps, real months are at >= 0.999).
- cleaned_trips: `schema` (canonical columns + duration, castable to the canonical types),
  `row_count`, `dropped_share` (rows removed by cleaning / raw rows <= max_dropped_share; real
  green months drop 3-5 %), `pickups_in_month` (all), `no_nulls` (REQUIRED columns + duration).

Drift (a warning only): month M against M-1 by PSI and the two-sample KS statistic of `duration`
and `trip_distance`, and the total variation distance of the pickup-zone shares.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from typing import Any, Iterable, Mapping, Optional

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ml_assets.core.months import month_bounds
from ml_assets.core.schema import CANONICAL, PICKUP, REQUIRED, _source_name

TARGET = "duration"
CLEANED_COLUMNS = pa.schema([*CANONICAL, pa.field(TARGET, pa.float64())])
NOT_NULL = [*REQUIRED, TARGET]  # what the model needs a value in, row by row
DRIFT_COLUMNS = ["duration", "trip_distance"]
ZONE = "PULocationID"


# ---------------------------------------------------------------------------------------------
# Thresholds
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class QualityRules:
    """Thresholds of the rules; `from_env` reads `ML_ASSETS_<NAME>` (e.g. ML_ASSETS_MIN_ROWS)."""

    min_rows: int = 1000
    max_dropped_share: float = 0.2
    min_pickups_in_month: float = 0.95  # raw_trips; cleaned_trips must have all pickups inside
    drift_psi: float = 0.2  # the usual rule of thumb: < 0.1 stable, 0.1-0.2 some shift, > 0.2 shifted
    drift_ks: float = 0.1
    drift_tvd: float = 0.1  # pickup-zone shares; consecutive real green months: 0.03-0.045
    psi_bins: int = 10

    @classmethod
    def env_name(cls, name: str) -> str:
        return f"ML_ASSETS_{name.upper()}"

    @classmethod
    def from_env(cls, environ: Optional[Mapping[str, str]] = None, **overrides: Any) -> "QualityRules":
        """Defaults, then `ML_ASSETS_<NAME>` variables, then `overrides` that are not None."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = environ.get(cls.env_name(f.name))
            if raw:
                try:
                    values[f.name] = int(raw) if f.type in ("int", int) else float(raw)
                except ValueError:
                    raise ValueError(f"{cls.env_name(f.name)} must be a number, got {raw!r}") from None
        values.update({name: value for name, value in overrides.items() if value is not None})
        return replace(cls(), **values)


@dataclass(frozen=True)
class RuleResult:
    rule: str
    passed: bool
    message: str
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        self.metadata.setdefault("rule", self.rule)
        self.metadata.setdefault("message", self.message)


# ---------------------------------------------------------------------------------------------
# Blocking rules
# ---------------------------------------------------------------------------------------------

def _columns_by_canonical_name(table: pa.Table) -> dict[str, pa.ChunkedArray]:
    return {_source_name(name): table.column(name) for name in table.column_names}


def _uncastable(columns: Mapping[str, Any], schema: pa.Schema) -> dict[str, str]:
    """Column -> why it cannot be cast to its type in `schema` (only columns present)."""
    problems = {}
    for target in schema:
        column = columns.get(target.name)
        if column is None:
            continue
        try:
            pc.cast(column, target.type)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as error:
            problems[target.name] = f"{column.type} -> {target.type}: {str(error).splitlines()[0][:200]}"
    return problems


def _schema_result(columns: Mapping[str, Any], required: Iterable[str], schema: pa.Schema, what: str) -> RuleResult:
    missing = sorted(set(required) - set(columns))
    uncastable = _uncastable(columns, schema)
    metadata = {"columns": len(columns), "missing_columns": missing, "uncastable_columns": uncastable}
    if not missing and not uncastable:
        return RuleResult("schema", True, f"{what}: all required columns present and castable", metadata)
    problems = []
    if missing:
        problems.append(f"missing column(s) {', '.join(missing)}")
    if uncastable:
        problems.append("column(s) not castable to the canonical schema: "
                        + "; ".join(f"{name} ({why})" for name, why in uncastable.items()))
    return RuleResult("schema", False, f"{what}: " + "; ".join(problems), metadata)


def raw_schema(table: pa.Table) -> RuleResult:
    """REQUIRED columns present (pickup/dropoff under any TLC prefix); every known column castable."""
    return _schema_result(_columns_by_canonical_name(table), REQUIRED, CANONICAL, "raw_trips")


def cleaned_schema(trips: pd.DataFrame) -> RuleResult:
    """Every canonical column plus duration present, each castable to its canonical type."""
    columns = {}
    for name in trips.columns:
        try:
            columns[name] = pa.array(trips[name], from_pandas=True)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            columns[name] = pa.array(trips[name].astype(str))  # reported as not castable below
    return _schema_result(columns, CLEANED_COLUMNS.names, CLEANED_COLUMNS, "cleaned_trips")


def row_count(rows: int, min_rows: int) -> RuleResult:
    passed = rows >= min_rows
    relation = ">=" if passed else "<"
    return RuleResult("row_count", passed, f"{rows} rows {relation} the floor of {min_rows}",
                      {"rows": int(rows), "floor": int(min_rows)})


def _pickup_result(inside: int, rows: int, minimum: float, first, last, what: str, month: str) -> RuleResult:
    share = inside / rows if rows else 0.0
    passed = rows > 0 and share >= minimum
    metadata = {
        "month": month,
        "rows": int(rows),
        "inside_month": int(inside),
        "outside_month": int(rows - inside),
        "share_inside": round(share, 6),
        "min_share": minimum,
        "first_pickup": str(first),
        "last_pickup": str(last),
    }
    relation = ">=" if passed else "<"
    return RuleResult("pickups_in_month", passed,
                      f"{what}: {share:.4%} of pickups inside {month} {relation} {minimum:.2%} "
                      f"({rows - inside} of {rows} outside; pickups from {first} to {last})", metadata)


def raw_pickups_in_month(table: pa.Table, month: str, min_share: float) -> RuleResult:
    """Share of raw pickups (nulls count as outside) in [start of month, start of next month)."""
    column = _columns_by_canonical_name(table).get(PICKUP)
    if column is None:
        return RuleResult("pickups_in_month", False, f"raw_trips: no {PICKUP} column",
                          {"rows": table.num_rows, "min_share": min_share})
    try:
        pickups = pc.cast(column, pa.timestamp("us"))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as error:
        return RuleResult("pickups_in_month", False, f"raw_trips: {PICKUP} is not a timestamp: {error}",
                          {"rows": table.num_rows, "min_share": min_share, "type": str(column.type)})
    start, end = month_bounds(month)
    inside = pc.and_(pc.greater_equal(pickups, pa.scalar(start.to_pydatetime(), pa.timestamp("us"))),
                     pc.less(pickups, pa.scalar(end.to_pydatetime(), pa.timestamp("us"))))
    count = int(pc.sum(pc.fill_null(inside, False)).as_py() or 0)
    bounds = pc.min_max(pickups)
    return _pickup_result(count, table.num_rows, min_share, bounds["min"].as_py(), bounds["max"].as_py(),
                          "raw_trips", month)


def cleaned_pickups_in_month(trips: pd.DataFrame, month: str) -> RuleResult:
    """Cleaning keeps only pickups inside the month: all of them must be."""
    if PICKUP not in trips:
        return RuleResult("pickups_in_month", False, f"cleaned_trips: no {PICKUP} column",
                          {"rows": len(trips), "min_share": 1.0})
    start, end = month_bounds(month)
    pickups = pd.to_datetime(trips[PICKUP])
    inside = int(((pickups >= start) & (pickups < end)).sum())
    return _pickup_result(inside, len(trips), 1.0, pickups.min(), pickups.max(), "cleaned_trips", month)


def no_nulls(trips: pd.DataFrame, columns: Iterable[str] = NOT_NULL) -> RuleResult:
    columns = list(columns)
    missing = [name for name in columns if name not in trips]
    nulls = {name: int(trips[name].isna().sum()) for name in columns if name in trips}
    bad = {name: count for name, count in nulls.items() if count}
    metadata = {"rows": len(trips), "columns": columns, "null_counts": bad, "missing_columns": missing}
    if not bad and not missing:
        return RuleResult("no_nulls", True, f"no nulls in {', '.join(columns)}", metadata)
    parts = [f"{name}: {count} null(s)" for name, count in bad.items()] + [f"{name}: missing" for name in missing]
    return RuleResult("no_nulls", False, "values the model needs are missing: " + "; ".join(parts), metadata)


def dropped_share(rows: int, raw_rows: Optional[int], ceiling: float) -> RuleResult:
    """Share of raw rows that cleaning removed; `raw_rows` None means cleaned_trips did not record it."""
    if raw_rows is None:
        return RuleResult("dropped_share", False,
                          "cleaned_trips recorded no raw_rows for this month, so the dropped share is unknown",
                          {"rows": int(rows), "ceiling": ceiling})
    share = (raw_rows - rows) / raw_rows if raw_rows else 1.0
    passed = share <= ceiling
    relation = "<=" if passed else ">"
    return RuleResult("dropped_share", passed,
                      f"cleaning dropped {raw_rows - rows} of {raw_rows} rows ({share:.2%}) {relation} {ceiling:.2%}",
                      {"rows": int(rows), "raw_rows": int(raw_rows), "dropped_rows": int(raw_rows - rows),
                       "dropped_share": round(share, 6), "ceiling": ceiling})


def raw_rules(table: pa.Table, month: str, rules: QualityRules) -> list[RuleResult]:
    return [
        raw_schema(table),
        row_count(table.num_rows, rules.min_rows),
        raw_pickups_in_month(table, month, rules.min_pickups_in_month),
    ]


def cleaned_rules(trips: pd.DataFrame, month: str, raw_rows: Optional[int], rules: QualityRules) -> list[RuleResult]:
    return [
        cleaned_schema(trips),
        row_count(len(trips), rules.min_rows),
        dropped_share(len(trips), raw_rows, rules.max_dropped_share),
        cleaned_pickups_in_month(trips, month),
        no_nulls(trips),
    ]


# ---------------------------------------------------------------------------------------------
# Drift
# ---------------------------------------------------------------------------------------------

PSI_FLOOR = 1e-4  # share given to an empty bin, so that log() stays finite


def _finite(values) -> np.ndarray:
    array = np.asarray(pd.Series(values, dtype="float64").to_numpy(), dtype="float64")
    return array[np.isfinite(array)]


def psi(reference, current, bins: int = 10) -> float:
    """Population stability index of `current` against `reference`, with bins at reference quantiles.

    Edges are the reference's inner quantiles (deciles for bins=10), deduplicated, so heavy ties
    (e.g. many zero distances) merge bins instead of making empty ones; the outer bins are open.
    PSI = sum((c - r) * ln(c / r)) over bins, with empty bins counted as a share of PSI_FLOOR.
    """
    reference, current = _finite(reference), _finite(current)
    if not len(reference) or not len(current):
        raise ValueError("psi needs at least one finite value on each side")
    edges = np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)[1:-1]))
    ref = np.bincount(np.searchsorted(edges, reference, side="right"), minlength=len(edges) + 1) / len(reference)
    cur = np.bincount(np.searchsorted(edges, current, side="right"), minlength=len(edges) + 1) / len(current)
    ref, cur = np.maximum(ref, PSI_FLOOR), np.maximum(cur, PSI_FLOOR)
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def ks_statistic(reference, current) -> float:
    """Two-sample Kolmogorov-Smirnov statistic: the largest gap between the two empirical CDFs."""
    reference, current = np.sort(_finite(reference)), np.sort(_finite(current))
    if not len(reference) or not len(current):
        raise ValueError("ks_statistic needs at least one finite value on each side")
    points = np.concatenate([reference, current])
    gap = (np.searchsorted(reference, points, side="right") / len(reference)
           - np.searchsorted(current, points, side="right") / len(current))
    return float(np.max(np.abs(gap)))


def total_variation(reference, current) -> float:
    """Total variation distance between the category shares of two samples (0 same, 1 disjoint)."""
    ref = pd.Series(np.asarray(reference, dtype=object)).value_counts(normalize=True, dropna=False)
    cur = pd.Series(np.asarray(current, dtype=object)).value_counts(normalize=True, dropna=False)
    if ref.empty or cur.empty:
        raise ValueError("total_variation needs at least one value on each side")
    ref, cur = ref.align(cur, fill_value=0.0)
    return float(0.5 * np.abs(ref - cur).sum())


def drift(previous: pd.DataFrame, current: pd.DataFrame, rules: QualityRules,
          previous_month: str = "M-1", month: str = "M") -> RuleResult:
    """PSI and KS of duration and trip_distance, TVD of pickup-zone shares; fails above any threshold."""
    figures: dict[str, float] = {}
    for column in DRIFT_COLUMNS:
        figures[f"psi_{column}"] = round(psi(previous[column], current[column], rules.psi_bins), 6)
        figures[f"ks_{column}"] = round(ks_statistic(previous[column], current[column]), 6)
    figures["tvd_pickup_zone"] = round(total_variation(previous[ZONE], current[ZONE]), 6)
    limits = {"psi": rules.drift_psi, "ks": rules.drift_ks, "tvd": rules.drift_tvd}
    exceeded = {name: value for name, value in figures.items() if value > limits[name.split("_")[0]]}
    metadata = {
        "month": month,
        "previous_month": previous_month,
        "compared": True,
        "rows": len(current),
        "previous_rows": len(previous),
        **figures,
        "threshold_psi": rules.drift_psi,
        "threshold_ks": rules.drift_ks,
        "threshold_tvd": rules.drift_tvd,
        "exceeded": sorted(exceeded),
    }
    if exceeded:
        over = (f"{name} = {value:.3f} > {limits[name.split('_')[0]]}" for name, value in exceeded.items())
        message = f"{month} drifted from {previous_month}: " + ", ".join(over)
        return RuleResult("drift", False, message, metadata)
    summary = ", ".join(f"{name} = {value:.3f}" for name, value in figures.items())
    return RuleResult("drift", True, f"{month} is close to {previous_month}: {summary}", metadata)


def nothing_to_compare(month: str, previous_month: str, why: str) -> RuleResult:
    return RuleResult("drift", True, f"nothing to compare {month} with: {why}",
                      {"month": month, "previous_month": previous_month, "compared": False})

