"""Which months a sensor tick should ingest: source fingerprints against its cursor (no Dagster here).

The cursor is JSON, `{"months": {"YYYY-MM": fingerprint hash}}`: the version of each month last
requested. A month is due when the source has it and the cursor does not (new) or holds another
version (re-published); a month already materialized before the cursor knew it is adopted as the
baseline when its recorded size matches. A new ETag alone, with the same size and Last-Modified, is
no re-publication (`same_version_hash`, `core.sources.version_without_etag`).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any, NamedTuple

from ml_assets.core.outages import is_outage
from ml_assets.core.sources import SourceError, TripFileSource, file_version, version_without_etag

log = logging.getLogger("ml_assets.month_plan")

PROBE_WORKERS = 8
# A tick's probing ends in time for Dagster's sensor timeout (60 s); months not reached wait for the next tick.
PROBE_SECONDS = 40.0


def fingerprint_hash(fingerprint: Mapping[str, Any]) -> str:
    """Short, stable hash of a source's version fingerprint (key order and location keys do not matter).

    A fingerprint with both an ETag and a Last-Modified gets `:` and the hash of its `version_without_etag`
    after it, for `same_version_hash`; the part before is the whole version's hash, as cursors of earlier
    versions hold it.
    """
    whole, dated = _hash(file_version(fingerprint)), version_without_etag(fingerprint)
    return whole if dated is None else f"{whole}:{_hash(dated)}"


def same_version_hash(recorded: str, current: str) -> bool:
    """Whether a hash from the cursor and one from a probe (`fingerprint_hash`) describe the same version.

    Where both hashes have it, the one without the ETag decides (`version_without_etag` says why). A hash
    written by an earlier version, without that part, is compared whole, so an upgrade re-requests nothing.
    """
    whole, _, dated = recorded.partition(":")
    current_whole, _, current_dated = current.partition(":")
    return whole == current_whole or (bool(dated) and dated == current_dated)


def _hash(version: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(version, sort_keys=True, default=str).encode()).hexdigest()[:16]


def load_cursor(cursor: str | None) -> dict[str, str]:
    """Fingerprint hash per month from the sensor's cursor; an unreadable cursor counts as empty."""
    if not cursor:
        return {}
    try:
        months = json.loads(cursor)["months"]
        if isinstance(months, dict):
            return {str(month): str(value) for month, value in months.items()}
    except (ValueError, KeyError, TypeError):
        pass
    log.warning("ignoring unreadable cursor %r", cursor[:200])
    return {}


def dump_cursor(months: Mapping[str, str]) -> str:
    return json.dumps({"months": dict(sorted(months.items()))}, sort_keys=True)


class Probed(NamedTuple):
    fingerprints: dict[str, dict | None]  # month -> its fingerprint, None where not published
    unchecked: dict[str, str]  # month -> why it was not checked this tick; the next tick tries it again


def probe_months(
    source: TripFileSource, months: Iterable[str], workers: int = PROBE_WORKERS, seconds: float | None = None
) -> Probed:
    """`source.probe` for every month, newest first, a few at a time, for at most `seconds` (PROBE_SECONDS).

    A month whose own probe fails (the server answered it with an error, or could not be reached for it once
    another month had answered) or that was not reached in time is left unchecked, so that one bad or slow
    month does not hold back the others. A source whose first answer is that it cannot be reached, or that
    fails for every month, raises the error: the tick is skipped. A month that answered with an error is no
    sign of an unreachable source, whatever the other months did.
    """
    seconds = PROBE_SECONDS if seconds is None else seconds
    months = sorted(months, reverse=True)  # a slow source reaches the newest months, the likely new ones, first
    pool = ThreadPoolExecutor(max_workers=max(1, min(workers, len(months) or 1)))
    futures = {pool.submit(source.probe, month): month for month in months}
    fingerprints, unchecked, errors = {}, {}, []
    try:
        for future in as_completed(futures, timeout=seconds):
            month = futures[future]
            try:
                fingerprints[month] = future.result()
            except SourceError as error:
                if not is_outage(error):
                    unchecked[month], errors = str(error), [*errors, error]
                elif fingerprints or unchecked:
                    unchecked[month] = f"unreachable: {error}"
                else:
                    raise  # nothing answered first: the source cannot be reached, no need to ask for every month
    except TimeoutError:
        late = [month for month in months if month not in fingerprints and month not in unchecked]
        unchecked.update(dict.fromkeys(late, f"not checked within the tick's {seconds:.0f} s"))
    finally:
        pool.shutdown(wait=False, cancel_futures=True)  # a probe still waiting on its server ends on its timeout
    if errors and len(errors) == len(months):
        raise errors[0]
    return Probed(fingerprints, unchecked)


