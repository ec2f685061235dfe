"""Blocking data rules for a month of trips (no Dagster here): what a month must satisfy to be trained on.

Every rule returns a `RuleResult`: whether it passed, one line saying why, and metadata with the
numbers it was judged on (always including `rule`), so a failed check in the UI names the rule and
shows the figures next to the threshold.

- raw_trips: `schema` (required columns present, none given twice, pickup/dropoff named as the taxi
  type's, every known column castable to the canonical schema), `row_count`, `pickups_in_month`
  (TLC files carry a few stray timestamps; real months are at >= 0.999).
- cleaned_trips: `schema` (canonical columns + duration, castable to the canonical types),
  `row_count`, `dropped_share` (whatever cleaning drops, for any of its reasons, copies of a trip too; real green months
  drop 3-5 %), `pickups_in_month` (all),
  `no_nulls` (REQUIRED columns + duration).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ml_assets.core import tables
from ml_assets.core.months import month_bounds
from ml_assets.core.schema import (
    CANONICAL,
    CLEANED_SCHEMA,
    DURATION,
    PICKUP,
    REQUIRED,
    ambiguous_columns,
    canonical_name,
    columns_by_canonical_name,
    describe_ambiguous,
    describe_other_taxi,
    other_taxi_columns,
    to_canonical,
    wall_clock,
)

NOT_NULL = [*REQUIRED, DURATION]  # what the model needs a value in, row by row


def threshold(default, kind: str, description: str):
    """A threshold field: its default, its kind (`count`, `share` or `positive`) and what it means.

    Declared once here; the ML_ASSETS_* variable and the launchpad's config field are made from it.
    """
    return field(default=default, metadata={"kind": kind, "description": description})


def percent(share: float) -> str:
    """A threshold share as a message names it, to its own precision: `.0%` made 0.015 "2%" and 0.004 "0%"."""
    return f"{share * 100:g}%"


@dataclass(frozen=True)
class RuleThresholds:
    min_rows: int = threshold(1000, "count", "row floor of the row_count rules")
    max_dropped_share: float = threshold(0.2, "share", "ceiling of the share of raw rows cleaning may drop")
    min_pickups_in_month: float = threshold(0.95, "share", "share of raw pickups that must lie in the month")


# The blocking rules, one check each: what they hold a month to.
RAW_RULES = {
    "schema": "Required columns present, none given twice, pickup/dropoff named as the taxi type's; every known "
    "column castable to the canonical schema.",
    "row_count": "At least min_rows rows.",
    "pickups_in_month": "Share of pickups inside the month >= min_pickups_in_month.",
}
CLEANED_RULES = {
    "schema": "Canonical columns and duration present, castable to their canonical types.",
    "row_count": "At least min_rows rows.",
    "dropped_share": "Share of raw rows dropped by cleaning <= max_dropped_share.",
    "pickups_in_month": "Every pickup inside the month.",
    "no_nulls": "No nulls in the required columns and duration.",
}


@dataclass(frozen=True)
class RuleResult:
    rule: str
    passed: bool
    message: str
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        self.metadata.setdefault("rule", self.rule)
        self.metadata.setdefault("message", self.message)


def _uncastable(columns: Mapping[str, Any], schema: pa.Schema) -> dict[str, str]:
    """Column -> why it cannot be read as its type in `schema` (only columns present), as `unify_schema` reads it."""
    problems = {}
    for target in schema:
        column = columns.get(target.name)
        if column is None:
            continue
        try:
            to_canonical(column, target.type)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as error:
            problems[target.name] = f"{column.type} -> {target.type}: {str(error).splitlines()[0][:200]}"
    return problems


def _schema_result(
    present: Collection[str],
    required: Iterable[str],
    uncastable: dict[str, str],
    what: str,
    ambiguous: dict[str, list[str]] | None = None,
    taxi: str | None = None,
    other_taxi: dict[str, list[str]] | None = None,
):
    missing = sorted(set(required) - set(present))
    metadata = {"columns": len(present), "missing_columns": missing, "uncastable_columns": uncastable}
    if ambiguous:
        metadata["ambiguous_columns"] = ambiguous
    if taxi:
        metadata["taxi"] = taxi
    if other_taxi:
        metadata["other_taxi_columns"] = other_taxi
    if not missing and not uncastable and not ambiguous and not other_taxi:
        return RuleResult("schema", True, f"{what}: all required columns present and castable", metadata)
    problems = []
    if other_taxi:
        problems.append(describe_other_taxi(other_taxi, taxi))
    if missing:
        problems.append(f"missing required column(s) {', '.join(missing)}")
    if ambiguous:
        problems.append(describe_ambiguous(ambiguous))
    if uncastable:
        problems.append(
            "column(s) not castable to the canonical schema: "
            + "; ".join(f"{name} ({why})" for name, why in uncastable.items())
        )
    return RuleResult("schema", False, f"{what}: " + "; ".join(problems), metadata)


def _raw_name(trips: tables.TableOrFile, canonical: str) -> str | None:
    """The file's own name of a canonical column (`lpep_pickup_datetime` for `pickup_datetime`)."""
    return next((name for name in tables.schema(trips).names if canonical_name(name) == canonical), None)


