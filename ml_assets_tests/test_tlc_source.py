"""TlcSource against a real local HTTP server serving the TLC sample files."""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import secrets
import shutil
import time
import traceback

import pytest

from ml_assets.core.errors import chain
from ml_assets.core.outages import is_outage
from ml_assets.core.sources import (
    InvalidSourceFileError,
    MonthNotPublishedError,
    SourceUnavailableError,
)
from ml_assets.core.sources.tlc import TlcSource
from ml_assets_tests.http_server import answering, serve_directory
from ml_assets_tests.support import TLC_DATA

MONTH = "2021-01"
NAME = f"green_tripdata_{MONTH}.parquet"
RECORD = f"{NAME}.fingerprint.json"
DATA = (TLC_DATA / NAME).read_bytes()


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def source(tmp_path, server, **overrides) -> TlcSource:
    options = dict(backoff_seconds=0.01, timeout_seconds=2.0)
    return TlcSource(cache_dir=str(tmp_path / "cache"), base_url=server.url, **(options | overrides))


def cache_listing(tmp_path) -> list[str]:
    cache = tmp_path / "cache"
    return sorted(p.name for p in cache.iterdir()) if cache.exists() else []


def methods(server) -> list[str]:
    return [r.method for r in server.requests]


def recorded(tmp_path) -> dict:
    return json.loads((tmp_path / "cache" / RECORD).read_text())


@pytest.fixture
def served(tmp_path):
    """A directory served over HTTP with a copy of the month's file, so a test can re-publish it."""
    folder = tmp_path / "served"
    folder.mkdir()
    shutil.copy(TLC_DATA / NAME, folder / NAME)
    with serve_directory(folder) as server:
        yield folder, server


def test_url_joins_base_and_file_name():
    src = TlcSource(cache_dir="unused", base_url="https://example.test/trip-data/")
    assert src.url(MONTH) == f"https://example.test/trip-data/{NAME}"
    with pytest.raises(ValueError):
        src.url("2021-1")


def test_fetch_downloads_byte_identical_file(tmp_path, tlc_server):
    path = source(tmp_path, tlc_server).fetch(MONTH)
    assert path == tmp_path / "cache" / NAME
    assert sha256(path) == sha256(TLC_DATA / NAME)
    assert cache_listing(tmp_path) == [NAME, RECORD]
    assert methods(tlc_server) == ["HEAD", "GET"]
    probed = source(tmp_path, tlc_server).probe(MONTH)
    assert recorded(tmp_path) == probed


def test_cached_month_is_not_downloaded_again(tmp_path, tlc_server):
    src = source(tmp_path, tlc_server)
    src.fetch(MONTH)
    assert src.fetch(MONTH) == tmp_path / "cache" / NAME
    assert src.fetch(MONTH) == tmp_path / "cache" / NAME
    assert methods(tlc_server) == ["HEAD", "GET", "HEAD", "HEAD"]  # only a probe once cached


def test_prefilled_cache_is_adopted_without_download(tmp_path, tlc_server):
    (tmp_path / "cache").mkdir()
    shutil.copy(TLC_DATA / NAME, tmp_path / "cache" / NAME)  # no fingerprint record, newer than the published file
    source(tmp_path, tlc_server).fetch(MONTH)
    assert methods(tlc_server) == ["HEAD"]
    assert cache_listing(tmp_path) == [NAME, RECORD]
    source(tmp_path, tlc_server).fetch(MONTH)
    assert methods(tlc_server) == ["HEAD", "HEAD"]
    # A copy of another size (here another month's file, valid parquet and newer) is not the published file.
    (tmp_path / "other" / "cache").mkdir(parents=True)
    shutil.copy(TLC_DATA / "green_tripdata_2021-02.parquet", tmp_path / "other" / "cache" / NAME)
    assert sha256(source(tmp_path / "other", tlc_server).fetch(MONTH)) == sha256(TLC_DATA / NAME)
    assert methods(tlc_server)[2:] == ["HEAD", "GET"]