class Due(NamedTuple):
    month: str
    fingerprint: str
    reason: str  # "new" or "republished"
    replaces: str | None = None  # the cursor's hash of the version requested before, if any

    @property
    def run_key(self) -> str:
        """The same for a month and version whenever it is due again in the same state (a lost cursor, a retried
        tick), which Dagster launches once per sensor; after the version it replaces, so a month put back to a
        version requested before (a file restored with its size and time) is requested anew."""
        return (
            f"{self.month}:{self.fingerprint}"
            if self.replaces is None
            else f"{self.month}:{self.replaces}>{self.fingerprint}"
        )


class Plan(NamedTuple):
    due: list[Due]  # every month that needs ingesting, oldest first
    cursor: dict[str, str]  # the cursor before any request, with adopted baselines added
    pending: list[str]  # requested before, same fingerprint, still not materialized
    in_progress: list[str]  # would be due, but a queued or running run or backfill is to ingest it


def plan_months(
    fingerprints: Mapping[str, dict | None],
    seen: Mapping[str, str],
    materialized: set[str],
    recorded_size: Callable[[str], int | None],
    in_progress: set[str] = frozenset(),
) -> Plan:
    """What to ingest, given the source's fingerprints, the cursor and raw_trips' materializations.

    `recorded_size(month)` returns the `size_bytes` raw_trips recorded for a materialized month
    (None if unknown); it is only called for materialized months the cursor has no entry for.
    A month `in_progress` (a run or backfill not yet finished will ingest it) is not due, and stays out
    of the cursor: once that run is over, the next plan adopts what it ingested, or finds the month due.
    """
    cursor = dict(seen)
    due, pending, waiting = [], [], []
    for month in sorted(fingerprints):
        fingerprint = fingerprints[month]
        if fingerprint is None:
            continue  # not published (yet)
        current, previous = fingerprint_hash(fingerprint), seen.get(month)
        if previous is not None and same_version_hash(previous, current):
            cursor[month] = current  # the hash as this version writes it, for the next tick's comparison
            if month not in materialized:
                pending.append(month)
            continue
        reason = "new" if previous is None else "republished"
        if previous is None and month in materialized:
            size, recorded = fingerprint.get("size"), recorded_size(month)
            if size is None or recorded is None or int(size) == int(recorded):
                cursor[month] = current  # already ingested from this version: adopt as baseline
                continue
            reason = "republished"
        if month in in_progress:
            waiting.append(month)
            continue
        due.append(Due(month, current, reason, previous))
    return Plan(due, cursor, pending, waiting)


def absence_warning(
    fingerprints: Mapping[str, dict | None],
    seen: Mapping[str, str],
    first_month: str | None,
    where: str,
    file_of: Callable[[str], str],
) -> str | None:
    """What looks wrong about the months `where` says are not published, or None if nothing does.

    TLC's CDN answers 403 for a month not yet published, so absence alone is no error. But a month an earlier
    tick found published (it is in the cursor), or every month down to the first partition, is no month yet
    to come: that is what a wrong URL or folder looks like, and it would read as "nothing new" forever.
    """
    absent = sorted(month for month, fingerprint in fingerprints.items() if fingerprint is None)
    problems = []
    if first_month in absent and len(absent) == len(fingerprints):
        problems.append(
            f"{where} publishes no month, not even the first partition {first_month} ({file_of(first_month)})"
        )
    gone = [month for month in absent if month in seen]
    if gone:
        problems.append(
            f"{where} no longer publishes {', '.join(gone)}, found published by an earlier tick "
            f"({file_of(gone[0])}{', …' if len(gone) > 1 else ''})"
        )
    if not problems:
        return None
    return (
        "; ".join(problems) + ": check the source's URL or folder and the taxi type (TLC answers 403 for a file it "
        "does not have); what was ingested stays"
    )
