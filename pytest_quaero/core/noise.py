"""How noisy a run's time figures are, measured from the run itself.

A timing gate is only as good as the noise under it: the same light run spreads 3% on a quiet
machine and far more on a busy one. Each run therefore measures the noise of its own time
metrics by splitting itself (no second run needed):

* ``throughput`` and ``execution_time``: the jobs completed after the first in :data:`SPLITS`
  equal shares by completion time, each share's rate; the noise is the standard error of their
  mean rate (the start-up before the first completion is a fixed cost, left out);
* ``p95``, ``latency_p95``, ``avg_processing_time``: the per-job samples resampled
  (:data:`RESAMPLES` seeded bootstrap draws); the noise is the statistic's standard error.

Each is a percentage of the figure (``extra["noise"]``). A comparison adds the baseline's and
the new run's in quadrature and calls a time metric worse only beyond twice that (about 95%
confidence), and a rule tighter than it is warned about: it would flag noise as a regression.
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Callable, Sequence

from pytest_quaero.core.instruments import percentile

__all__ = ["RESAMPLES", "SPLITS", "band", "measure"]

SPLITS = 4
RESAMPLES = 200


def _percent(spread: float, value: float) -> float | None:
    return round(100.0 * spread / abs(value), 3) if value else None


def _rate_noise(done_at: Sequence[float]) -> float | None:
    """Standard error of the mean rate over SPLITS equal shares of the completed jobs, % of the mean."""
    ordered = sorted(done_at)
    if len(ordered) < 2 * SPLITS + 1:
        return None
    # from the first completion on: the start-up (stagger, the first poll) is one fixed cost, not noise
    previous, times = ordered[0], ordered[1:]
    size = len(times) / SPLITS
    rates = []
    for share in range(SPLITS):
        end = times[min(len(times) - 1, math.ceil((share + 1) * size) - 1)]
        count = math.ceil((share + 1) * size) - math.ceil(share * size)
        if end <= previous:
            return None
        rates.append(count / (end - previous))
        previous = end
    return _percent(statistics.stdev(rates) / math.sqrt(SPLITS), statistics.fmean(rates))


def _bootstrap(samples: Sequence[float], statistic: Callable[[list[float]], float]) -> float | None:
    if len(samples) < 20:
        return None
    draw = random.Random(0)  # seeded: the same run measures the same noise
    values = list(samples)
    estimates = [statistic(draw.choices(values, k=len(values))) for _ in range(RESAMPLES)]
    return _percent(statistics.stdev(estimates), statistic(values))


def _p95(values: list[float]) -> float:
    return percentile(values, 0.95)


def measure(done_at: Sequence[float], processing_times: Sequence[float],
            latencies: Sequence[float]) -> dict[str, float]:
    """``{metric: noise in % of its value}`` for the time metrics this run can say it about."""
    rate = _rate_noise(done_at)
    found = {
        "throughput": rate,
        "execution_time": rate,
        "p95": _bootstrap(processing_times, _p95),
        "avg_processing_time": _bootstrap(processing_times, statistics.fmean),
        "latency_p95": _bootstrap(latencies, _p95),
    }
    return {metric: value for metric, value in found.items() if value is not None}


def band(before: float | None, now: float | None) -> float | None:
    """The change (in %) two runs' figures may differ by from noise alone: 2 x their combined noise."""
    if before is None or now is None:
        return None
    return round(2.0 * math.hypot(before, now), 3)
