"""What an installed but unused pytest-quaero costs at pytest start-up.

``pytest --co -q`` in an empty project (one empty pytest.ini, no tests), with the plugin
loaded through its entry point but given no ``--quaero-*`` option, against the same with
``-p no:quaero``. The two commands alternate, so a noisy neighbour slows both alike; the
overhead is reported as min and median of the paired ratios, and of the ratio of the minima
(the least disturbed start-ups).

It then lists the pytest_quaero modules an inactive start-up imports: the heavy machinery
(pool, run, queue, store, multiprocessing, sqlite3 ...) should be imported only when a
scenario runs (tests/test_startup.py guards the same).

    python benchmarks/bench_startup.py            # 30 pairs
    python benchmarks/bench_startup.py --quick    # 6 pairs (< 30 s)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Bench, machine_line, med, print_table, ratio_cell

#: the machinery of a run: imported only when a scenario (or a fixture that needs it) runs
RUN_MACHINERY = (
    "pytest_quaero.core.pool", "pytest_quaero.core.run", "pytest_quaero.core.store", "pytest_quaero.core.db",
    "pytest_quaero.core.harness", "pytest_quaero.core.integrity", "multiprocessing",
)
#: light, but still avoidable at start-up
AVOIDABLE = ("pytest_quaero.core.queue", "pytest_quaero.items", "sqlite3")
HEAVY = RUN_MACHINERY + AVOIDABLE

_LIST_MODULES = """
import json, sys, pytest
before = set(sys.modules)
code = pytest.main(["--co", "-q", "-p", "no:cacheprovider"])
loaded = sorted(m for m in sys.modules if m.startswith("pytest_quaero") or m in {heavy!r})
print(json.dumps({{"exit": int(code), "modules": loaded, "new": sorted(set(sys.modules) - before)}}))
"""


def _env() -> dict[str, str]:
    # The start-up measured is pytest's own: no PYTEST_ADDOPTS or PYTEST_PLUGINS from the caller.
    return {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}


def timed(cmd: list[str], cwd: str) -> tuple[float, int]:
    started = time.perf_counter()
    code = subprocess.run(cmd, cwd=cwd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode
    return time.perf_counter() - started, code


def main(argv: list[str] | None = None) -> int:
    bench = Bench(__doc__.splitlines()[0], reps=30, quick_reps=6)
    args = bench.parse(argv)
    assert bench.dir is not None
    project = tempfile.mkdtemp(dir=bench.dir)
    Path(project, "pytest.ini").write_text("[pytest]\n")  # rootdir here, no search up the tree
    base = [sys.executable, "-m", "pytest", "--co", "-q", "-p", "no:cacheprovider"]
    variants = {"plugin installed, inactive": base, "-p no:quaero": [*base, "-p", "no:quaero"]}
    times: dict[str, list[float]] = {name: [] for name in variants}
    codes: dict[str, set[int]] = {name: set() for name in variants}
    print(f"bench_startup: {args.reps} pairs of `pytest --co -q` in an empty project; {machine_line()}", flush=True)
    started = time.perf_counter()
    try:
        for cmd in variants.values():  # warm the OS cache and the .pyc files first
            timed(cmd, project)
        for rep in range(args.reps):
            order = list(variants.items()) if rep % 2 == 0 else list(reversed(variants.items()))
            for name, cmd in order:
                seconds, code = timed(cmd, project)
                times[name].append(seconds)
                codes[name].add(code)
        listing = subprocess.run(
            [sys.executable, "-c", _LIST_MODULES.format(heavy=set(HEAVY))], cwd=project, env=_env(),
            capture_output=True, text=True, check=False,
        )
    finally:
        bench.cleanup()

    print()
    on, off = times["plugin installed, inactive"], times["-p no:quaero"]
    rows = [[name, f"{min(v) * 1000:.0f}", f"{med(v) * 1000:.0f}", ",".join(map(str, sorted(codes[name])))]
            for name, v in times.items()]
    print_table(["pytest --co -q", "ms min", "ms median", "exit codes"], rows)
    overhead = [a / b - 1 for a, b in zip(on, off, strict=True)]
    print()
    print(f"Overhead of the inactive plugin: {100 * (min(on) / min(off) - 1):+.1f}% (ratio of minima), "
          f"paired {ratio_cell([100 * x for x in overhead])} % (min / median). Target: < 5%.")
    print(f"-p no:quaero works: {'yes' if codes['-p no:quaero'] == {5} else 'NO'} (exit 5 = no tests collected)")
    try:
        data = json.loads(listing.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        print(f"could not list the imported modules: {listing.stderr.strip()[-500:]}")
        return 1
    quaero = [m for m in data["modules"] if m.startswith("pytest_quaero")]
    machinery = [m for m in data["modules"] if m in RUN_MACHINERY]
    avoidable = [m for m in data["modules"] if m in AVOIDABLE]
    print(f"pytest_quaero modules an inactive start-up imports ({len(quaero)}): {', '.join(quaero)}")
    print(f"run machinery among them (tests/test_startup.py forbids it): {', '.join(machinery) or 'none'}; "
          f"light but avoidable: {', '.join(avoidable) or 'none'}")
    print(f"({time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
