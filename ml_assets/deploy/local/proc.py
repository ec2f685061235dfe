"""What Linux's /proc says about processes: parent, session and CPU time of each, and the TCP
ports they listen on. How the local stack measures and checks its services without psutil."""

from __future__ import annotations

import contextlib
import ipaddress
import os
from pathlib import Path
from typing import NamedTuple


class ProcessStat(NamedTuple):
    state: str  # R, S, D…; Z: ended, not yet reaped by its parent
    ppid: int
    session: int  # the session id: a service's processes share its leader's
    cpu_seconds: float  # user + system of the process and of its children that ended
    started: int  # clock ticks after boot: with the pid, names the process even after its pid is reused


def process_stat(pid: int) -> ProcessStat | None:
    """What /proc says about process `pid`; None when there is none."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:  # no such process, or it ended meanwhile
        return None
    cpu = sum(int(v) for v in fields[11:15]) / os.sysconf("SC_CLK_TCK")
    return ProcessStat(fields[0], int(fields[1]), int(fields[3]), cpu, int(fields[19]))


def command_line(pid: int) -> str:
    """Process `pid`'s command line, its arguments joined by spaces ("" for a kernel thread); OSError when
    there is no such process."""
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")


def process_table() -> dict[int, ProcessStat]:
    """pid -> its ProcessStat, for every process."""
    stats = {
        int(entry.name): process_stat(int(entry.name)) for entry in Path("/proc").iterdir() if entry.name.isdigit()
    }
    return {pid: stat for pid, stat in stats.items() if stat is not None}


def ended(pid: int, started: int | None = None) -> bool:
    """Whether process `pid` (the one that started at `started`, when given) has ended: no such process,
    a zombie (ended, its parent has not reaped it yet), or another process that got the pid since."""
    found = process_stat(pid)
    return found is None or found.state == "Z" or started not in (None, found.started)


def listening_sockets() -> dict[str, str]:
    """Socket inode -> `host:port` of every TCP socket listening in this network namespace (IPv4 and IPv6)."""
    found = {}
    for table in ("tcp", "tcp6"):
        for line in Path("/proc/net", table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != "0A":  # TCP_LISTEN
                continue
            host, port = fields[1].split(":")
            # The kernel writes each 32-bit word of the address in the machine's (little-endian) byte order.
            words = [bytes.fromhex(host[i : i + 8])[::-1] for i in range(0, len(host), 8)]
            address = ipaddress.ip_address(b"".join(words))
            address = getattr(address, "ipv4_mapped", None) or address  # ::ffff:127.0.0.1 is 127.0.0.1
            found[fields[9]] = f"{address}:{int(port, 16)}"
    return found


def socket_inodes(pid: int) -> set[str]:
    """The inodes of the sockets process `pid` holds open (none if it ended meanwhile)."""
    inodes = set()
    with contextlib.suppress(OSError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[len("socket:[") : -1])
    return inodes
