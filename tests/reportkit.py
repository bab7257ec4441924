"""Shared pytester runs for the report tests (Markdown, HTML, JSON, progress).

(PYTEST_DONT_REWRITE: the test modules import helpers from here before pytest registers
it as a plugin, so assertion rewriting could not apply anyway.)

A load run is the slow part of every report test, so each kind of run (passing,
failing, xdist, ...) happens once per test session: the first test that asks for it
runs pytester, copies the files it wrote into a session directory, and later tests
read the copies. Each test still works alone, in any order.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

# Imported now, at collection, if installed: the pytester fixture removes every module a test
# imported when the test ends, and numpy's C extensions (under matplotlib) cannot be imported a
# second time in one process.
try:
    import matplotlib.backends.backend_agg
    import matplotlib.figure  # noqa: F401
except ImportError:  # pragma: no cover - the charts extra is not installed
    pass

#: keeps each light run around a second (100 jobs of 1ms, short stagger and polling)
FAST = ("--quaero-job-time=1ms", "--quaero-stagger=100ms", "--quaero-poll-interval=50ms")
TEMPLATE = Path(__file__).parent / "data" / "load_test_template.md"
#: a template placeholder: [DATE TO BE FILLED], [PASS/FAIL], [PERCENTAGE]%, [RATE] ...
PLACEHOLDER = re.compile(r"\[[A-Z0-9 /%-]+\]")
#: a Markdown task-list box ("- [ ] Apply database schema updates") is not a placeholder
TASK_BOX = re.compile(r"^(\s*)- \[ \] ", re.M)


@dataclass
class Run:
    """What one pytester run left behind."""

    name: str
    ret: int
    stdout: str
    files: dict[str, Path] = field(default_factory=dict)

    def text(self, key: str) -> str:
        return self.files[key].read_text(encoding="utf-8")

    def json(self) -> dict[str, Any]:
        return json.loads(self.text("json"))

    def html_data(self) -> dict[str, Any]:
        """pytest-html renders from a JSON blob in the page: the rows, extras and environment."""
        match = re.search(r'data-jsonblob="([^"]*)"', self.text("html"))
        assert match, "no data blob in the HTML report"
        return json.loads(html.unescape(match.group(1)))


#: timing criteria a shared CI machine can miss on a correct run (a worker thread started 450ms late there), loosened
#: on the runs that must pass; the forced failures set their own light.min_throughput, which wins
CALM = ("--quaero-threshold=stagger_tolerance=2s", "--quaero-threshold=min_throughput=1")

# name -> (extra args, environment changes, block matplotlib?)
RUNS: dict[str, tuple[tuple[str, ...], dict[str, str], bool]] = {
    # a passing light run with every report, the step summary, and self-contained HTML
    "pass": (("--quaero-scenario=light", *FAST, *CALM, "--self-contained-html"), {"GITHUB_STEP_SUMMARY": "summary.md"},
             False),
    # a forced failure, quiet (-q), without matplotlib, HTML with assets next to it
    "fail": (("--quaero-scenario=light", *FAST, "--quaero-threshold=light.min_throughput=100000", "-q"), {}, True),
    # a forced failure with charts and self-contained HTML: what the browser test opens
    "fail_html": (("--quaero-scenario=light", *FAST, "--quaero-threshold=light.min_throughput=100000",
                   "--self-contained-html"), {}, False),
    # a passing light run long enough (~1 s) for several queue samples, whatever the machine's speed
    "sampled": (("--quaero-scenario=light", *FAST, *CALM, "--quaero-job-time=15ms..25ms"), {}, False),
    # the same passing scenario under xdist (the plugin keeps a scenario's items on one worker)
    "xdist": (("--quaero-scenario=light", *FAST, *CALM, "-n", "2", "--self-contained-html"), {}, False),
}

_CACHE: dict[str, Run] = {}


def _block_matplotlib(monkeypatch: pytest.MonkeyPatch) -> None:
    # None in sys.modules makes every import of the name (and its submodules) raise ImportError
    for name in [n for n in sys.modules if n == "matplotlib" or n.startswith("matplotlib.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "matplotlib", None)


class Runs:
    def __init__(self, pytester: pytest.Pytester, store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.pytester, self.store, self.monkeypatch = pytester, store, monkeypatch

    def get(self, name: str) -> Run:
        if name not in _CACHE:
            _CACHE[name] = self._run(name)
        return _CACHE[name]

    def _run(self, name: str) -> Run:
        args, env, no_charts = RUNS[name]
        out = self.pytester.path / "out"
        files = {"md": out / "report.md", "json": out / "results.json", "html": out / "report.html",
                 "junit": out / "junit.xml"}
        with self.monkeypatch.context() as patch:
            patch.delenv("GITHUB_STEP_SUMMARY", raising=False)
            for key, value in env.items():
                patch.setenv(key, str(self.pytester.path / value))
            if no_charts:
                _block_matplotlib(patch)
            result = self.pytester.runpytest(
                *args, f"--quaero-report={files['md']}", f"--quaero-json={files['json']}", f"--html={files['html']}",
                f"--junitxml={files['junit']}",
            )
        target = self.store / name
        shutil.copytree(self.pytester.path, target, ignore=shutil.ignore_patterns("*.db*"))
        copied = {key: target / path.relative_to(self.pytester.path) for key, path in files.items()}
        if env.get("GITHUB_STEP_SUMMARY"):
            copied["summary"] = target / env["GITHUB_STEP_SUMMARY"]
        return Run(name, result.ret, result.stdout.str(), copied)


@pytest.fixture(scope="session")
def report_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("report-runs")


@pytest.fixture
def report_runs(pytester: pytest.Pytester, report_store: Path, monkeypatch: pytest.MonkeyPatch) -> Runs:
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    return Runs(pytester, report_store, monkeypatch)


_ESCAPE = re.compile(r"\x1b(7|8|\[K|\[[0-9;]*m)")


def screen(raw: str) -> list[str]:
    """What a terminal shows after ``raw``: carriage returns, VT100 save/restore cursor and erase-line applied.

    Enough of a terminal for the progress display's output (it never moves up a line);
    colour codes are dropped.
    """
    lines, row, col, saved = [""], 0, 0, (0, 0)
    pos = 0
    for match in [*_ESCAPE.finditer(raw), None]:
        end = match.start() if match else len(raw)
        for char in raw[pos:end]:
            if char == "\n":
                row, col = row + 1, 0
                if row == len(lines):
                    lines.append("")
            elif char == "\r":
                col = 0
            else:
                line = lines[row].ljust(col)
                lines[row] = line[:col] + char + line[col + 1:]
                col += 1
        if match is None:
            break
        code = match.group(1)
        if code == "7":
            saved = (row, col)
        elif code == "8":
            row, col = saved
        elif code == "[K":
            lines[row] = lines[row][:col]
        pos = match.end()
    return lines


def placeholders(text: str) -> list[str]:
    return PLACEHOLDER.findall(TASK_BOX.sub(r"\1- ", text))


def headings(text: str) -> list[str]:
    """Markdown headings outside code blocks, in order."""
    found, fenced = [], False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and line.startswith("#"):
            found.append(line.strip())
    return found


def section(text: str, heading: str) -> str:
    """The body under ``heading`` up to the next heading of the same or a higher level."""
    level = len(heading) - len(heading.lstrip("#"))
    lines = text.splitlines()
    start = lines.index(heading) + 1
    end = len(lines)
    fenced = False
    for i in range(start, len(lines)):
        line = lines[i]
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and line.startswith("#") and len(line) - len(line.lstrip("#")) <= level:
            end = i
            break
    return "\n".join(lines[start:end])


def table_rows(text: str) -> list[list[str]]:
    """The body rows of the Markdown tables in ``text``, as stripped cells (bold marks removed)."""
    rows = []
    for line in text.splitlines():
        if line.startswith("|") and not line.startswith("|--") and not line.startswith("| Metric"):
            rows.append([cell.strip().strip("*") for cell in line.strip().strip("|").split(" | ")])
    return rows
