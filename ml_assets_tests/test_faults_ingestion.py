"""Faults on the ingestion side: killed writes, file modes, bad re-publications, settings, the sensor, automation."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

from ml_assets.core.storage import write_json
from ml_assets_tests.support import ROOT


def temp_files(folder) -> list[str]:
    return sorted(path.name for path in folder.iterdir() if path.name.endswith(".tmp"))


def start_writer(target):
    """A process inside `atomic_path(target)`, its temporary file created, that waits to be killed."""
    code = textwrap.dedent(
        f"""
        import sys, time
        from ml_assets.core.storage import atomic_path
        with atomic_path({str(target)!r}) as tmp:
            tmp.write_bytes(b"half")
            print("writing", flush=True)
            time.sleep(600)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    writer = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env)
    assert writer.stdout.readline().strip() == "writing"
    return writer


def test_a_write_killed_midway_leaves_no_temp_file_after_the_next_write(tmp_path):
    target = tmp_path / "2021-02.json"
    writer = start_writer(target)
    try:
        write_json({"other": "writer"}, target)  # a live writer's temporary file is left alone
        assert len(temp_files(tmp_path)) == 1
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait(timeout=30)
    assert len(temp_files(tmp_path)) == 1
    (tmp_path / ".2021-03.json.x1.tmp").touch()  # another file's leftover is not this write's business
    write_json({"month": "2021-02"}, target)
    assert temp_files(tmp_path) == [".2021-03.json.x1.tmp"]
    assert target.read_text() == '{\n  "month": "2021-02"\n}'


def test_files_follow_the_umask(tmp_path):
    previous = os.umask(0o027)
    try:
        write_json({}, tmp_path / "value.json")
    finally:
        os.umask(previous)
    assert (tmp_path / "value.json").stat().st_mode & 0o777 == 0o640
