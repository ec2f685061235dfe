"""`python -m MODULE` and `python -c CODE` processes for the tests, forked from a server that has imported
the heavy libraries already (multiprocessing's forkserver).

Where a test needs a process of its own (to kill it, to run several at once, to give it an environment),
a new interpreter spent 5.7 CPU-seconds importing Dagster, MLflow, XGBoost, scikit-learn, optuna, pandas
and matplotlib; one forked from the server, 0.5 (docs/testing.md). The child still runs its command line
as `python` would, in its own process, environment and folder: os.environ is replaced before anything of
ml_assets is imported (the server never imports it), so settings read at import see the test's. The
server lives as long as the pytest worker that started it.

Only the standard library at module level: the server's children import this module before their
environment is set.
"""

from __future__ import annotations

import atexit
import multiprocessing
import os
import runpy
import subprocess
import sys
import tempfile
from pathlib import Path

PRELOAD = [
    "dagster",
    "dagster_mlflow",
    "mlflow",
    "xgboost",
    "sklearn.linear_model",
    "optuna",
    "pandas",
    "pyarrow.parquet",
    "matplotlib.pyplot",
]
_SERVER = multiprocessing.get_context("forkserver")
_SERVER.set_forkserver_preload(PRELOAD)


def _main(args: list[str], env: dict[str, str], cwd: str, stdout: str, stderr: str) -> None:
    """In the forked child: `python ARGS` with this environment, folder and output files."""
    os.environ.clear()
    os.environ.update(env)
    os.chdir(cwd)
    for fd, path in ((1, stdout), (2, stderr)):
        opened = os.open(path, os.O_WRONLY | os.O_TRUNC)
        os.dup2(opened, fd)
        os.close(opened)
    option, target, *rest = args
    try:
        if option == "-m":
            sys.argv = [target, *rest]
            sys.path.insert(0, cwd)
            runpy.run_module(target, run_name="__main__", alter_sys=True)
        else:
            sys.argv = ["-c", *rest]
            sys.path.insert(0, "")
            exec(compile(target, "<string>", "exec"), {"__name__": "__main__"})
    finally:
        atexit._run_exitfuncs()  # as an interpreter's exit does: multiprocessing ends the child with os._exit


class Forked:
    """`python ARGS` (`-m MODULE …` or `-c CODE …`) forked from the server: subprocess.Popen's interface as the
    tests use it, its output read once it has ended."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None, cwd: Path | None = None):
        if args[0] not in ("-m", "-c"):
            raise ValueError(f"python {args[0]}: only -m MODULE or -c CODE can be forked")
        from ml_assets.deploy.local.environment import ROOT

        self.args = [sys.executable, *args]
        self._output = Path(tempfile.mkdtemp(prefix="forked_"))
        self._files = [self._output / "stdout", self._output / "stderr"]
        for file in self._files:
            file.touch()
        env = dict(os.environ if env is None else env)
        self._process = _SERVER.Process(
            target=_main, args=(list(args), env, str(cwd or ROOT), *map(str, self._files)), name="forked"
        )
        self._process.start()
        self.pid, self.returncode = self._process.pid, None
        # For `benchmarks.cpu_by_process --by-module`: the child's environment in /proc is the server's,
        # which names the test that started the server.
        from benchmarks.cpu_per_test import record

        record(forked=self.pid, test=os.environ.get("PYTEST_CURRENT_TEST"))

    def poll(self) -> int | None:
        if self.returncode is None and not self._process.is_alive():
            self.returncode = self._process.exitcode
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        self._process.join(timeout)
        if self.poll() is None:
            raise subprocess.TimeoutExpired(self.args, timeout)
        return self.returncode

    def communicate(self, timeout: float | None = None) -> tuple[str, str]:
        """(stdout, stderr) once it has ended, like Popen's with both as text pipes."""
        self.wait(timeout)
        out, err = (file.read_text(errors="replace") for file in self._files)
        for file in self._files:
            file.unlink(missing_ok=True)
        self._output.rmdir()
        return out, err

    def kill(self) -> None:
        if self.poll() is None:
            self._process.kill()


def run(args: list[str], env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float | None = None):
    """subprocess.run(`python ARGS`, capture_output=True, text=True), forked."""
    process = Forked(args, env, cwd)
    try:
        out, err = process.communicate(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)
