"""The documentation: links that lead somewhere, docs/benchmarks.md as the benchmarks write it, and the
sampler behind docs/testing.md's CPU table."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks import cpu_by_process, report, scale
from ml_assets_tests.support import ROOT

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```.*?^```", re.S | re.M)
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def _prose(page: Path) -> str:
    """The page without fenced code blocks and inline code, where brackets are not links."""
    return re.sub(r"`[^`\n]*`", "", FENCE.sub("", page.read_text()))


def anchors(page: Path) -> set[str]:
    """The anchors GitHub gives `page`'s headings (numbered when repeated), and explicit `id`s."""
    found, seen = set(), {}
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*#*\s*$", FENCE.sub("", page.read_text()), re.M):
        text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text stays, its target goes
        slug = re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    return found | set(re.findall(r"<a\s+(?:id|name)=\"([^\"]+)\"", page.read_text()))


def test_the_docs_are_there():
    names = {page.name for page in PAGES}
    assert {"README.md", "architecture.md", "configuration.md", "benchmarks.md", "testing.md"} <= names


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_every_relative_link_leads_to_a_file_and_anchor_that_exist(page):
    broken = []
    for target in LINK.findall(_prose(page)):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:: not this repository's
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists():
            broken.append(f"{target}: no {linked.relative_to(ROOT) if linked.is_relative_to(ROOT) else linked}")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            broken.append(f"{target}: no heading #{anchor} in {linked.relative_to(ROOT)}")
    assert not broken, f"{page.relative_to(ROOT)}: " + "; ".join(broken)


