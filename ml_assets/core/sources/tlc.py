"""NYC TLC trip files over HTTP, downloaded once per published version of a month into a cache.

The cache is a folder or an object-store prefix (`s3://bucket/downloads`): a download is written
to a local temporary file, checked, and only then moved or uploaded whole into the cache.

Beside each cached file, `<file>.fingerprint.json` records the version fingerprint (size, ETag,
Last-Modified) it was downloaded with. `fetch` asks the server for the current fingerprint (one HEAD)
and downloads again only when TLC has re-published the month; see `TlcSource.fetch`.

Transient failures (network errors, timeouts, HTTP 5xx/408/429, a body cut short) are retried with
exponential backoff, or after the wait a `Retry-After` asks for (capped). A missing month (404, 410,
or 403 as TLC's CloudFront answers) fails at once. A complete download that is not valid parquet also
fails at once, without a retry: the body arrived in full, so asking again would only fetch the same
bad bytes.

Every request asks for the `identity` encoding, so that HEAD and GET describe the same bytes (parquet
is compressed already). A server that compresses anyway is still understood: requests decodes the
body, and a size the server gave for the encoded bytes is not taken for the file's.
"""

from __future__ import annotations

import dataclasses
import datetime
import email.utils
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import requests
from upath import UPath

from ml_assets.core.credentials import mask
from ml_assets.core.errors import chain
from ml_assets.core.months import check_month
from ml_assets.core.sources import (
    InvalidSourceFileError,
    MonthNotPublishedError,
    SourceUnavailableError,
    check_parquet,
    file_version,
    trip_file_name,
    version_without_etag,
)
from ml_assets.core.storage import atomic_path, location, read_json, write_json

log = logging.getLogger("ml_assets.sources")

T = TypeVar("T")

# A sensor tick must end well within Dagster's sensor timeout (60 s by default): fewer, shorter HTTP
# tries than a download gets. The next tick tries again anyway.
PROBE_RETRIES, PROBE_TIMEOUT_SECONDS = 1, 10.0

# The longest wait a server's Retry-After gets: a server asking for more is given up on sooner.
LONGEST_RETRY_AFTER_SECONDS = 60.0

IDENTITY = {"Accept-Encoding": "identity"}


