"""Stop signals for a command that may have been started in the background."""

from __future__ import annotations

import signal


def interrupt_as_in_a_terminal() -> None:
    """Give SIGINT Python's default handler where it was inherited ignored, as a shell's background job
    (`cmd &`) inherits it. Dagster gives SIGTERM whatever SIGINT has once a run ends
    (dagster._utils.interrupts), so such a process would then ignore SIGTERM too."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
