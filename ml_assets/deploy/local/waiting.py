"""Waiting for a server that was just started: polled conditions that fail early when it died."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class WaitFailed(AssertionError):
    """What was waited for did not happen in time, or a process it needed exited. An AssertionError,
    so that a test that waits reads as a failed check."""


def http_ok(url: str) -> bool:
    """Whether `url` answers 200 (False while nothing listens yet)."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status == 200
    except OSError:
        return False


def wait_until(
    condition: Callable[[], T],
    what: str,
    seconds: float,
    poll: float = 1.0,
    exited: Callable[[], str] = lambda: "",
    log: Callable[[], str] = lambda: "",
) -> T:
    """The condition's first truthy value, polled every `poll` s. Fails with `log()` as soon as
    `exited()` names a process that died (no use waiting on), or after `seconds`."""
    deadline = time.monotonic() + seconds
    while not (value := condition()):
        if dead := exited():
            raise WaitFailed(f"{what}: {dead} exited\n{log()}")
        if time.monotonic() > deadline:
            raise WaitFailed(f"{what} did not happen within {seconds:g} s\n{log()}")
        time.sleep(poll)
    return value
