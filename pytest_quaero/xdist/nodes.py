"""The collectors of ``--quaero-shared-db``: a share of the load per worker, and the judge.

Imported only on a worker of a ``--quaero-shared-db`` session (see :mod:`pytest_quaero.xdist`
for the design): :func:`make_nodes` stands in for the plugin's plain scenario nodes.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

import pytest

from pytest_quaero.core.criteria import evaluate
from pytest_quaero.core.metrics import RunResult
from pytest_quaero.core.scenarios import Scenario
from pytest_quaero.extension import Extensions
from pytest_quaero.items import CriterionItem, ScenarioNode, collect_nodes
from pytest_quaero.xdist.merge import OVERLAP_KEY, combined_stagger, merge_results, overlap_verdict
from pytest_quaero.xdist.shared_db import BARRIER_TIMEOUT, SharedDb, write_json

if TYPE_CHECKING:
    from pytest_quaero.core.harness import Harness

__all__ = ["JudgeNode", "ShardItem", "ShardNode", "make_nodes"]


def make_nodes(shared: SharedDb, session: pytest.Session, scenarios: list[Scenario],
               harness: Harness) -> list[pytest.Item]:
    """Per scenario, a shard node for every worker and the judge node, collected.

    Bound to ``shared`` (``functools.partial``), this is the session's ``make_scenario_nodes``.
    """
    nodes: list[pytest.Collector] = []
    for scenario in scenarios:
        nodes.extend(ShardNode.create(session, scenario, harness, shared, worker) for worker in shared.worker_ids)
        nodes.append(JudgeNode.create(session, scenario, harness, shared))
    return collect_nodes(session, nodes)


class ShardNode(pytest.Collector):
    """``quaero[<scenario>@<worker>]``: this worker's share of the load on the shared file."""

    scenario: Scenario
    harness: Harness
    shared: SharedDb
    worker: str
    result: RunResult | None

    @classmethod
    def create(cls, parent: pytest.Session, scenario: Scenario, harness: Harness, shared: SharedDb,
               worker: str) -> ShardNode:
        name = f"quaero[{scenario.name}@{worker}]"
        node: ShardNode = cls.from_parent(parent, name=name, nodeid=name)
        node.scenario, node.harness, node.shared, node.worker, node.result = scenario, harness, shared, worker, None
        return node

    def collect(self) -> list[pytest.Item]:
        return [ShardItem.from_parent(self, name="run")]

    def setup(self) -> None:
        folder = self.shared.directory(self.config, self.scenario.name)
        try:
            self.shared.prepare_once(self.config, self.harness.settings)
            base = self.harness.settings
            settings = base.replace(
                source="--quaero-shared-db", db_path=self.shared.path,
                queue_name=f"{base.queue_name}_{self.worker}_{self.shared.session}",
            )
            waited, complete = self.shared.barrier(folder)
            result = self.harness.run(self.scenario, settings, extensions=Extensions.for_node(self))
        except BaseException as exc:  # re-raised: the judge must learn of any failure, even an interrupt
            write_json(folder / f"{self.worker}.error", {"error": f"{type(exc).__name__}: {exc}"})
            raise
        result.extra["shared_db"] = {
            "worker": self.worker, "workers": self.shared.workers, "path": self.shared.path,
            "queue": settings.queue_name, "base_queue": base.queue_name,
            "barrier_wait": round(waited, 3), "barrier_complete": complete,
        }
        self.result = result
        write_json(folder / f"{self.worker}.json", result.to_dict())

    def reportinfo(self) -> tuple[Any, int | None, str]:
        return self.path, None, self.name


class ShardItem(pytest.Item):
    """Passes when this worker's share ran and its result reached the judge's folder."""

    parent: ShardNode

    def runtest(self) -> None:
        result = self.parent.result
        if result is None:
            raise AssertionError(f"{self.parent.name}: no result was recorded")
        self.user_properties.extend([
            ("quaero_scenario", self.parent.scenario.name),
            ("quaero_shard", self.parent.worker),
            ("quaero_jobs", f"{result.jobs_completed}/{result.total_jobs}"),
            ("quaero_busy_errors", result.busy_errors),
        ])

    def reportinfo(self) -> tuple[Any, int | None, str]:
        return self.path, None, self.nodeid


class JudgeNode(ScenarioNode):
    """``quaero[<scenario>]`` under --quaero-shared-db: judges the merge of every shard."""

    shared: SharedDb

    @classmethod
    def create(cls, parent: pytest.Session, scenario: Scenario, harness: Harness,  # type: ignore[override]
               shared: SharedDb) -> JudgeNode:
        node = super().create(parent, scenario, harness)
        assert isinstance(node, JudgeNode)
        node.shared = shared
        return node

    def collect(self) -> list[pytest.Item]:
        return [*super().collect(), CriterionItem.from_parent(self, name=OVERLAP_KEY)]

    def setup(self) -> None:
        self.carried = False
        folder = self.shared.directory(self.config, self.scenario.name)
        deadline = time.monotonic() + self.scenario.time_limit + BARRIER_TIMEOUT + 60
        parts: list[RunResult] = []
        pending = list(self.shared.worker_ids)
        while pending:
            for worker in list(pending):
                error = folder / f"{worker}.error"
                if error.exists():
                    message = json.loads(error.read_text(encoding="utf-8"))["error"]
                    pytest.fail(f"{self.name}: the shard on {worker} failed: {message}", pytrace=False)
                done = folder / f"{worker}.json"
                if done.exists():
                    parts.append(RunResult.from_dict(json.loads(done.read_text(encoding="utf-8"))))
                    pending.remove(worker)
            if pending and time.monotonic() > deadline:
                pytest.fail(f"{self.name}: no result from the shards on {', '.join(pending)}", pytrace=False)
            if pending:
                time.sleep(0.1)
        # in worker order, whichever shard finished first: the tables read the same every time
        parts.sort(key=lambda part: str(part.extra.get("shared_db", {}).get("worker", "")))
        merged = merge_results(parts, shared_path=self.shared.path)
        thresholds = self.harness.thresholds(self.scenario)
        verdicts = [combined_stagger(parts, v) if v.criterion == "worker_staggering" else v
                    for v in evaluate(merged, thresholds)]
        verdicts.append(overlap_verdict(merged))
        extensions = Extensions.for_node(self)
        verdicts += extensions.extra_verdicts(self.scenario, merged, thresholds)
        merged.verdicts = [verdict.as_dict() for verdict in verdicts]
        self.harness.finish(merged, keep=True)
        self.result = merged
