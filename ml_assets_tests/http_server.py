"""A real HTTP server on 127.0.0.1 over a directory, scriptable per test.

Tests exercise the real download code against it instead of mocking requests:

    with serve_directory(some_dir) as server:
        TlcSource(cache_dir, base_url=server.url).fetch("2021-01")

or use the `tlc_server` fixture (conftest), which serves the TLC sample files in ../shared (read-only).
`answering` is a server that sends exactly the answers a test gives it, for what a CDN gets wrong.
"""

from __future__ import annotations

import contextlib
import email.utils
import hashlib
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit


@dataclass(frozen=True)
class ServedRequest:
    method: str
    path: str
    headers: dict[str, str]


class ScriptedServer:
    """Serves the files of `root` at `{url}/{name}`, with HEAD, single byte ranges, ETag and Last-Modified.

    `script` decides what the next requests get, one item per request, before normal service resumes:
    - an int: that HTTP status, with an empty body;
    - "disconnect": a 200 announcing the full Content-Length, then half the body and a closed connection;
    - "hang": no answer for `hang_seconds` (or until the server closes), then a closed connection.
    `always` maps a file name to the action (a status, "hang") every request for it gets, whatever the script.
    Set `allow_head = False` to answer HEAD with 405. Every request is recorded in `requests`.
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.script: list[int | str] = []
        self.always: dict[str, int | str] = {}
        self.allow_head = True
        self.hang_seconds = 10.0
        self.requests: list[ServedRequest] = []
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.daemon_threads = True
        self._httpd.scripted = self
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def count(self, method: str | None = None) -> int:
        return sum(method in (None, r.method) for r in self.requests)

    def close(self) -> None:
        self._closing.set()  # releases hanging handlers
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()

    def _next_action(self, request: ServedRequest) -> int | str:
        with self._lock:
            self.requests.append(request)
            name = unquote(urlsplit(request.path).path).lstrip("/")
            if name in self.always:
                return self.always[name]
            return self.script.pop(0) if self.script else "serve"


@contextlib.contextmanager
def serve_directory(root: str | Path) -> Iterator[ScriptedServer]:
    server = ScriptedServer(root)
    try:
        yield server
    finally:
        server.close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_HEAD(self) -> None:
        self._handle(send_body=False)

    def do_GET(self) -> None:
        self._handle(send_body=True)

    def log_message(self, format, *args) -> None:  # keep test output quiet
        pass

    def _handle(self, send_body: bool) -> None:
        scripted: ScriptedServer = self.server.scripted
        action = scripted._next_action(ServedRequest(self.command, self.path, dict(self.headers)))
        if isinstance(action, int):
            return self._empty(action)
        if action == "hang":
            scripted._closing.wait(scripted.hang_seconds)
            self.close_connection = True
            return
        if not send_body and not scripted.allow_head:
            return self._empty(405, {"Allow": "GET"})
        file = _file_in(scripted.root, self.path)
        if file is None:
            return self._empty(404)
        body = file.read_bytes()
        status, headers, part = _ranged(body, self.headers.get("Range"))
        headers.update(
            {
                "Content-Type": "application/octet-stream",
                "ETag": f'"{hashlib.sha256(body).hexdigest()[:16]}"',
                "Last-Modified": email.utils.formatdate(file.stat().st_mtime, usegmt=True),
                "Accept-Ranges": "bytes",
            }
        )
        self._start(status, headers, len(part))
        if not send_body:
            return
        if action == "disconnect":
            self.wfile.write(part[: len(part) // 2])
            self.close_connection = True
            return
        self.wfile.write(part)

    def _empty(self, status: int, headers: dict[str, str] | None = None) -> None:
        self._start(status, headers or {}, 0)

    def _start(self, status: int, headers: dict[str, str], length: int) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(length))
        self.end_headers()


def _file_in(root: Path, request_path: str) -> Path | None:
    name = unquote(urlsplit(request_path).path).lstrip("/")
    file = root / name
    return file if name and "/" not in name and file.is_file() else None


def _ranged(body: bytes, range_header: str | None) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, bytes to send) for an optional single `bytes=start-[end]` range."""
    match = re.fullmatch(r"bytes=(\d+)-(\d*)", range_header or "")
    if not match:
        return 200, {}, body
    start = int(match[1])
    end = min(int(match[2]) if match[2] else len(body) - 1, len(body) - 1)
    if start > end:
        return 416, {"Content-Range": f"bytes */{len(body)}"}, b""
    return 206, {"Content-Range": f"bytes {start}-{end}/{len(body)}"}, body[start : end + 1]


class _Answers(BaseHTTPRequestHandler):
    """Answers each request with the server's next (status, headers, body), the last one once they run out.

    Headers go out as given, so a test can send what ScriptedServer never does: a repeated header, a
    compressed body, a body shorter than announced (HTTP/1.0: the connection closes after each answer).
    """

    def do_HEAD(self) -> None:
        self._answer(send_body=False)

    def do_GET(self) -> None:
        self._answer(send_body=True)

    def log_message(self, format, *args) -> None:
        pass

    def _answer(self, send_body: bool) -> None:
        self.server.seen.append((self.command, dict(self.headers)))
        answers = self.server.answers
        status, headers, body = answers.pop(0) if len(answers) > 1 else answers[0]
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        if send_body:
            self.wfile.write(body)


@contextlib.contextmanager
def answering(*answers) -> Iterator[ThreadingHTTPServer]:
    """A server on 127.0.0.1 (`.url`) that gives each request the next of `answers`; what it was asked, in `.seen`."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Answers)
    httpd.answers, httpd.seen = list(answers), []
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield httpd
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()
