"""pytest plugin of `python -m benchmarks.cpu_by_process --by-module` (and `--by-test`): each test's
CPU-seconds in its pytest process (setup, call and teardown, every thread), one JSON line a test in
$CPU_PER_TEST_FILE.

The processes a test starts are counted by the sampler, which finds the test in their environment, or for
those forked from ml_assets_tests/forked.py's server, in the line that module adds to the same file.
"""

from __future__ import annotations

import json
import os
import time

import pytest


def record(**fields) -> None:
    """A line of $CPU_PER_TEST_FILE, when the sampler set one."""
    if "CPU_PER_TEST_FILE" in os.environ:
        with open(os.environ["CPU_PER_TEST_FILE"], "a") as out:  # one short write: workers' lines do not mix
            out.write(json.dumps(fields) + "\n")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    started = time.process_time()
    yield
    record(test=item.nodeid, cpu=time.process_time() - started)
