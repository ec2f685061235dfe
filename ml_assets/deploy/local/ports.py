"""Loopback ports for the local stack's servers, chosen before the servers start."""

from __future__ import annotations

import fcntl
import os
import secrets
import socket
import tempfile
from pathlib import Path

# port -> the open lock file that reserves it while this process lives (inherited by its children).
_PORTS_GIVEN: dict[int, int] = {}


def reservations() -> Path:
    """Where every process that picks ports marks the ones it holds: one lock file per port."""
    folder = Path(tempfile.gettempdir()) / "ml_assets_ports"
    if not folder.is_dir():
        folder.mkdir(exist_ok=True)
        folder.chmod(0o1777)  # shared by every user that starts a stack here, as /tmp is
    return folder


def _reserve(port: int) -> int | None:
    """An open lock file that holds `port` for this process, or None where another process holds it.

    The lock is the kernel's (flock), so it ends with the process that took it: nothing to clean up."""
    descriptor = os.open(reservations() / f"{port}.lock", os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(descriptor)
        return None
    return descriptor


def free_port() -> int:
    """A loopback port that is free now and stays free until a server started later binds it.

    Not the kernel's pick (bind to port 0): that comes from the ephemeral range, which the kernel also
    hands to outgoing connections as their local port, and a server that starts a minute after the pick
    (the webserver waits for the code server) found it taken by one. So: a random free port below that
    range, reserved against every other process that picks ports here (the compose tests run beside the
    rest of the suite, and each picked a port the other then bound).
    """
    ephemeral_low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    low = min(10000, ephemeral_low // 2)  # clear of the well-known ports where the range allows
    for _ in range(1000):
        port = secrets.randbelow(ephemeral_low - low) + low
        if port in _PORTS_GIVEN or (reserved := _reserve(port)) is None:
            continue
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                os.close(reserved)
                continue
        _PORTS_GIVEN[port] = reserved
        return port
    raise RuntimeError(f"no free loopback port between {low} and {ephemeral_low}")