class _TransientError(Exception):
    """A failed attempt that may succeed if tried again, `retry_after` seconds from now if the server said."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


# Failures worth another attempt. requests reports a body cut short as ChunkedEncodingError and a
# read timeout mid-body as ConnectionError.
_RETRYABLE = (
    _TransientError,
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
)


@dataclass(frozen=True)
class TlcSource:
    cache_dir: str | UPath  # a UPath keeps the store's login (core.storage.location)
    base_url: str
    taxi: str = "green"
    retries: int = 4
    backoff_seconds: float = 1.0
    timeout_seconds: float = 60.0
    longest_retry_after_seconds: float = LONGEST_RETRY_AFTER_SECONDS

    def url(self, month: str) -> str:
        return f"{self.base_url.rstrip('/')}/{trip_file_name(self.taxi, check_month(month))}"

    def file_of(self, month: str) -> str:
        return mask(self.url(month))

    def fetch(self, month: str) -> UPath:
        """The month's file in the cache, downloaded first if it is missing or TLC re-published it.

        Every call probes the server once (a HEAD). A valid cached file whose recorded fingerprint
        has the probe's size, ETag and Last-Modified (`same_version`: a new ETag alone, with the same
        size and Last-Modified, is none) is returned without a download; otherwise the
        month is downloaded again, and the cached file and its fingerprint are replaced only once the
        new file has arrived in full and reads as parquet (a failed download leaves the old cache in
        place and raises). A cached file without a recorded fingerprint (placed by hand or by an
        older version of this code) is kept if its size matches and it is not older than the
        published Last-Modified; its fingerprint is then recorded.

        With a valid cached file, `fetch` still returns it, logging a warning, when
        - the server cannot be reached (SourceUnavailableError from the probe): offline use works,
          though a re-publication cannot be noticed until the server answers again;
        - the month is no longer published (404/403): TLC rarely withdraws a file, and a CDN hiccup
          must not fail a run whose data is at hand.
        Without one, those cases raise SourceUnavailableError and MonthNotPublishedError.
        """
        url = self.url(month)
        target = location(self.cache_dir) / trip_file_name(self.taxi, month)
        cached = self._cached_file_is_valid(target, month)
        try:
            published = self._fingerprint(url, month)
        except SourceUnavailableError as exc:
            if not cached:
                raise
            log.warning("month %s: cannot check for a re-published file (%s); using cached %s", month, exc, target)
            return target
        except MonthNotPublishedError:
            if not cached:
                raise
            log.warning("month %s: %s is no longer published; using cached %s", month, mask(url), target)
            return target
        if cached:
            recorded = self._recorded_fingerprint(target, published)
            if recorded is not None and same_version(recorded, published):
                log.debug("month %s: using cached %s", month, target)
                return target
            log.info(
                "month %s: TLC re-published it (cached %s, now %s), downloading again",
                month,
                _version(recorded),
                _version(published),
            )
        log.info("month %s: downloading %s", month, mask(url))
        with atomic_path(target) as tmp:
            received = self._with_retries(url, lambda: self._download(url, month, tmp, published.get("size")))
        # The parquet file first: a crash in between leaves an outdated fingerprint beside the new
        # bytes, which only costs another download, never a stale file taken for a new one.
        # The GET's own headers describe the bytes received, should the file change after the probe.
        fingerprint = published | {key: value for key, value in received.items() if value is not None}
        write_json(fingerprint, _fingerprint_path(target))
        log.info("month %s: saved %s (%d bytes)", month, target, target.stat().st_size)
        return target

    def for_probing(self) -> TlcSource:
        return dataclasses.replace(
            self,
            retries=min(self.retries, PROBE_RETRIES),
            timeout_seconds=min(self.timeout_seconds, PROBE_TIMEOUT_SECONDS),
            longest_retry_after_seconds=min(self.longest_retry_after_seconds, PROBE_TIMEOUT_SECONDS),
        )

    def probe(self, month: str) -> dict | None:
        """Version fingerprint (size, ETag, Last-Modified) of the published month, or None if absent."""
        try:
            return self._fingerprint(self.url(month), month)
        except MonthNotPublishedError:
            return None

    def _fingerprint(self, url: str, month: str) -> dict:
        return self._with_retries(url, lambda: self._probe_once(url, month))

    def _cached_file_is_valid(self, target: UPath, month: str) -> bool:
        """Whether the cached file exists, reads as parquet and has the size it was downloaded with; an invalid
        one is removed. A file cut short or replaced can still be valid parquet, of other trips."""
        if not target.exists():
            return False
        try:
            check_parquet(target, month)
            size, recorded = target.stat().st_size, _recorded_size(target)
            if recorded is not None and size != recorded:
                raise InvalidSourceFileError(f"{target} has {size} bytes, not the {recorded} it was downloaded with")
            return True
        except InvalidSourceFileError as exc:
            log.warning("month %s: cached file is invalid, downloading again: %s", month, exc)
            target.unlink(missing_ok=True)  # another run of the month may have removed it first
            _fingerprint_path(target).unlink(missing_ok=True)
            return False

    def _recorded_fingerprint(self, target: UPath, published: dict) -> dict | None:
        """The fingerprint the cached file was downloaded with, or None if it is not known.

        A file without a readable record is adopted as the published version (and the record
        written) if its size matches and it was written no earlier than the published Last-Modified.
        """
        path = _fingerprint_path(target)
        try:
            recorded = read_json(path)
            if isinstance(recorded, dict):
                return recorded
        except FileNotFoundError:
            pass
        except (OSError, ValueError) as exc:
            log.warning("%s is unreadable, ignoring it: %s", path, exc)
        stat = target.stat()
        if published.get("size") != stat.st_size:
            return None
        modified = _http_date(published.get("last_modified"))
        if published.get("last_modified") is not None and (modified is None or stat.st_mtime < modified):
            return None
        log.info("%s: no recorded fingerprint, adopting the published one (same size, newer file)", target)
        write_json(published, path)
        return published

    def _with_retries(self, url: str, attempt: Callable[[], T]) -> T:
        """`attempt()`, tried again after a transient failure; SourceUnavailableError once tries run out.

        The error is raised outside the `except` blocks, so that its chain holds only the masked cause.
        """
        error: Exception | None = None
        for n in range(self.retries + 1):
            if n:
                delay = self._delay(n - 1, error)
                log.warning("%s: attempt %d failed (%s), retrying in %.2fs", mask(url), n, mask(str(error)), delay)
                time.sleep(delay)
            try:
                return attempt()
            except _RETRYABLE as exc:
                error = exc
            except requests.RequestException as exc:  # e.g. a URL requests cannot use: asking again cannot help
                error = exc
                break
        else:
            message = f"{url} unavailable after {self.retries + 1} attempts: {error}"
            raise SourceUnavailableError(mask(message)) from _masked(error)
        raise SourceUnavailableError(mask(f"{url}: {error}")) from _masked(error)

    def _delay(self, attempt: int, error: Exception | None) -> float:
        """Seconds to wait after failed attempt number `attempt` (from 0): what the server asked, else backoff."""
        asked = getattr(error, "retry_after", None)
        if asked is not None:
            return min(asked, self.longest_retry_after_seconds)
        return self.backoff_seconds * 2**attempt

    def _download(self, url: str, month: str, dest: Path, published_size: int | None) -> dict:
        """Write the file at `url` to `dest` and check it; return the fingerprint of what the response said it was.

        A body shorter than the response's Content-Length, or without one than the size the probe
        saw, is transient (retried) and checked before the parquet check that would call it invalid.
        """
        with requests.get(url, headers=IDENTITY, stream=True, timeout=self.timeout_seconds) as resp:
            _check_status(resp, url, month)
            with open(dest, "wb") as out:
                for chunk in resp.iter_content(chunk_size=1 << 20):
                    out.write(chunk)
            length, decoded = _content_length(resp, url), _content_encoded(resp)
            etag, last_modified = resp.headers.get("ETag"), resp.headers.get("Last-Modified")
            content_type = resp.headers.get("Content-Type")
        # urllib3 usually catches a short body itself; this also covers versions that do not.
        written = dest.stat().st_size
        expected = None if decoded else length if length is not None else published_size
        if expected is not None and written < expected:
            raise _TransientError(f"body ended after {written} of {expected} bytes")
        try:
            check_parquet(dest, month)
        except InvalidSourceFileError as exc:
            raise InvalidSourceFileError(
                f"month {month}: {mask(url)} is not readable parquet ({written} bytes received, Content-Type "
                f"{content_type or 'not given'}): {exc.__cause__}"
            ) from exc.__cause__
        return {"url": mask(url), "size": written, "etag": etag, "last_modified": last_modified}

    def _probe_once(self, url: str, month: str) -> dict:
        resp = requests.head(url, headers=IDENTITY, timeout=self.timeout_seconds, allow_redirects=True)
        if resp.status_code in (405, 501):
            headers = IDENTITY | {"Range": "bytes=0-0"}
            resp = requests.get(url, headers=headers, stream=True, timeout=self.timeout_seconds)
            resp.close()  # headers are all we need; stream=True spares us the body if Range is ignored
        _check_status(resp, url, month)
        return {
            "url": mask(url),  # stored beside the file: never a password
            "size": _total_size(resp, url),
            "etag": resp.headers.get("ETag"),
            "last_modified": resp.headers.get("Last-Modified"),
        }


def _recorded_size(target: UPath) -> int | None:
    """The size recorded beside a cached file when it was downloaded, if a readable record says."""
    try:
        size = read_json(_fingerprint_path(target)).get("size")
    except (OSError, ValueError, AttributeError):
        return None
    return int(size) if isinstance(size, int | str) and str(size).isdigit() else None


def same_version(a: dict, b: dict) -> bool:
    """Whether two fingerprints describe the same published file (where it lives does not matter).

    Where both have an ETag and a Last-Modified, the ETag is left out, as the sensor does
    (`version_without_etag`). Only the fields both give are compared: a server that leaves one out (a
    HEAD without Content-Length) has not re-published the file. With none in common, nothing shows it
    unchanged.
    """
    dated_a, dated_b = version_without_etag(a), version_without_etag(b)
    if dated_a is None or dated_b is None:
        dated_a, dated_b = file_version(a), file_version(b)
    known_a, known_b = _known(dated_a), _known(dated_b)
    common = known_a.keys() & known_b.keys()
    return bool(common) and all(known_a[key] == known_b[key] for key in common)


def _known(version: dict) -> dict:
    return {key: value for key, value in version.items() if value is not None}


def _version(fingerprint: dict | None) -> str:
    if fingerprint is None:
        return "unknown"
    return ", ".join(f"{key}={value}" for key, value in sorted(file_version(fingerprint).items()))


def _fingerprint_path(target: UPath) -> UPath:
    return target.with_name(target.name + ".fingerprint.json")


def _http_date(value: str | None) -> float | None:
    """An HTTP date (`Last-Modified`) as a POSIX timestamp, or None if absent or unparsable."""
    if not value:
        return None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return (when if when.tzinfo else when.replace(tzinfo=datetime.timezone.utc)).timestamp()


def _check_status(resp: requests.Response, url: str, month: str) -> None:
    code = resp.status_code
    if code in (403, 404, 410):
        raise MonthNotPublishedError(f"month {month} is not published yet at {mask(url)}")
    if code in (408, 429) or code >= 500:
        raise _TransientError(f"HTTP {code}", _retry_after(resp))
    if not resp.ok:
        raise SourceUnavailableError(f"{mask(url)} answered HTTP {code}")


def _retry_after(resp: requests.Response) -> float | None:
    """The seconds a `Retry-After: <seconds>` asks to wait; None if absent or an HTTP date."""
    value = resp.headers.get("Retry-After", "").strip()
    return float(value) if value.isdigit() else None


def _total_size(resp: requests.Response, url: str) -> int | None:
    """Size of the whole file: from Content-Range on a 206 (`bytes 0-0/1234`), else Content-Length.

    None if unknown, or if the server compressed the response: its length is not the file's then.
    """
    if resp.status_code == 206:
        total = resp.headers.get("Content-Range", "").rpartition("/")[2]
        return int(total) if total.isdigit() else None
    return None if _content_encoded(resp) else _content_length(resp, url)


def _content_length(resp: requests.Response, url: str) -> int | None:
    """The response's Content-Length, if any.

    A header repeated with the same value (requests joins them: `123, 123`) is accepted, as RFC 9110
    allows; differing or unreadable values raise SourceUnavailableError, as nothing tells which is right
    (urllib3 2 already refuses differing ones; older versions leave that to us).
    """
    header = resp.headers.get("Content-Length")
    if header is None:
        return None
    values = {value.strip() for value in header.split(",")}
    if len(values) != 1 or not next(iter(values)).isdigit():
        raise SourceUnavailableError(f"{mask(url)} answered with an unusable Content-Length: {header!r}")
    return int(values.pop())


def _content_encoded(resp: requests.Response) -> bool:
    """Whether the server compressed the body although asked not to (requests decodes it while reading)."""
    return resp.headers.get("Content-Encoding", "identity").strip().lower() != "identity"


def _masked(error: Exception | None) -> Exception | None:
    """`error`, with a password shown as `***` in its message and in those of the errors it came from.

    requests puts a URL, user info included, into some messages (InvalidURL); a traceback shows every
    link of the chain. The links keep their classes, so that an outage is still recognised as one
    (`core.outages.is_outage`).
    """
    for link in chain(error):
        if mask(str(link)) != str(link):
            link.args = (mask(str(link)),)
    return error