def raw_schema(trips: tables.TableOrFile, taxi: str) -> RuleResult:
    """REQUIRED columns present, none given twice, pickup/dropoff not named as another taxi type's (`tpep_` in a
    month read as green); every known column castable, judged a batch of rows at a time (not when a column is
    given twice: which one to read is unknown)."""
    names = tables.schema(trips).names
    present = {canonical_name(name): name for name in names}
    ambiguous = ambiguous_columns(names)
    known = [present[field.name] for field in CANONICAL if field.name in present]
    uncastable: dict[str, str] = {}
    for batch in () if ambiguous else tables.batches(trips, known):
        for name, why in _uncastable(columns_by_canonical_name(batch), CANONICAL).items():
            uncastable.setdefault(name, why)
    return _schema_result(present, REQUIRED, uncastable, "raw_trips", ambiguous, taxi, other_taxi_columns(names, taxi))


class _ArrowColumns(Mapping):
    """A frame's columns as Arrow arrays, each converted when asked for: a month is judged one column at a time."""

    def __init__(self, trips: pd.DataFrame):
        self.trips = trips

    def __getitem__(self, name: str) -> pa.Array:
        try:
            return pa.array(self.trips[name], from_pandas=True)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            return pa.array(self.trips[name].astype(str))  # reported as not castable

    def __iter__(self):
        return iter(self.trips.columns)

    def __len__(self) -> int:
        return len(self.trips.columns)


def cleaned_schema(trips: pd.DataFrame) -> RuleResult:
    """Every canonical column plus duration present, each castable to its canonical type."""
    return _schema_result(
        trips.columns, CLEANED_SCHEMA.names, _uncastable(_ArrowColumns(trips), CLEANED_SCHEMA), "cleaned_trips"
    )


def row_count(rows: int, min_rows: int) -> RuleResult:
    passed = rows >= min_rows
    relation = ">=" if passed else "<"
    return RuleResult(
        "row_count",
        passed,
        f"{rows} rows {relation} the floor of {min_rows}",
        {"rows": int(rows), "floor": int(min_rows)},
    )


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
    return RuleResult(
        "pickups_in_month",
        passed,
        f"{what}: {share:.4%} of pickups inside {month} {relation} {percent(minimum)} "
        f"({rows - inside} of {rows} outside; pickups from {first} to {last})",
        metadata,
    )


def raw_pickups_in_month(trips: tables.TableOrFile, month: str, min_share: float) -> RuleResult:
    """Share of raw pickups (nulls count as outside) in [start of month, start of next month)."""
    rows, name = tables.num_rows(trips), _raw_name(trips, PICKUP)
    if name is None or PICKUP in ambiguous_columns(tables.schema(trips).names):
        why = f"no {PICKUP} column" if name is None else f"more than one {PICKUP} column"
        return RuleResult("pickups_in_month", False, f"raw_trips: {why}", {"rows": rows, "min_share": min_share})
    start, end = (pa.scalar(bound.to_pydatetime(), pa.timestamp("us")) for bound in month_bounds(month))
    inside, first, last = 0, None, None
    for batch in tables.batches(trips, [name]):
        try:
            pickups = wall_clock(batch.column(0))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as error:
            return RuleResult(
                "pickups_in_month",
                False,
                f"raw_trips: {PICKUP} is not a timestamp: {error}",
                {"rows": rows, "min_share": min_share, "type": str(batch.column(0).type)},
            )
        within = pc.and_(pc.greater_equal(pickups, start), pc.less(pickups, end))
        inside += int(pc.sum(pc.fill_null(within, False)).as_py() or 0)
        bounds = pc.min_max(pc.cast(pickups, pa.int64()))  # microseconds: a stray pickup may lie past Python's years
        first = min((t for t in (first, bounds["min"].as_py()) if t is not None), default=None)
        last = max((t for t in (last, bounds["max"].as_py()) if t is not None), default=None)
    return _pickup_result(inside, rows, min_share, _moment(first), _moment(last), "raw_trips", month)


