"""What observing an external worker costs, next to goqite's own speed and the built-in queue.

Side by side, in one run on this machine:

1. goqite's own benchmark loop (``b.RunParallel`` of Send, Receive, Delete, as in goqite v0.4.0's
   ``BenchmarkQueue``, which cannot run as shipped), reproduced in examples/go_goqite on
   modernc.org/sqlite with synchronous FULL (goqite's test settings) and NORMAL (the plugin's):
   messages/s, no jobs table;
2. the reference Go worker (examples/go_goqite) draining the heavy scenario (15 x 100 jobs,
   zero job time, template settings otherwise) **unobserved**: the database prepared and
   seeded by the plugin's own producers, the binary started directly, its events read only to
   know when the last job finished; once with bare producers, once with the producers under the
   plugin's connection observation as in a run (then only the watching of the worker differs);
3. the same through the plugin's run (**observed**: monitor sampling the queue, every event
   parsed and folded, the integrity SQL), as ``--quaero-worker-command`` runs it;
4. the built-in Python queue under the same scenario and settings.

Each of 2-4 runs ``--repeat`` times, alternating, and the median is printed; the ratio
observed/unobserved is the harness's cost (target: > 0.90).

    python benchmarks/bench_external.py            # 3 runs each, goqite's benchmark included
    python benchmarks/bench_external.py --quick    # 1 run each, no goqite benchmark
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine_line

from pytest_quaero.core.external import worker_environment
from pytest_quaero.core.gobuild import resolve_command
from pytest_quaero.core.observed import observing
from pytest_quaero.core.run import run_scenario
from pytest_quaero.core.scenarios import BUILTIN
from pytest_quaero.core.seed import Producers, prepare_database
from pytest_quaero.core.settings import Settings
from pytest_quaero.core.worker import open_endpoint

ROOT = Path(__file__).resolve().parent.parent
HEAVY = BUILTIN["heavy"]
#: A 1 s poll after an empty receive (the template's) turns a producer a few ms late into a worker idle
#: for a second: the figures would measure that quantization, not the harness. 20 ms keeps it small.
SETTINGS = Settings().replace(source="bench_external", job_time="0", poll_interval="20ms")


def goqite_benchmark() -> str:
    """goqite v0.4.0's send/receive/delete loop (b.RunParallel), as examples/go_goqite reproduces it.

    goqite's own copy (goqite_test.go BenchmarkQueue) panics at v0.4.0: its NewQ gets no database.
    """
    done = subprocess.run(["go", "test", "-run", "^$", "-bench", "BenchmarkGoqite", "-benchtime", "2s", "."],
                          cwd=ROOT / "examples" / "go_goqite", capture_output=True, text=True, timeout=900)
    lines = re.findall(r"BenchmarkGoqiteSendReceiveDelete/(\S+)\s+\d+\s+([\d.]+) ns/op", done.stdout)
    if not lines:
        return f"no benchmark line in: {(done.stdout + done.stderr).strip()[-300:]}"
    return "; ".join(f"{name}: {1e9 / float(ns):,.0f} messages/s ({float(ns) / 1000:,.0f} us per send+receive+delete)"
                     for name, ns in lines)


def unobserved(binary: list[str], run_dir: Path, *, observed_producers: bool = False) -> float:
    """Jobs/s of the Go worker started directly, the database seeded by the plugin's producers.

    ``observed_producers``: the producers run under the plugin's connection observation as in a
    real run, so what differs from one is only the watching of the worker (monitor, events).
    """
    db_path = str(run_dir / f"unobserved-{secrets.token_hex(2)}.db")
    prepare_database(db_path, SETTINGS)
    read_end, write_end = os.pipe()
    env = {**os.environ, **worker_environment(SETTINGS, db_path, 0, SETTINGS.workers),
           "QUAERO_EVENTS_FD": str(write_end)}
    process = subprocess.Popen(binary, env=env, stdin=subprocess.PIPE, pass_fds=(write_end,),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(write_end)
    finished: list[float] = []
    hello = threading.Event()
    all_done = threading.Event()

    def read() -> None:
        with os.fdopen(read_end, "rb") as stream:
            for line in stream:
                event = json.loads(line)
                if event["event"] == "hello":
                    hello.set()
                elif event["event"] == "job_finished" and event["outcome"] == "completed":
                    finished.append(event["ts"])
                    if len(finished) == HEAVY.total_jobs:
                        all_done.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    hello.wait(60)
    start_at = time.time()
    assert process.stdin is not None
    process.stdin.write(json.dumps({"command": "start", "at": start_at}).encode() + b"\n")
    process.stdin.flush()
    with observing() if observed_producers else contextlib.nullcontext():
        producers = Producers(HEAVY, secrets.token_hex(4), db_path, SETTINGS, open_endpoint)
        producers.start()
        all_done.wait(HEAVY.time_limit)
        process.terminate()
        process.wait(30)
        producers.join(30)
    return len(finished) / (max(finished) - start_at)


def observed(binary: list[str], run_dir: Path) -> float:
    settings = SETTINGS.replace(source="bench_external", worker_command=" ".join(binary))
    result = run_scenario(HEAVY, settings, run_dir=run_dir / f"observed-{secrets.token_hex(2)}")
    assert result.jobs_completed == HEAVY.total_jobs, result.worker_errors
    return result.throughput


def builtin(run_dir: Path) -> float:
    result = run_scenario(HEAVY, SETTINGS, run_dir=run_dir / f"builtin-{secrets.token_hex(2)}")
    return result.throughput


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 run each, no goqite benchmark")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    repeat = 1 if args.quick else args.repeat
    print(machine_line())
    binary = resolve_command(str(ROOT / "examples" / "go_goqite"))
    print(f"heavy scenario: {HEAVY.total_jobs} jobs, {SETTINGS.workers} workers, job time 0, stagger "
          f"{SETTINGS.describe('stagger')}, poll {SETTINGS.describe('poll_interval')}; {repeat} run(s) each")
    rates: dict[str, list[float]] = {"go unobserved": [], "go unobserved, producers observed": [],
                                     "go observed": [], "python built-in": []}
    with tempfile.TemporaryDirectory() as scratch:
        for index in range(repeat):
            run_dir = Path(scratch) / str(index)
            run_dir.mkdir()
            rates["go unobserved"].append(unobserved(binary, run_dir))
            rates["go unobserved, producers observed"].append(unobserved(binary, run_dir, observed_producers=True))
            rates["go observed"].append(observed(binary, run_dir))
            rates["python built-in"].append(builtin(run_dir))
    for name, values in rates.items():
        print(f"  {name:34} median {statistics.median(values):7.1f} jobs/s  ({', '.join(f'{v:.1f}' for v in values)})")
    observed_rate = statistics.median(rates["go observed"])
    for base in ("go unobserved", "go unobserved, producers observed"):
        ratio = observed_rate / statistics.median(rates[base])
        print(f"observed / {base} = {ratio:.3f} (the harness's cost: {1 - ratio:+.1%}; target < 10%)")
    if not args.quick:
        print(f"goqite's own benchmark: {goqite_benchmark()}")


if __name__ == "__main__":
    main()