def test_prefilled_cache_older_than_published_file_is_downloaded_again(tmp_path, tlc_server):
    (tmp_path / "cache").mkdir()
    shutil.copy(TLC_DATA / NAME, tmp_path / "cache" / NAME)
    os.utime(tmp_path / "cache" / NAME, (946684800, 946684800))  # 2000-01-01: before TLC published it
    source(tmp_path, tlc_server).fetch(MONTH)
    assert methods(tlc_server) == ["HEAD", "GET"]
    assert cache_listing(tmp_path) == [NAME, RECORD]
    # A Last-Modified that cannot be read does not show the copy newer either.
    (tmp_path / "unread" / "cache").mkdir(parents=True)
    shutil.copy(TLC_DATA / NAME, tmp_path / "unread" / "cache" / NAME)
    with answering(ok(("Last-Modified", "yesterday"))) as httpd:
        source(tmp_path / "unread", httpd).fetch(MONTH)
    assert seen_methods(httpd) == ["HEAD", "GET"]


def test_republished_month_is_downloaded_again(tmp_path, served):
    folder, server = served
    src = source(tmp_path, server)
    first = src.probe(MONTH)
    src.fetch(MONTH)
    shutil.copy(TLC_DATA / "green_tripdata_2022-02.parquet", folder / NAME)  # new bytes, size and ETag
    republished = src.probe(MONTH)
    assert republished["etag"] != first["etag"]

    path = src.fetch(MONTH)
    assert sha256(path) == sha256(TLC_DATA / "green_tripdata_2022-02.parquet")
    assert recorded(tmp_path) == republished
    assert cache_listing(tmp_path) == [NAME, RECORD]
    assert methods(server) == ["HEAD", "HEAD", "GET", "HEAD", "HEAD", "GET"]
    src.fetch(MONTH)
    assert methods(server)[-1:] == ["HEAD"] and server.count("GET") == 2  # the new version once too

    # Re-published between the probe and the download: the record is of the bytes received, so not fetched again.
    with answering(dated('"a"'), dated('"b"', LATER, OTHER)) as httpd:
        src = source(tmp_path / "raced", httpd)
        src.fetch(MONTH)
        src.fetch(MONTH)
    assert seen_methods(httpd) == ["HEAD", "GET", "HEAD"]


def test_touched_month_is_downloaded_again(tmp_path, served):
    """Same bytes but a new Last-Modified: a different fingerprint, as the sensor sees it too."""
    folder, server = served
    src = source(tmp_path, server)
    src.fetch(MONTH)
    stat = (folder / NAME).stat()
    os.utime(folder / NAME, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    src.fetch(MONTH)
    assert methods(server) == ["HEAD", "GET", "HEAD", "GET"]
    assert recorded(tmp_path) == src.probe(MONTH)


def test_failed_redownload_keeps_the_cached_version(tmp_path, served):
    folder, server = served
    src = source(tmp_path, server)
    src.fetch(MONTH)
    before = recorded(tmp_path)
    (folder / NAME).write_bytes(b"<html>Access denied</html>" * 100)
    with pytest.raises(InvalidSourceFileError):
        src.fetch(MONTH)
    assert sha256(tmp_path / "cache" / NAME) == sha256(TLC_DATA / NAME)
    assert recorded(tmp_path) == before
    assert cache_listing(tmp_path) == [NAME, RECORD]


def test_unreachable_server_uses_the_cached_file(tmp_path, caplog):
    with serve_directory(TLC_DATA) as server:
        source(tmp_path, server).fetch(MONTH)
    # its port is now closed: connections are refused
    with caplog.at_level(logging.WARNING, logger="ml_assets.sources"):
        path = source(tmp_path, server, retries=1).fetch(MONTH)
    assert path == tmp_path / "cache" / NAME
    assert sha256(path) == sha256(TLC_DATA / NAME)
    assert any("cannot check for a re-published file" in r.getMessage() for r in caplog.records)


def test_withdrawn_month_uses_the_cached_file(tmp_path, tlc_server, caplog):
    src = source(tmp_path, tlc_server)
    src.fetch(MONTH)
    tlc_server.script = [404]
    with caplog.at_level(logging.WARNING, logger="ml_assets.sources"):
        assert src.fetch(MONTH) == tmp_path / "cache" / NAME
    assert methods(tlc_server) == ["HEAD", "GET", "HEAD"]
    assert any("no longer published" in r.getMessage() for r in caplog.records)


def test_invalid_cached_file_is_downloaded_again(tmp_path, tlc_server):
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / NAME).write_bytes(b"not parquet")
    path = source(tmp_path, tlc_server).fetch(MONTH)
    assert sha256(path) == sha256(TLC_DATA / NAME)
    assert methods(tlc_server) == ["HEAD", "GET"]


