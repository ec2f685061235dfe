"""NYC TLC trip files over HTTP, downloaded once per month into a local cache.

Transient failures (network errors, timeouts, HTTP 5xx/429, a body cut short) are retried with
exponential backoff. A missing month (404, or 403 as TLC's CloudFront answers) fails at once. A
complete download that is not valid parquet also fails at once, without a retry: the body arrived
in full, so asking again would only fetch the same bad bytes.
"""
from __future__ import annotations

import logging
import pathlib
import time
from dataclasses import dataclass
from typing import Callable, TypeVar

import requests

from ml_assets.core.months import check_month
from ml_assets.core.sources import (
    InvalidSourceFileError,
    MonthNotPublishedError,
    SourceUnavailableError,
    check_parquet,
    trip_file_name,
)
from ml_assets.core.storage import atomic_path

DEFAULT_TLC_URL = "https://d37ci6vzurychx.cloudfront.net/trip-data"

log = logging.getLogger("ml_assets.sources")

T = TypeVar("T")


class _TransientError(Exception):
    """A failed attempt that may succeed if tried again."""


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
    cache_dir: str
    base_url: str = DEFAULT_TLC_URL
    taxi: str = "green"
    retries: int = 4
    backoff_seconds: float = 1.0
    timeout_seconds: float = 60.0

    def url(self, month: str) -> str:
        return f"{self.base_url.rstrip('/')}/{trip_file_name(self.taxi, check_month(month))}"

    def fetch(self, month: str) -> pathlib.Path:
        """The month's file in the cache, downloaded first if it is not there yet."""
        url = self.url(month)
        target = pathlib.Path(self.cache_dir) / trip_file_name(self.taxi, month)
        if target.exists():
            try:
                check_parquet(target, month)
                log.debug("month %s: using cached %s", month, target)
                return target
            except InvalidSourceFileError as exc:
                log.warning("month %s: cached file is invalid, downloading again: %s", month, exc)
                target.unlink()
        log.info("month %s: downloading %s", month, url)
        with atomic_path(target) as tmp:
            self._with_retries(url, lambda: self._download(url, month, tmp))
            check_parquet(tmp, month)
        log.info("month %s: saved %s (%d bytes)", month, target, target.stat().st_size)
        return target

    def probe(self, month: str) -> dict | None:
        """Version fingerprint (size, ETag, Last-Modified) of the published month, or None if absent."""
        url = self.url(month)
        try:
            return self._with_retries(url, lambda: self._probe_once(url, month))
        except MonthNotPublishedError:
            return None

    def _with_retries(self, url: str, attempt: Callable[[], T]) -> T:
        last_error: Exception | None = None
        for n in range(self.retries + 1):
            if n:
                delay = self.backoff_seconds * 2 ** (n - 1)
                log.warning("%s: attempt %d failed (%s), retrying in %.2fs", url, n, last_error, delay)
                time.sleep(delay)
            try:
                return attempt()
            except _RETRYABLE as exc:
                last_error = exc
        raise SourceUnavailableError(
            f"{url} unavailable after {self.retries + 1} attempts: {last_error}"
        ) from last_error

    def _download(self, url: str, month: str, dest: pathlib.Path) -> None:
        # identity: parquet is compressed already, and Content-Length then counts the bytes we write.
        headers = {"Accept-Encoding": "identity"}
        with requests.get(url, headers=headers, stream=True, timeout=self.timeout_seconds) as resp:
            _check_status(resp, url, month)
            with open(dest, "wb") as out:
                for chunk in resp.iter_content(chunk_size=1 << 20):
                    out.write(chunk)
            expected = resp.headers.get("Content-Length")
        # urllib3 usually catches a short body itself; this also covers versions that do not.
        written = dest.stat().st_size
        if expected is not None and written != int(expected):
            raise _TransientError(f"body ended after {written} of {expected} bytes")

    def _probe_once(self, url: str, month: str) -> dict:
        resp = requests.head(url, timeout=self.timeout_seconds, allow_redirects=True)
        if resp.status_code in (405, 501):
            resp = requests.get(
                url, headers={"Range": "bytes=0-0"}, stream=True, timeout=self.timeout_seconds
            )
            resp.close()  # headers are all we need; stream=True spares us the body if Range is ignored
        _check_status(resp, url, month)
        return {
            "url": url,
            "size": _total_size(resp),
            "etag": resp.headers.get("ETag"),
            "last_modified": resp.headers.get("Last-Modified"),
        }


def _check_status(resp: requests.Response, url: str, month: str) -> None:
    code = resp.status_code
    if code in (403, 404):
        raise MonthNotPublishedError(f"month {month} is not published yet at {url}")
    if code == 429 or code >= 500:
        raise _TransientError(f"HTTP {code}")
    if not resp.ok:
        raise SourceUnavailableError(f"{url} answered HTTP {code}")


def _total_size(resp: requests.Response) -> int | None:
    """Size of the whole file: from Content-Range on a 206 (`bytes 0-0/1234`), else Content-Length."""
    if resp.status_code == 206:
        total = resp.headers.get("Content-Range", "").rpartition("/")[2]
        return int(total) if total.isdigit() else None
    length = resp.headers.get("Content-Length")
    return int(length) if length is not None else None
