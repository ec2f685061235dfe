"""docs/benchmarks.md, written by the benchmarks themselves: one section per phase, replaced in place
(and docs/testing.md's section of `make test`, written by benchmarks.cpu_by_process).

A phase's section lies between `<!-- bench:NAME:begin -->` and `<!-- bench:NAME:end -->`: a heading,
one line saying when, on what machine and by which command it was measured and how much CPU the
rest of the machine used meanwhile, then its table(s). Writing a phase replaces that section only,
so `--only` keeps every other phase's latest figures, and the page's prose outside the sections is
never touched. Standard library only: the benchmarks' parent process must stay small (see harness).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmarks.harness import ROOT

PATH = ROOT / "docs" / "benchmarks.md"
# The order sections take on the page; one missing from it is inserted before the next one present.
SECTIONS = ["course", "months", "ablation", "overhead", "sizes", "backfill", "long", "monitoring", "deployment"]
MISSING = "–"  # a cell with no figure
NEW_PAGE = "# Benchmarks\n"


@dataclass(frozen=True)
class Provenance:
    """When, where and how a phase was measured."""

    command: str
    others_cpu: float | None  # CPU seconds the rest of the machine used during the phase's measured runs
    date: str = ""
    machine: str = ""

    def line(self) -> str:
        others = MISSING if self.others_cpu is None else f"{self.others_cpu:.1f} s"
        return (
            f"**Measured** {self.date or time.strftime('%Y-%m-%d')} · **machine** {self.machine or machine()} · "
            f"**command** `{self.command}` · **other processes' CPU** {others}"
        )


def machine() -> str:
    """This machine in one phrase: usable cores (and a container's CPU quota), CPU model, memory."""
    cores = f"{len(os.sched_getaffinity(0))} cores"
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            cores += f" (CPU quota {int(quota) / int(period):g})"
    except (OSError, ValueError):
        pass
    model = "CPU model unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{cores}, {model}, {ram:.1f} GiB RAM"


def verdict(value: float, target: float, unit: str = "") -> str:
    return f"target ≤ {target:g}{unit}: {'met' if value <= target else 'NOT met'}"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], align: str = "") -> str:
    """A Markdown table. `align` has an `l` or `r` per column; by default the first column is
    left-aligned and the others, which hold figures, right-aligned."""
    align = align or "l" + "r" * (len(headers) - 1)
    lines = [
        "| " + " | ".join(headers) + " |",
        "|" + "|".join("---:" if side == "r" else "---" for side in align) + "|",
    ]
    for row in rows:
        cells = [str(value).replace("|", "\\|") for value in row]
        lines.append("| " + " | ".join(cells + [""] * (len(headers) - len(cells))) + " |")
    return "\n".join(lines)


def markers(name: str) -> tuple[str, str]:
    return f"<!-- bench:{name}:begin -->", f"<!-- bench:{name}:end -->"


def section(name: str, title: str, provenance: Provenance, parts: Sequence[str]) -> str:
    """A phase's whole section, markers included: heading, provenance line, then tables and notes."""
    begin, end = markers(name)
    body = "\n\n".join([f"### {title}", provenance.line(), *parts])
    return f"{begin}\n{body}\n{end}"


def replace_section(page: str, name: str, text: str) -> str:
    """`page` with the section `name` replaced by `text` (a whole section), or inserted where it belongs."""
    begin, end = markers(name)
    found = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.S)
    if found.search(page):
        return found.sub(lambda _: text, page, count=1)
    later = SECTIONS[SECTIONS.index(name) + 1 :] if name in SECTIONS else []
    for other in later:
        at = page.find(markers(other)[0])
        if at >= 0:
            return page[:at] + text + "\n\n" + page[at:]
    return page.rstrip("\n") + "\n\n" + text + "\n"


def write_section(name: str, text: str, path: Path = PATH) -> None:
    """Replace (or add) one phase's section of the page at `path`; every other section stays as it was."""
    page = path.read_text() if path.exists() else NEW_PAGE
    path.parent.mkdir(parents=True, exist_ok=True)
    staged = path.with_name(f".{path.name}.tmp")
    staged.write_text(replace_section(page, name, text))
    os.replace(staged, path)  # an interrupted benchmark never leaves half a page
    print(f"   (written to {path}, section {name})")


def add_arguments(parser, sections: str) -> None:
    """--quick, --report and --no-report; `destination` reads them back."""
    parser.add_argument(
        "--report",
        type=Path,
        help=f"page whose {sections} replaced (default {PATH.relative_to(ROOT)}; none with --quick)",
    )
    parser.add_argument("--no-report", action="store_true", help="print the figures only")


def destination(args) -> Path | None:
    """Where the figures go: --report, else the benchmarks page, nowhere with --no-report or a bare --quick."""
    if args.no_report or (args.quick and args.report is None):
        return None
    return args.report or PATH
