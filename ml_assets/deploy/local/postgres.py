"""A throwaway PostgreSQL server, and PgBouncer in front of it: the local stack's databases.

A cluster of its own in a temporary directory, on a free loopback port, deleted when it stops.

    with throwaway_postgres() as server:
        server.url("dagster")            # postgresql+psycopg2://USER:PASSWORD@127.0.0.1:PORT/dagster

Debian's `postgresql` package (installed by .ci/run) provides `initdb` and `pg_ctl` under
/usr/lib/postgresql/<version>/bin. PostgreSQL refuses to run as root, so as root the cluster is
created and run as the unprivileged `postgres` user (which that package creates), or `nobody`.
The superuser's password is generated here for each cluster, and its secret hashed with fewer
iterations than PostgreSQL's (scram.py): no credential is stored anywhere.
Durability settings are off (fsync, synchronous_commit): the cluster is deleted at the end anyway.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ml_assets.deploy.local.ports import free_port
from ml_assets.deploy.local.proc import ended
from ml_assets.deploy.local.waiting import wait_until
from ml_assets.deploy.pgbouncer_auth import write_auth_file
from ml_assets.deploy.scram import ROLE_SECRET, scram_secret

SUPERUSER = "ml_assets"
DEFAULT_DATABASE = "dagster"


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server binaries on this machine."""


def postgres_bindir() -> Path:
    """The newest /usr/lib/postgresql/<version>/bin, else the directory of `initdb` on PATH."""
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda path: int(path.parts[-3]) if path.parts[-3].isdigit() else 0,
    )
    if candidates:
        return candidates[-1].parent
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    raise PostgresUnavailable(
        "PostgreSQL server binaries (initdb, pg_ctl) not found: install Debian's `postgresql` package (.ci/run does)"
    )


def _unprivileged_user() -> pwd.struct_passwd | None:
    """None when already unprivileged; else the account to run PostgreSQL as."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise PostgresUnavailable("running as root and no unprivileged `postgres` or `nobody` account exists")


@dataclass
class PostgresServer:
    bindir: Path
    directory: Path  # owned by the server's user; removed at the end
    port: int
    password: str
    user: str = SUPERUSER
    host: str = "127.0.0.1"
    account: pwd.struct_passwd | None = None

    @property
    def data(self) -> Path:
        return self.directory / "data"

    @property
    def postmaster_pid(self) -> int:
        """The server's first process, the parent of all the others (each in a session of its own)."""
        return int((self.data / "postmaster.pid").read_text().split()[0])

    @property
    def log(self) -> Path:
        return self.directory / "postgres.log"

    def url(self, database: str = DEFAULT_DATABASE, driver: str = "postgresql+psycopg2") -> str:
        return f"{driver}://{self.user}:{self.password}@{self.host}:{self.port}/{database}"

    def env(self) -> dict[str, str]:
        """libpq's variables (psql, pg_isready) for this server."""
        return {
            "PGHOST": self.host,
            "PGPORT": str(self.port),
            "PGUSER": self.user,
            "PGPASSWORD": self.password,
            "PGDATABASE": DEFAULT_DATABASE,
        }

    def _run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        kwargs = {}
        if self.account is not None:
            kwargs = {"user": self.account.pw_uid, "group": self.account.pw_gid, "extra_groups": []}
        return subprocess.run(
            [str(self.bindir / args[0]), *args[1:]],
            check=True,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.directory,
            env={"PATH": os.environ.get("PATH", ""), "LC_ALL": "C.UTF-8"},
            **kwargs,
        )

    def init(self) -> None:
        pwfile = self.directory / "pwfile"
        pwfile.write_text(scram_secret(self.password) + "\n")  # initdb stores a secret as it is
        self._chown(pwfile)
        try:
            self._run(
                "initdb",
                "--pgdata",
                str(self.data),
                "--username",
                self.user,
                "--pwfile",
                str(pwfile),
                "--auth",
                "scram-sha-256",
                "--encoding",
                "UTF8",
                "--no-sync",
            )
        finally:
            pwfile.unlink()
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(
                "\n# throwaway cluster\n"
                f"listen_addresses = '{self.host}'\nport = {self.port}\n"
                f"unix_socket_directories = '{self.directory}'\n"
                "max_connections = 200\nfsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
            )

    def start(self) -> None:
        try:
            self._run(
                "pg_ctl", "start", "--pgdata", str(self.data), "--log", str(self.log), "--wait", "--timeout", "60"
            )
        except subprocess.CalledProcessError as exc:
            log = self.log.read_text() if self.log.exists() else ""
            raise RuntimeError(f"pg_ctl start failed: {exc.stderr}\n{log[-3000:]}") from exc

    def stop(self, mode: str = "fast") -> None:
        """Stopped once the postmaster itself has ended: `pg_ctl stop --wait` returns when it removed its
        pid file, just before it exits."""
        postmaster = self.postmaster_pid
        self._run("pg_ctl", "stop", "--pgdata", str(self.data), "--mode", mode, "--wait", "--timeout", "60")
        wait_until(lambda: ended(postmaster), f"PostgreSQL's postmaster {postmaster} to exit", 30, poll=0.05)

    def psql(self, *args: str, database: str = DEFAULT_DATABASE) -> str:
        """`psql` from the server's own bindir, over TCP with the password (as a client would)."""
        result = subprocess.run(
            [str(self.bindir / "psql"), "-v", "ON_ERROR_STOP=1", "--no-psqlrc", "--dbname", database, *args],
            check=True,
            capture_output=True,
            text=True,
            env={**os.environ, **self.env()},
            timeout=60,
        )
        return result.stdout

    def secret(self, role: str) -> str:
        """The SCRAM secret PostgreSQL keeps for `role`'s password (`pg_authid.rolpassword`)."""
        return self.psql("-At", "-c", ROLE_SECRET.format(role=f"'{role}'"), database="postgres").strip()

    def _chown(self, path: Path) -> None:
        if self.account is not None:
            os.chown(path, self.account.pw_uid, self.account.pw_gid)


