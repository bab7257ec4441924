"""--quaero-json: every metric, setting, verdict and timeline, machine and commit info, written atomically."""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from pytest_quaero.core.metrics import RunResult
from pytest_quaero.core.results_json import (
    DOCUMENT_SCHEMA_VERSION,
    build_document,
    commit_info,
    load_document,
    metrics_of,
    plugin_version,
    results_from,
    write_atomic,
)
from pytest_quaero.core.settings import FIELDS

README = Path(__file__).parents[1] / "README.md"

# the shared report runs (fixtures report_runs, report_store)
pytest_plugins = ["reportkit"]


def test_document_header(report_runs) -> None:
    document = report_runs.get("pass").json()
    assert document["schema_version"] == DOCUMENT_SCHEMA_VERSION
    assert document["versions"]["sqlite"] == sqlite3.sqlite_version == document["results"][0]["sqlite_version"]
    assert document["versions"]["plugin"] == plugin_version() == document["plugin_version"]
    assert document["machine"]["cpu_count"] == os.cpu_count()
    # pytester's directory is no git repository: the document says so instead of failing
    assert document["commit"]["available"] is False and document["commit"]["error"]
    session = document["session"]
    assert session["scenarios"] == ["light"] and session["exitstatus"] == 0 and session["passed"] is True
    assert list(document)[-1] == "results"


def test_every_setting_verdict_and_timeline_is_there(report_runs) -> None:
    document = report_runs.get("pass").json()
    assert set(document["settings"]["values"]) == {spec.name for spec in FIELDS}
    assert document["settings"]["sources"]["stagger"] == "command line"
    result = document["results"][0]
    assert set(result["settings"]) == {spec.name for spec in FIELDS}
    assert [v["criterion"] for v in result["verdicts"]] == [
        "execution_time", "sqlite_busy_errors", "queue_deletion", "hierarchy_integrity", "completion_rate",
        "worker_staggering", "throughput", "no_duplicate_processing", "write_lock_hold", "worker_health",
    ]
    phases = [entry["phase"] for entry in result["timeline"]]
    assert phases[0] == "initialization" and phases[-1] == "completed" and "jobs_completed" in phases
    offsets = [entry["offset"] for entry in result["timeline"]]
    assert offsets == sorted(offsets)
    assert result["queue_samples"] and result["processing_times"] and result["integrity"]["queries"]


def test_metrics_are_the_results_own_figures(report_runs) -> None:
    document = report_runs.get("fail").json()
    data = document["results"][0]
    result = RunResult.from_dict(data)
    metrics = data["metrics"]
    assert metrics == json.loads(json.dumps(metrics_of(result)))
    assert metrics["throughput"] == pytest.approx(data["jobs_completed"] / data["execution_time"], rel=1e-4)
    assert metrics["messages_deleted"] == data["messages_enqueued"] - data["messages_left"]
    assert metrics["children_created"] == data["children_found"]
    assert metrics["criteria_failed"] == 1 and data["passed"] is False and document["session"]["passed"] is False
    for op in ("save_job", "queue_delete", "queue_receive", "create_child", "progress_update"):
        assert f"attempts_per_operation.{op}" in metrics
    for worker in data["workers"]:
        assert f"worker_utilization.{worker['name']}" in metrics


def test_results_round_trip(report_runs, tmp_path: Path) -> None:
    document = load_document(report_runs.get("pass").files["json"])
    results = results_from(document)
    again = build_document(results, commit={"available": False, "error": "test"})
    path = write_atomic(tmp_path / "again.json", again)
    assert [r.to_dict() for r in results_from(load_document(path))] == [r.to_dict() for r in results]
    assert results[0].log_excerpts["stagger"], "the log excerpts travel with the result"


def test_junit_properties_carry_every_metric(report_runs) -> None:
    run = report_runs.get("pass")
    metrics = run.json()["results"][0]["metrics"]
    root = ET.parse(run.files["junit"]).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    properties = {p.get("name"): p.get("value") for p in suite.find("properties").iter("property")}
    for name, value in metrics.items():
        assert properties["quaero_light_" + name.replace(".", "_")] == str(value), name
    for case in root.iter("testcase"):  # no criterion item carries the run's figures
        assert not any(p.get("name", "").startswith("quaero_light_") for p in case.iter("property"))


@pytest.mark.slow  # a whole pytest session of its own: CI runs it with -m slow
def test_junit_properties_survive_xdist(report_runs) -> None:
    tree = ET.parse(report_runs.get("xdist").files["junit"])
    names = {p.get("name") for p in tree.iter("property")}
    assert {"quaero_light_throughput", "quaero_light_busy_errors", "quaero_light_p95"} <= names


def test_write_atomic_keeps_the_old_file_when_writing_fails(tmp_path: Path) -> None:
    target = tmp_path / "results.json"
    write_atomic(target, {"schema_version": 1, "results": []})
    with pytest.raises(TypeError):
        write_atomic(target, {"schema_version": 1, "results": [object()]})
    assert json.loads(target.read_text()) == {"schema_version": 1, "results": []}
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask


def test_load_document_rejects_what_is_not_ours(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    with pytest.raises(ValueError, match="not a pytest-quaero results document"):
        load_document(bad)
    bad.write_text("{")
    with pytest.raises(ValueError, match="not JSON"):
        load_document(bad)
    bad.write_text(json.dumps({"schema_version": DOCUMENT_SCHEMA_VERSION + 1, "results": []}))
    with pytest.raises(ValueError, match="newer than this plugin reads"):
        load_document(bad)


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_commit_info_uses_git_describe(tmp_path: Path) -> None:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    for args in (["init", "-q"], ["commit", "-q", "--allow-empty", "-m", "one"], ["tag", "v1.2.3"]):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, env=env)
    info = commit_info(tmp_path)
    assert info["available"] and info["describe"] == "v1.2.3" and not info["dirty"]
    assert re.fullmatch(r"[0-9a-f]{40}", info["id"])
    (tmp_path / "tracked").write_text("x")
    subprocess.run(["git", "add", "tracked"], cwd=tmp_path, check=True, env=env)
    assert commit_info(tmp_path)["describe"] == "v1.2.3-dirty"


def test_readme_documents_the_format(report_runs) -> None:
    text = README.read_text(encoding="utf-8")
    assert "## JSON results" in text
    json_section = text.split("## JSON results", 1)[1].split("\n## ", 1)[0]
    document = report_runs.get("pass").json()
    for key in document:
        assert f"`{key}`" in json_section, key
    for key in ("metrics", "derived", "verdicts", "timeline", "log_excerpts"):
        assert f"`{key}`" in json_section, key