def _moment(microseconds: int | None):
    """A pickup time as a datetime, or as numpy writes it where it lies past Python's years (the year 30000)."""
    if microseconds is None:
        return None
    try:
        return pa.scalar(microseconds, pa.timestamp("us")).as_py()
    except (OverflowError, ValueError):
        return str(np.datetime64(microseconds, "us")).replace("T", " ")


def cleaned_pickups_in_month(trips: pd.DataFrame, month: str) -> RuleResult:
    """Cleaning keeps only pickups inside the month: all of them must be."""
    if PICKUP not in trips:
        return RuleResult(
            "pickups_in_month", False, f"cleaned_trips: no {PICKUP} column", {"rows": len(trips), "min_share": 1.0}
        )
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


def dropped_share(rows: int, raw_rows: int, ceiling: float, by_reason: Mapping[str, int]) -> RuleResult:
    """Share of raw rows that cleaning removed, and for which of cleaning's reasons, most first: a month that fails
    stores nothing, so its `dropped_<reason>` metadata is never recorded and this is where the reasons show."""
    share = (raw_rows - rows) / raw_rows if raw_rows else 1.0
    passed = share <= ceiling
    relation = "<=" if passed else ">"
    reasons = dict(sorted(((reason, int(n)) for reason, n in by_reason.items() if n), key=lambda item: -item[1]))
    why = ", ".join(f"{reason} {n}" for reason, n in reasons.items())
    return RuleResult(
        "dropped_share",
        passed,
        f"cleaning dropped {raw_rows - rows} of {raw_rows} rows ({share:.4%}) {relation} {percent(ceiling)}"
        + (f" ({why})" if why else ""),
        {
            "rows": int(rows),
            "raw_rows": int(raw_rows),
            "dropped_rows": int(raw_rows - rows),
            "dropped_share": round(share, 6),
            "dropped_by_reason": reasons,
            "ceiling": ceiling,
        },
    )


def raw_rules(trips: tables.TableOrFile, month: str, thresholds: RuleThresholds, taxi: str) -> list[RuleResult]:
    """The raw_trips rules; `taxi` is the taxi type the month is read as (green or yellow)."""
    return [
        raw_schema(trips, taxi),
        row_count(tables.num_rows(trips), thresholds.min_rows),
        raw_pickups_in_month(trips, month, thresholds.min_pickups_in_month),
    ]


def cleaned_rules(
    trips: pd.DataFrame, month: str, raw_rows: int, dropped: Mapping[str, int], thresholds: RuleThresholds
) -> list[RuleResult]:
    """The cleaned_trips rules; `dropped` is cleaning's count of rows dropped for each reason."""
    return [
        cleaned_schema(trips),
        row_count(len(trips), thresholds.min_rows),
        dropped_share(len(trips), raw_rows, thresholds.max_dropped_share, dropped),
        cleaned_pickups_in_month(trips, month),
        no_nulls(trips),
    ]


class BlockingRuleError(ValueError):
    """A month fails a blocking rule, so it must not replace the month's last good value."""

    def __init__(self, where: str, failed: list[RuleResult]):
        self.failed = failed
        super().__init__(f"{where}: " + "; ".join(f"rule {result.rule} failed: {result.message}" for result in failed))


def require_passed(results: Iterable[RuleResult], where: str) -> None:
    """Raise BlockingRuleError naming every failed rule, with its figures in `failed`."""
    failed = [result for result in results if not result.passed]
    if failed:
        raise BlockingRuleError(where, failed)