def test_anchors_follow_githubs_rules(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# Steps on workers (Celery)\n\n## `make run`, offline\n\n## Faults\n\n## Faults\n")
    assert anchors(page) == {"steps-on-workers-celery", "make-run-offline", "faults", "faults-1"}


PAGE = """# Benchmarks

Prose the benchmarks never touch.

{course}

Between the sections.

{long}

The end.
"""


def _section(name: str, figure: str) -> str:
    provenance = report.Provenance(f"python -m benchmarks.run --only {name}", 0.5, date="2026-01-01", machine="m")
    return report.section(name, name, provenance, [report.table(["figure", "value"], [("x", figure)])])


def test_writing_one_phase_replaces_its_section_only(tmp_path):
    path = tmp_path / "benchmarks.md"
    path.write_text(PAGE.format(course=_section("course", "1.0"), long=_section("long", "2.0")))
    report.write_section("course", _section("course", "3.0"), path)
    page = path.read_text()
    assert page == PAGE.format(course=_section("course", "3.0"), long=_section("long", "2.0"))
    assert "| x | 2.0 |" in page and "| x | 1.0 |" not in page
    assert "**command** `python -m benchmarks.run --only course` · **other processes' CPU** 0.5 s" in page


def test_a_phase_missing_from_the_page_goes_before_the_next_phase_present(tmp_path):
    path = tmp_path / "benchmarks.md"
    path.write_text(PAGE.format(course=_section("course", "1.0"), long=_section("long", "2.0")))
    report.write_section("backfill", _section("backfill", "4.0"), path)
    page = path.read_text()
    order = [page.index(report.markers(name)[0]) for name in ("course", "backfill", "long")]
    assert order == sorted(order) and page.count("<!-- bench:") == 6
    report.write_section("course", _section("course", "5.0"), tmp_path / "new.md")  # no page yet: one is made
    assert (tmp_path / "new.md").read_text().startswith("# Benchmarks\n")


def test_a_phase_table_from_a_small_result(tmp_path):
    """Phase 8's table, from the result a run would hand over, written into a page."""
    default = {"rmse": 4.4040, "valid_rmse": 4.272, "trials_run": 25}
    long = {"rmse": 4.4066, "valid_rmse": 4.043, "trials_run": 252}
    parts = scale.md_long_study("2023-04", default, long, 20.0)
    path = tmp_path / "benchmarks.md"
    provenance = report.Provenance("python -m benchmarks.run --only long", 1.5)
    report.write_section("long", report.section("long", "8. Long study", provenance, parts), path)
    page = path.read_text()
    assert "| 20-minute study | 252 | 4.0430 | 4.4066 |" in page
    assert "against the long study's: -0.06%** (target ≤ 1 %: met" in page
    assert re.search(r"\*\*machine\*\* \d+ cores", page) and "**other processes' CPU** 1.5 s" in page


def test_the_layout_names_every_module_and_package_of_the_code():
    """docs/architecture.md's module layout: a module added, moved or renamed without it fails here."""
    layout = (ROOT / "docs" / "architecture.md").read_text().split("<!-- layout -->")[1]
    package = ROOT / "ml_assets"
    names = {path.stem for path in package.glob("*.py") if path.stem != "__init__"}
    names |= {path.name for path in package.iterdir() if (path / "__init__.py").exists()}
    names |= {path.stem for path in package.glob("*/*.py") if path.stem not in ("__init__", "__main__")}
    missing = sorted(name for name in names if not re.search(rf"\b{re.escape(name)}\b", layout))
    assert not missing, f"not in docs/architecture.md's layout: {missing}"


def test_the_run_config_table_names_every_op_with_config_and_each_of_its_fields():
    """docs/configuration.md's run config: a field added to an op's config (as the drift check's `missing` was)
    or an op renamed, without its row, fails here."""
    from ml_assets.definitions import defs

    section = (ROOT / "docs" / "configuration.md").read_text().split("## Run config")[1]
    rows = dict(re.findall(r"^\| `(\w+)`[^|]*\| (.*) \|$", section, re.M))
    configured = {}
    for assets in defs.resolve_asset_graph().assets_defs:
        schema = assets.node_def.config_schema
        if schema is not None and getattr(schema.config_type, "fields", None):
            configured[assets.node_def.name] = set(schema.config_type.fields)
    assert set(rows) == set(configured), "ops in the table and ops with run config differ"
    missing = {op: sorted(f for f in fields if f"`{f}`" not in rows[op]) for op, fields in configured.items()}
    missing = {op: fields for op, fields in missing.items() if fields}
    assert not missing, f"fields not in docs/configuration.md's run config table: {missing}"


def test_every_make_target_the_docs_name_is_in_the_makefile():
    targets = set(re.findall(r"^([a-z][\w-]*):", (ROOT / "Makefile").read_text(), re.M))
    named = {target for page in PAGES for target in re.findall(r"`make ([a-z][\w-]*)", page.read_text())}
    assert named and not named - targets, f"not targets of the Makefile: {sorted(named - targets)}"


def test_the_cpu_table_counts_a_process_s_cpu_since_the_command_started():
    """A real child that spins for a CPU-second shows with about that much under its own pid and role; a
    command's total leaves out what the machine's processes used before it started."""
    spin = "import time\nwhile time.process_time() < 1.0: pass\nimport sys; sys.stdin.read()"
    child = subprocess.Popen([sys.executable, "-c", spin], stdin=subprocess.PIPE)
    try:
        seen: dict = {}
        while not [key for key in seen if key[0] == child.pid and seen[key].cpu >= 0.9]:
            time.sleep(0.2)
            cpu_by_process.read_processes(seen)
        (process,) = [reading for key, reading in seen.items() if key[0] == child.pid]
        assert 0.9 <= process.cpu < 1.5 and cpu_by_process.role(process.command_line) == cpu_by_process.OTHER
        assert process.parent == os.getpid()
    finally:
        child.communicate(b"")
    started = time.monotonic()
    sampled = cpu_by_process.cpu_by_role([sys.executable, "-c", "raise SystemExit(3)"])
    assert sampled.returncode == 3
    assert sum(sampled.totals.values()) <= os.cpu_count() * (time.monotonic() - started) + 1.0
    assert cpu_by_process.role("/x/.venv/bin/python -m ml_assets.runner 2021-02") == cpu_by_process.ROLES[1][0]


def test_a_process_that_execs_another_program_is_named_by_that_program():
    """As a container's `runc init` execs its command (the compose services, every healthcheck): the CPU of
    the program it became counted for `runc init`, the Docker engine, before."""
    child = subprocess.Popen(["sh", "-c", "sleep 1; exec sleep 10"])
    try:
        seen: dict = {}
        cpu_by_process.read_processes(seen)
        named = [reading.command_line for key, reading in seen.items() if key[0] == child.pid]
        assert named == ["sh -c sleep 1; exec sleep 10 "]
        deadline = time.monotonic() + cpu_by_process.EXEC_SECONDS - 1  # a loaded machine may exec late
        while time.monotonic() < deadline and named != ["sleep 10 "]:
            time.sleep(0.2)
            cpu_by_process.read_processes(seen)
            named = [reading.command_line for key, reading in seen.items() if key[0] == child.pid]
        assert named == ["sleep 10 "]
    finally:
        child.kill()
        child.wait()


@pytest.mark.slow
def test_the_cpu_table_by_module_counts_a_test_s_own_cpu_and_its_processes_for_its_module(tmp_path, monkeypatch):
    """A test that spins for half a CPU-second in pytest's process and starts a child that starts a
    grandchild, each spinning for one: about 2.5 CPU-seconds for its module, found through the plugin
    and the children's environment (the grandchild's test is removed from its environment, so that
    it is found through its parent). Each process sleeps after spinning: the sampler misses up to half
    a second of a process's end."""
    spin = "import time\nwhile time.process_time() < {}: pass\ntime.sleep(1)\n"
    grandchild = spin.format(1.0)
    child = (
        "import os, subprocess, sys\n"
        "env = {k: v for k, v in os.environ.items() if k != 'PYTEST_CURRENT_TEST'}\n"
        f"grandchild = subprocess.Popen([sys.executable, '-c', {grandchild!r}], env=env)\n"
        + spin.format(1.0)
        + "grandchild.wait()\n"
    )
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "test_spinning.py").write_text(
        "import subprocess, sys, time\n"
        "def test_spins():\n"
        f"    subprocess.run([sys.executable, '-c', {child!r}], check=True)\n"
        "    started = time.process_time()\n"
        "    while time.process_time() - started < 0.5: pass\n"
        "    time.sleep(1)\n"
    )
    monkeypatch.delenv("PYTEST_CURRENT_TEST")  # this test's: the pytest below is not one of its processes here
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-c", str(tmp_path / "pytest.ini")]
    sampled = cpu_by_process.cpu_by_test([*command, "--rootdir", str(tmp_path), str(tmp_path)])
    totals = sampled.totals
    assert sampled.returncode == 0 and len(sampled.summaries) == 1, sampled
    assert re.fullmatch(r"1 passed in [\d.]+s", sampled.summaries[0]), sampled
    assert 2.3 <= totals["test_spinning.py::test_spins"] < 3.5, totals
    assert cpu_by_process.by_module(totals)["test_spinning.py"] == totals["test_spinning.py::test_spins"]
    assert totals[cpu_by_process.BETWEEN_TESTS] > 0.1, totals  # pytest's start-up: the rest of its process's CPU