def test_an_invalid_cached_file_another_run_removed_first_is_downloaded_again(tmp_path, tlc_server, monkeypatch):
    """Two runs of the month at once both find the cached file invalid; the second to remove it had failed with
    FileNotFoundError instead of downloading."""
    from ml_assets.core.sources import tlc

    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / NAME).write_bytes(b"not parquet")
    check = tlc.check_parquet

    def removed_by_another_run_meanwhile(path, month):
        try:
            check(path, month)
        finally:
            (tmp_path / "cache" / NAME).unlink(missing_ok=True)

    monkeypatch.setattr(tlc, "check_parquet", removed_by_another_run_meanwhile)
    path = source(tmp_path, tlc_server).fetch(MONTH)
    assert sha256(path) == sha256(TLC_DATA / NAME)


@pytest.mark.parametrize("offline", [False, True], ids=["online", "offline"])
def test_a_cached_file_cut_short_is_not_used(tmp_path, tlc_server, offline):
    """Valid parquet, but not the bytes it was downloaded with (a third of the month written over it): it had
    been ingested as the month, online and offline alike."""
    import pyarrow.parquet as pq

    src = source(tmp_path, tlc_server)
    path = src.fetch(MONTH)
    table = pq.read_table(path)
    pq.write_table(table.slice(0, table.num_rows // 3), path)
    if offline:
        with pytest.raises(SourceUnavailableError):
            TlcSource(cache_dir=str(tmp_path / "cache"), base_url="http://127.0.0.1:9", retries=0).fetch(MONTH)
        assert not path.exists()
    assert sha256(src.fetch(MONTH)) == sha256(TLC_DATA / NAME)


def test_transient_errors_are_retried(tmp_path, tlc_server, caplog):
    tlc_server.script = [503, "serve", 429, 500, 408]  # the probe fails once, the download three times
    with caplog.at_level(logging.WARNING, logger="ml_assets.sources"):
        path = source(tmp_path, tlc_server).fetch(MONTH)
    assert sha256(path) == sha256(TLC_DATA / NAME)
    assert methods(tlc_server) == ["HEAD", "HEAD", "GET", "GET", "GET", "GET"]
    assert sum("retrying" in r.getMessage() for r in caplog.records) == 4


def test_retries_exhausted_raise_source_unavailable(tmp_path, tlc_server):
    tlc_server.script = [503] * 3
    src = source(tmp_path, tlc_server, retries=2)
    with pytest.raises(SourceUnavailableError, match="HTTP 503") as info:
        src.fetch(MONTH)
    assert src.url(MONTH) in str(info.value)
    assert tlc_server.count() == 3
    assert cache_listing(tmp_path) == []


def test_unreachable_server_raises_source_unavailable(tmp_path):
    with serve_directory(TLC_DATA) as closed:
        pass  # its port is now closed: connections are refused
    with pytest.raises(SourceUnavailableError, match="after 3 attempts"):
        source(tmp_path, closed, retries=2).fetch(MONTH)


@pytest.mark.parametrize("script", [[], [403], [410]], ids=["404", "403", "410"])
def test_missing_month_fails_at_once(tmp_path, tlc_server, script):
    tlc_server.script = list(script)
    month = "2021-01" if script else "2030-01"
    with pytest.raises(MonthNotPublishedError, match=f"month {month} is not published yet at http"):
        source(tmp_path, tlc_server).fetch(month)
    assert tlc_server.count() == 1
    assert cache_listing(tmp_path) == []


@pytest.mark.parametrize("content", ["garbage", "truncated"])
def test_invalid_download_fails_without_retry_and_leaves_no_file(tmp_path, content):
    served = tmp_path / "served"
    served.mkdir()
    data = (TLC_DATA / NAME).read_bytes()
    body = {"garbage": b"<html>Access denied</html>" * 100, "truncated": data[: len(data) * 2 // 3]}[content]
    (served / NAME).write_bytes(body)
    with serve_directory(served) as server:
        with pytest.raises(InvalidSourceFileError, match=f"month {MONTH}.*{NAME}"):
            source(tmp_path, server).fetch(MONTH)
        assert methods(server) == ["HEAD", "GET"]
    assert cache_listing(tmp_path) == []


def test_disconnect_mid_body_is_retried(tmp_path, tlc_server):
    tlc_server.script = ["serve", "disconnect", "disconnect"]  # the probe, then two GETs cut short
    path = source(tmp_path, tlc_server).fetch(MONTH)
    assert sha256(path) == sha256(TLC_DATA / NAME)
    assert methods(tlc_server) == ["HEAD", "GET", "GET", "GET"]
    assert cache_listing(tmp_path) == [NAME, RECORD]


def test_timeout_is_retried(tmp_path, tlc_server):
    tlc_server.script = ["serve", "hang"]  # the probe, then a GET that never answers
    path = source(tmp_path, tlc_server, timeout_seconds=0.2).fetch(MONTH)
    assert sha256(path) == sha256(TLC_DATA / NAME)
    assert methods(tlc_server) == ["HEAD", "GET", "GET"]


def test_probe_fingerprints_published_month(tmp_path, tlc_server):
    src = source(tmp_path, tlc_server)
    fingerprint = src.probe(MONTH)
    assert fingerprint["url"] == src.url(MONTH)
    assert fingerprint["size"] == (TLC_DATA / NAME).stat().st_size
    assert fingerprint["etag"] and fingerprint["last_modified"]
    assert [r.method for r in tlc_server.requests] == ["HEAD"]
    assert src.probe("2021-02")["etag"] != fingerprint["etag"]


def test_probe_missing_month_is_none(tmp_path, tlc_server):
    assert source(tmp_path, tlc_server).probe("2030-01") is None
    tlc_server.script = [403]
    assert source(tmp_path, tlc_server).probe(MONTH) is None
    assert tlc_server.count() == 2


def test_probe_retries_then_raises_source_unavailable(tmp_path, tlc_server):
    tlc_server.script = [503, "hang"]
    assert source(tmp_path, tlc_server, timeout_seconds=0.2).probe(MONTH) is not None
    tlc_server.script = [502] * 3
    with pytest.raises(SourceUnavailableError, match="HTTP 502"):
        source(tmp_path, tlc_server, retries=2).probe(MONTH)
    assert tlc_server.count() == 6


def test_probe_falls_back_to_range_get_without_head(tmp_path, tlc_server):
    src = source(tmp_path, tlc_server)
    expected = src.probe(MONTH)
    tlc_server.allow_head = False
    assert src.probe(MONTH) == expected
    fallback = tlc_server.requests[-1]
    assert [r.method for r in tlc_server.requests] == ["HEAD", "HEAD", "GET"]
    assert fallback.headers["Range"] == "bytes=0-0"
    assert src.probe("2030-01") is None


def ok(*headers, body=DATA, length=True):
    """A 200 with the month's file (or `body`), its Content-Length unless told not to, and `headers`."""
    sized = [("Content-Length", str(len(body)))] if length else []
    return 200, [*sized, ("ETag", '"v1"'), *headers], body


def seen_methods(httpd) -> list[str]:
    return [method for method, _ in httpd.seen]


def test_repeated_identical_content_length_is_accepted(tmp_path):
    twice = ("Content-Length", str(len(DATA)))
    with answering(ok(twice)) as httpd:
        src = source(tmp_path, httpd)
        assert src.probe(MONTH)["size"] == len(DATA)
        assert sha256(src.fetch(MONTH)) == sha256(TLC_DATA / NAME)
    assert seen_methods(httpd) == ["HEAD", "HEAD", "GET"]


def test_differing_content_lengths_are_a_source_error(tmp_path):
    with answering(ok(("Content-Length", "12"))) as httpd:
        src = source(tmp_path, httpd)
        with pytest.raises(SourceUnavailableError, match=f"{src.url(MONTH)}.*Content-Length"):
            src.probe(MONTH)


def test_compressed_answer_is_decoded_and_not_held_to_its_length(tmp_path):
    """A server that gzips although asked for identity: the bytes are right, its Content-Length is not theirs."""
    packed = gzip.compress(DATA)
    with answering(ok(("Content-Encoding", "gzip"), body=packed)) as httpd:
        src = source(tmp_path, httpd)
        assert sha256(src.fetch(MONTH)) == sha256(TLC_DATA / NAME)
        assert src.probe(MONTH)["size"] is None  # the compressed length is not the file's size
        src.fetch(MONTH)
    assert seen_methods(httpd) == ["HEAD", "GET", "HEAD", "HEAD"]  # one GET: not retried, nor re-published


def test_every_request_asks_for_the_identity_encoding(tmp_path, tlc_server):
    src = source(tmp_path, tlc_server)
    src.fetch(MONTH)
    tlc_server.allow_head = False
    src.probe(MONTH)
    assert methods(tlc_server) == ["HEAD", "GET", "HEAD", "GET"]
    assert {r.headers["Accept-Encoding"] for r in tlc_server.requests} == {"identity"}


def test_head_without_size_does_not_make_a_cached_month_republished(tmp_path):
    with answering(ok(length=False), ok()) as httpd:  # HEAD without Content-Length, then the GET and all after
        src = source(tmp_path, httpd)
        src.fetch(MONTH)
        httpd.answers = [ok(length=False)]
        src.fetch(MONTH)
        httpd.answers = [ok(("ETag", '"v2"'), length=False)]  # a real change is still seen
        httpd.answers.append(ok(("ETag", '"v2"')))
        src.fetch(MONTH)
        httpd.answers = [(200, [], DATA), ok()]  # a HEAD that tells nothing of the file shows no version unchanged
        src.fetch(MONTH)
    assert seen_methods(httpd) == ["HEAD", "GET", "HEAD", "HEAD", "GET", "HEAD", "GET"]


LAST_MODIFIED, LATER = "Tue, 01 Jun 2021 00:00:00 GMT", "Wed, 02 Jun 2021 00:00:00 GMT"
OTHER = (TLC_DATA / "green_tripdata_2021-02.parquet").read_bytes()  # another size


def dated(etag: str, last_modified: str = LAST_MODIFIED, body: bytes = DATA):
    """A 200 with `body`, its Content-Length, an ETag and a Last-Modified, as a CDN answers."""
    return 200, [("Content-Length", str(len(body))), ("ETag", etag), ("Last-Modified", last_modified)], body


def test_a_new_etag_alone_is_no_re_publication(tmp_path):
    """Some CDNs hand out a new ETag for the same bytes on every request; the sensor ignores it too (month_plan)."""
    with answering(dated('"a"')) as httpd:
        src = source(tmp_path, httpd)
        src.fetch(MONTH)
        httpd.answers = [dated('"b"')]  # same size and Last-Modified
        src.fetch(MONTH)
        assert seen_methods(httpd) == ["HEAD", "GET", "HEAD"]
        httpd.answers = [dated('"c"', LATER)]  # re-published: a new Last-Modified
        src.fetch(MONTH)
        assert seen_methods(httpd).count("GET") == 2
        httpd.answers = [dated('"d"', LATER, OTHER)]  # re-published: a new size
        path = src.fetch(MONTH)
    assert seen_methods(httpd).count("GET") == 3 and path.read_bytes() == OTHER


URL_SECRET = f"S3cretPW-{secrets.token_hex(8)}"  # made per run, as test_faults_secrets' passwords


def password_shown(error: BaseException) -> bool:
    return any(URL_SECRET in "".join(traceback.format_exception_only(link)) for link in chain(error))


def test_unusable_url_keeps_the_password_out_of_the_error(tmp_path):
    src = TlcSource(cache_dir=str(tmp_path / "cache"), base_url=f"http://alice:{URL_SECRET}@127.0.0.1:99999/x")
    with pytest.raises(SourceUnavailableError, match="alice:\\*\\*\\*@") as info:
        src.fetch(MONTH)
    assert info.value.__cause__ is not None and not password_shown(info.value)


def test_unreachable_server_with_password_is_an_outage_without_it(tmp_path):
    with serve_directory(TLC_DATA) as closed:
        pass  # its port is now closed: connections are refused
    url = closed.url.replace("http://", f"http://alice:{URL_SECRET}@")
    src = TlcSource(cache_dir=str(tmp_path / "cache"), base_url=url, retries=1, backoff_seconds=0.01)
    with pytest.raises(SourceUnavailableError) as info:
        src.fetch(MONTH)
    assert is_outage(info.value) and not password_shown(info.value)


def test_page_instead_of_the_file_is_reported_with_its_url_and_type(tmp_path):
    page = b"<html><body>Please accept our cookies</body></html>"
    with answering(ok(("Content-Type", "text/html"), body=page)) as httpd:
        src = source(tmp_path, httpd)
        with pytest.raises(InvalidSourceFileError) as info:
            src.fetch(MONTH)
    message = str(info.value)
    assert src.url(MONTH) in message and "text/html" in message and f"{len(page)} bytes" in message
    assert ".tmp" not in message and str(tmp_path) not in message


def test_short_body_without_content_length_is_retried_against_the_probed_size(tmp_path):
    with answering(ok(), ok(body=DATA[: len(DATA) // 2], length=False), ok()) as httpd:
        path = source(tmp_path, httpd).fetch(MONTH)
    assert sha256(path) == sha256(TLC_DATA / NAME)
    assert seen_methods(httpd) == ["HEAD", "GET", "GET"]


def test_retry_after_is_waited_for(tmp_path):
    with answering((503, [("Retry-After", "1"), ("Content-Length", "0")], b""), ok()) as httpd:
        started = time.monotonic()
        source(tmp_path, httpd).probe(MONTH)
    assert time.monotonic() - started >= 1  # not the 0.01 s backoff
    assert seen_methods(httpd) == ["HEAD", "HEAD"]


def test_retry_after_is_capped(tmp_path):
    with answering((429, [("Retry-After", "3600"), ("Content-Length", "0")], b""), ok()) as httpd:
        started = time.monotonic()
        source(tmp_path, httpd, longest_retry_after_seconds=0.1).probe(MONTH)
    assert time.monotonic() - started < 5


def test_unreadable_cached_file_is_kept_and_named(tmp_path, tlc_server, monkeypatch):
    """A cached file the system will not let us read (EACCES) is no invalid file: it is not replaced."""
    source(tmp_path, tlc_server).fetch(MONTH)
    cached = tmp_path / "cache" / NAME

    def refuse(path, **options):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr("ml_assets.core.sources.pq.ParquetFile", refuse)  # as root, chmod would not stop us
    with pytest.raises(PermissionError, match=NAME):
        source(tmp_path, tlc_server).fetch(MONTH)
    assert sha256(cached) == sha256(TLC_DATA / NAME)
    assert methods(tlc_server) == ["HEAD", "GET"]