@contextlib.contextmanager
def throwaway_postgres() -> Iterator[PostgresServer]:
    """A fresh cluster with an empty database DEFAULT_DATABASE, started; stopped and deleted on exit."""
    bindir, account = postgres_bindir(), _unprivileged_user()
    directory = Path(tempfile.mkdtemp(prefix="ml_assets_pg_"))  # short: the socket path has a length limit
    server = PostgresServer(
        bindir=bindir, directory=directory, port=free_port(), password=secrets.token_hex(16), account=account
    )
    server._chown(directory)
    started = False
    try:
        server.init()
        server.start()
        started = True
        # As the postgres image does for POSTGRES_DB.
        server.psql("-c", f'CREATE DATABASE "{DEFAULT_DATABASE}"', database="postgres")
        yield server
    finally:
        if started:
            with contextlib.suppress(Exception):
                server.stop("immediate")
        shutil.rmtree(directory, ignore_errors=True)


def pgbouncer_binary() -> str:
    """Debian's `pgbouncer` package installs it under /usr/sbin, off a user's PATH."""
    found = shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin")
    if found is None:
        raise PostgresUnavailable("no `pgbouncer` on this machine: install Debian's `pgbouncer` package (.ci/run does)")
    return found


def pgbouncer_command(server: PostgresServer, port: int) -> list[str]:
    """PgBouncer in front of `server` on `port`, as docker-compose.yml puts it before Dagster's processes.

    Session pooling: a client's connection gets a server backend already started and authenticated,
    instead of a new one per connection (dagster-postgres opens a connection for every query).
    Clients log in with SCRAM against the server's own secret, which PgBouncer passes on: no
    password is written anywhere. Writes its config into the cluster's directory; returns the
    command that runs it in the foreground (as the cluster's account: PgBouncer refuses root too).
    """
    users = server.directory / "pgbouncer_users.txt"
    write_auth_file(users, server.user, server.secret(server.user))
    config = server.directory / "pgbouncer.ini"
    config.write_text(
        f"[databases]\n* = host={server.host} port={server.port}\n\n[pgbouncer]\n"
        f"listen_addr = {server.host}\nlisten_port = {port}\nunix_socket_dir =\n"
        f"auth_type = scram-sha-256\nauth_file = {users}\npool_mode = session\n"
        "max_client_conn = 400\ndefault_pool_size = 50\nlog_connections = 0\nlog_disconnections = 0\n"
        # As docker-compose.yml: after PostgreSQL restarted, a pooled backend is checked before a client gets
        # it, and logging in again is tried every second (not refused for 15 s)
        "server_check_delay = 0\nserver_login_retry = 1\n"
    )
    for path in (users, config):
        server._chown(path)
    as_account = ["runuser", "-u", server.account.pw_name, "--"] if server.account else []
    return [*as_account, pgbouncer_binary(), str(config)]


def accepting(server: PostgresServer, port: int | None = None) -> bool:
    """Whether `server`, or PgBouncer in front of it on `port`, answers (pg_isready)."""
    ready = [str(server.bindir / "pg_isready"), "--quiet", "--port", str(port or server.port)]
    return subprocess.run(ready, env={**os.environ, **server.env()}).returncode == 0