@pytest.mark.process
def test_the_cpu_table_by_module_counts_a_forked_process_for_the_test_that_forked_it(tmp_path, monkeypatch):
    """Processes forked from ml_assets_tests/forked.py's server show the server's environment in /proc, which
    names the test that started the server: a second module's forked child, spinning for a CPU-second, counts
    for that module, not the first's. The child then lives 3 s, six of the sampler's polls: a process is counted
    with its CPU at the last reading, and on a loaded machine one second's sleep was once read by none."""
    spin = "import time\nwhile time.process_time() < 1.0: pass\ntime.sleep(3)\n"
    forking = (
        "from ml_assets_tests import forked\n"
        "import multiprocessing\n"
        "multiprocessing.get_context('forkserver').set_forkserver_preload([])  # a light server for this test\n"
        "def test_forks():\n"
        f"    assert forked.run(['-c', {spin!r}]).returncode == 0\n"
    )
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    for module in ("test_first.py", "test_second.py"):
        (tmp_path / module).write_text(forking)
    monkeypatch.delenv("PYTEST_CURRENT_TEST")
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-c", str(tmp_path / "pytest.ini")]
    sampled = cpu_by_process.cpu_by_test([*command, "--rootdir", str(tmp_path), str(tmp_path)])
    modules = cpu_by_process.by_module(sampled.totals)
    assert sampled.returncode == 0, sampled
    assert 0.9 <= modules["test_second.py"] < 1.6, modules
    assert modules["test_first.py"] >= 0.9, modules


def test_the_cpu_table_goes_into_the_command_s_section_of_a_page(tmp_path, capsys):
    """`--by-module --report PAGE` around a real pytest (not quiet, one test failing): its output is passed on,
    and the command's section, added to the page's prose, holds the wall time, the exit status, pytest's
    closing line and the module's row."""
    page = tmp_path / "testing.md"
    page.write_text("# Testing\n\nprose\n")
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "test_two.py").write_text("def test_passes():\n    pass\n\ndef test_fails():\n    assert False\n")
    pytest = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-c", str(tmp_path / "pytest.ini")]
    argv = ["--by-module", "--report", str(page), *pytest, "--rootdir", str(tmp_path), str(tmp_path)]
    assert cpu_by_process.main(argv) == 1
    closing = re.search(r"^=+ (1 failed, 1 passed in [\d.]+s) =+$", capsys.readouterr().out, re.M)
    assert closing, "pytest's output was not passed on"
    text = page.read_text()
    assert text.startswith("# Testing\n\nprose\n") and text.count("<!-- bench:") == 2, text
    assert f"**command** `python -m benchmarks.cpu_by_process {' '.join(argv)}`" in text
    for row in ("| exit status | 1 |", f"| pytest | {closing[1]} |", "| wall time | 0:0", "| total | "):
        assert row in text, text
