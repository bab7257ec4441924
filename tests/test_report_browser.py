"""The pytest-html report as a reader sees it: opened in headless Chromium, measured, and photographed.

The report of a failing light run (charts on, self-contained) is copied with a small
script appended that, once pytest-html's own script has drawn the results table, writes
what the browser computed (image widths, cell borders, the FAIL cell's colour, where the
failing row's tables are) into the page; ``chromium --dump-dom`` prints the page with it.
A screenshot of the same page is checked for the red of FAIL and kept for people to look at.

Needs a chromium binary (Debian: ``apt-get install -y chromium``); without one the tests skip.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

# the shared report runs (fixtures report_runs, report_store)
pytest_plugins = ["reportkit"]

BROWSER = next((found for name in ("chromium", "chromium-browser", "google-chrome")
                if (found := shutil.which(name))), None)
pytestmark = [
    pytest.mark.skipif(BROWSER is None, reason="no chromium or chromium-browser binary on PATH "
                                               "(Debian: apt-get install -y chromium)"),
    pytest.mark.slow,  # a load run and two browser starts: ~10-25 s on two cores
]

#: the viewport: a laptop's width
WIDTH = 1280
#: what the page reports back, after pytest-html's app.js has rendered the rows
PROBE = """
<script>
window.addEventListener("load", () => setTimeout(() => {
  const px = (el, prop) => parseFloat(getComputedStyle(el)[prop]);
  const summary = document.querySelector(".quaero-summary");
  const table = summary.querySelector("table.quaero-criteria");
  const failCell = [...table.querySelectorAll("td")].find(td => td.textContent.trim() === "FAIL");
  const failedRow = [...document.querySelectorAll("tbody.results-table-row")].find(
      body => body.querySelector(".col-result").textContent.trim() === "Failed");
  const link = summary.querySelector("h3 a");
  const box = table.getBoundingClientRect();
  const out = {
    table: [box.left, box.top + window.scrollY, box.width, box.height].map(Math.round),
    images: [...summary.querySelectorAll("img")].map(img => img.getBoundingClientRect().width),
    cellBorder: px(table.querySelector("td"), "borderTopWidth"),
    cellBorderStyle: getComputedStyle(table.querySelector("td")).borderTopStyle,
    failColor: failCell ? getComputedStyle(failCell).color : null,
    failedRowId: failedRow ? failedRow.id : null,
    failedRowHasTable: failedRow ? !!failedRow.querySelector(".extras-row table.quaero-criteria") : false,
    failedRowExtrasVisible: failedRow ? failedRow.querySelector(".extras-row").offsetHeight > 0 : false,
    link: link ? link.getAttribute("href") : null,
    linkTarget: link ? !!document.getElementById(decodeURIComponent(link.getAttribute("href").slice(1))) : false,
  };
  const probe = document.createElement("pre");
  probe.id = "quaero-probe";
  probe.textContent = JSON.stringify(out);
  document.body.appendChild(probe);
}, 500));
</script>
"""


def _chromium(*args: str) -> subprocess.CompletedProcess[str]:
    assert BROWSER is not None
    return subprocess.run([BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           f"--window-size={WIDTH},3000", *args], capture_output=True, text=True, timeout=120,
                          check=False)


_PAGES: dict[str, dict[str, Any]] = {}


@pytest.fixture
def page(report_runs: Any, report_store: Path) -> dict[str, Any]:
    """What Chromium measured on the failing run's report, and its screenshot (once per session)."""
    pytest.importorskip("matplotlib", exc_type=ModuleNotFoundError)
    if "fail_html" in _PAGES:
        return _PAGES["fail_html"]
    run = report_runs.get("fail_html")
    folder = report_store / "browser"
    folder.mkdir(exist_ok=True)
    probed = folder / "probed.html"
    probed.write_text(run.text("html").replace("</body>", PROBE + "</body>"), encoding="utf-8")
    dumped = _chromium("--virtual-time-budget=10000", "--dump-dom", probed.as_uri())
    match = re.search(r'<pre id="quaero-probe">(.*?)</pre>', dumped.stdout, re.S)
    assert match, f"the probe did not run: {dumped.stderr[-2000:]}"
    shot = folder / "report.png"
    taken = _chromium(f"--screenshot={shot}", "--virtual-time-budget=5000", run.files["html"].as_uri())
    assert shot.exists(), taken.stderr[-2000:]
    _PAGES["fail_html"] = {"probe": json.loads(html.unescape(match.group(1))), "shot": shot, "run": run}
    return _PAGES["fail_html"]


def test_charts_are_shown_at_least_600_px_wide(page: dict[str, Any]) -> None:
    widths = page["probe"]["images"]
    assert len(widths) == 3, widths  # queue length, utilization, processing times
    assert all(width >= 600 for width in widths), widths


def test_criteria_table_has_borders_and_a_red_fail(page: dict[str, Any]) -> None:
    probe = page["probe"]
    assert probe["cellBorder"] >= 1 and probe["cellBorderStyle"] == "solid"
    red, green, blue = (int(c) for c in re.findall(r"\d+", probe["failColor"])[:3])
    assert red > 150 and green < 80 and blue < 80, probe["failColor"]


def test_the_failing_row_holds_the_tables_and_the_summary_links_to_it(page: dict[str, Any]) -> None:
    probe = page["probe"]
    # throughput fails by design; on a loaded machine another criterion may fail before it
    verdicts = page["run"].json()["results"][0]["verdicts"]
    first = next(verdict["criterion"] for verdict in verdicts if not verdict["passed"])
    assert probe["failedRowId"] == f"quaero[light]::{first}"
    assert probe["failedRowHasTable"] and probe["failedRowExtrasVisible"]  # expanded: no click needed
    assert probe["link"] == f"#quaero[light]::{first}" and probe["linkTarget"]


def test_screenshot_shows_a_bordered_table_with_a_red_fail(page: dict[str, Any]) -> None:
    image = pytest.importorskip("PIL.Image", exc_type=ModuleNotFoundError)
    numpy = pytest.importorskip("numpy", exc_type=ModuleNotFoundError)  # both come with matplotlib
    left, top, width, height = page["probe"]["table"]
    with image.open(page["shot"]) as shot:
        rgb = numpy.asarray(shot.convert("RGB")).astype(int)[top:top + height, left:left + width]
    assert rgb.shape[0] > 100 and rgb.shape[1] > 300, rgb.shape  # the table is inside the screenshot
    # the FAIL in the table's own cells (pytest-html colours only its own result cells and spans)
    reds = int(((rgb[..., 0] > 180) & (rgb[..., 1] < 60) & (rgb[..., 2] < 60)).sum())
    assert reds > 30, reds
    # borders: a grey line runs along the table's top edge and down its left edge
    grey = (abs(rgb[..., 0] - 153) < 30) & (abs(rgb[..., 1] - 153) < 30) & (abs(rgb[..., 2] - 153) < 30)
    assert grey[:3].any(axis=0).mean() > 0.9 and grey[:, :3].any(axis=1).mean() > 0.9
