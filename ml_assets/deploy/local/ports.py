"""Loopback ports for the local stack's servers, chosen before the servers start."""

from __future__ import annotations

import secrets
import socket
from pathlib import Path

_PORTS_GIVEN: set[int] = set()


def free_port() -> int:
    """A loopback port that is free now and stays free until a server started later binds it.

    Not the kernel's pick (bind to port 0): that comes from the ephemeral range, which the kernel also
    hands to outgoing connections as their local port, and a server that starts a minute after the pick
    (the webserver waits for the code server) found it taken by one. So: a random free port below that
    range, never the same one twice in this process.
    """
    ephemeral_low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    low = min(10000, ephemeral_low // 2)  # clear of the well-known ports where the range allows
    for _ in range(1000):
        port = secrets.randbelow(ephemeral_low - low) + low
        if port in _PORTS_GIVEN:
            continue
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        _PORTS_GIVEN.add(port)
        return port
    raise RuntimeError(f"no free loopback port between {low} and {ephemeral_low}")
