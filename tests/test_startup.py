"""An installed but unused plugin stays cheap: heavy modules load only when a scenario runs.

Each check runs in a fresh interpreter (subprocess), because this test session itself has
long since imported everything. Timing lives in benchmarks/bench_startup.py; these tests
only look at which modules got imported, which is exact.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

#: the machinery of a run: imported by the fixtures and the scenario items when they run
HEAVY_QUAERO = (
    "pytest_quaero.core.pool",
    "pytest_quaero.core.worker",
    "pytest_quaero.core.seed",
    "pytest_quaero.core.monitor",
    "pytest_quaero.core.run",
    "pytest_quaero.core.queue",
    "pytest_quaero.core.store",
    "pytest_quaero.core.db",
    "pytest_quaero.core.harness",
    "pytest_quaero.items",
    "pytest_quaero.core.integrity",
)
#: standard-library modules pytest itself does not import, but a run needs
HEAVY_STDLIB = ("sqlite3", "multiprocessing")

_LIST = """
import json, sys
{body}
print(json.dumps(sorted(m for m in sys.modules if m.startswith("pytest_quaero") or m in {stdlib!r})))
"""


def _loaded(body: str, cwd: Path) -> list[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    out = subprocess.run(
        [sys.executable, "-c", _LIST.format(body=body, stdlib=set(HEAVY_STDLIB))],
        cwd=cwd, env=env, capture_output=True, text=True, check=True, timeout=120,
    )
    return list(json.loads(out.stdout.strip().splitlines()[-1]))


def _empty_project(tmp_path: Path) -> Path:
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    return tmp_path


def test_importing_the_plugin_module_imports_nothing_heavy(tmp_path: Path) -> None:
    loaded = _loaded("import pytest_quaero.plugin", tmp_path)
    assert [m for m in loaded if m in HEAVY_QUAERO or m in HEAVY_STDLIB] == [], loaded
    # the wiring (plugin, options, marker, fixtures, session, hookspecs and their trylast defaults) and
    # the two light core modules it needs (settings, for the option table; scenarios, for the marker):
    # nothing of the run machinery
    assert set(loaded) <= {
        "pytest_quaero", "pytest_quaero.plugin", "pytest_quaero.fixtures", "pytest_quaero.options",
        "pytest_quaero.markers", "pytest_quaero.session", "pytest_quaero.hookspecs", "pytest_quaero.defaults",
        "pytest_quaero.core", "pytest_quaero.core.settings", "pytest_quaero.core.fields",
        "pytest_quaero.core.scenarios",
        # how --quaero-explore and --quaero-replay are checked (standard library only)
        "pytest_quaero.core.explore", "pytest_quaero.core.explore.spec",
    }, loaded


def test_p_no_quaero_disables_the_plugin_entirely(tmp_path: Path) -> None:
    body = ("import pytest\n"
            "code = pytest.main(['--co', '-q', '-p', 'no:cacheprovider', '-p', 'no:quaero'])\n"
            "assert code == 5, code")  # 5: no tests collected, and no usage error
    assert _loaded(body, _empty_project(tmp_path)) == []


#: what a whole inactive start-up must not import. Looser than the plugin module's own import:
#: the hooks of other plugins' integrations load light modules (the queue's Message type for the
#: extension protocols, items for xdist's scheduler, sqlite3 for version strings), but never the
#: machinery that runs a scenario.
RUN_MACHINERY = (
    "pytest_quaero.core.pool",
    "pytest_quaero.core.run",
    "pytest_quaero.core.store",
    "pytest_quaero.core.db",
    "pytest_quaero.core.harness",
    "pytest_quaero.core.integrity",
    "multiprocessing",
)


def test_an_inactive_start_up_imports_no_run_machinery(tmp_path: Path) -> None:
    body = ("import pytest\n"
            "code = pytest.main(['--co', '-q', '-p', 'no:cacheprovider'])\n"
            "assert code == 5, code")
    loaded = _loaded(body, _empty_project(tmp_path))
    heavy = [m for m in loaded if m in RUN_MACHINERY]
    assert heavy == [], (
        f"pytest --co without any --quaero-* option imported {heavy}; import them inside the hook or "
        f"fixture that needs them (python -X importtime -m pytest --co shows who pulls them in)"
    )
