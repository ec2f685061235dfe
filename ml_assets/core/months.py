"""Month keys (`YYYY-MM`, as in TLC file names): the one place they are parsed and formatted."""

from __future__ import annotations

import re

import pandas as pd

MONTH_FORMAT = "%Y-%m"
_MONTH = re.compile(r"\d{4}-(0[1-9]|1[0-2])")


def check_month(month: str) -> str:
    if not _MONTH.fullmatch(month):  # not match with `$`, which allows a trailing newline
        raise ValueError(f"month must look like YYYY-MM, got {month!r}")
    return month


def is_month(text: str | None) -> bool:
    """Whether `text` is a month as check_month accepts it (a tag edited by hand may be anything)."""
    return bool(text) and _MONTH.fullmatch(text) is not None


def month_bounds(month: str) -> tuple[pd.Timestamp, pd.Timestamp]:
    """[start, end) of the month as naive timestamps (TLC times are naive local time)."""
    start = pd.Timestamp(check_month(month) + "-01")
    return start, start + pd.offsets.MonthBegin(1)


def shift_month(month: str, offset: int) -> str:
    return (pd.Period(check_month(month), freq="M") + offset).strftime(MONTH_FORMAT)


def months_between(earlier: str, later: str) -> int:
    """How many months `later` comes after `earlier` (negative if before)."""
    return (pd.Period(check_month(later), freq="M") - pd.Period(check_month(earlier), freq="M")).n


def month_range(first: str, last: str) -> list[str]:
    """Inclusive list of months from `first` to `last`."""
    periods = pd.period_range(check_month(first), check_month(last), freq="M")
    return [p.strftime(MONTH_FORMAT) for p in periods]
