"""The tox files and the GitHub workflow, read the way tox and the runner read them.

Fast: ``tox config`` resolves each file's environments (commands after factors and posargs,
pass_env), and the workflow's shell lines run under bash with a stand-in ``tox`` that records
its arguments. Slow: real tox environments run pytest, against a wheel of this checkout.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CI = ROOT / "examples" / "ci"
WORKFLOW = CI / ".github" / "workflows" / "quaero.yml"
PY = f"py{sys.version_info.major}{sys.version_info.minor}"

pytestmark = pytest.mark.skipif(shutil.which("tox", path=str(Path(sys.executable).parent)) is None
                                and shutil.which("tox") is None, reason="tox is not installed (the test extra)")


def _tox(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 120
         ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tox", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env)


def _config(ini: Path, envs: str, *posargs: str, workdir: Path) -> dict[str, dict[str, list[str]]]:
    """``tox config``: {env: {key: lines}} for commands and pass_env, as tox resolved them."""
    args = ["config", "-c", str(ini), "--workdir", str(workdir), "-e", envs, "-k", "commands", "pass_env"]
    done = _tox(*args, *(["--", *posargs] if posargs else []), cwd=ini.parent)
    assert done.returncode == 0, done.stdout + done.stderr
    out: dict[str, dict[str, list[str]]] = {}
    env = key = ""
    for line in done.stdout.splitlines():
        if line.startswith("[testenv:"):
            env = line[len("[testenv:"):-1]
            out[env] = {}
        elif " = " in line or line.endswith(" ="):
            key, _, value = line.partition(" =")
            out[env][key] = [value.strip()] if value.strip() else []
        elif line.startswith("  ") and env:
            out[env][key].append(line.strip())
    return out


def _pytest_commands(lines: list[str]) -> list[list[str]]:
    return [shlex.split(line) for line in lines if line.split()[:1] == ["pytest"]]


# ---------------------------------------------------------------- examples/ci/tox.ini


def test_ci_example_runs_pytest_in_every_environment_with_posargs(tmp_path: Path) -> None:
    envs = f"{PY}-medium,{PY}-medium-nodist,{PY}-medium-xdist"
    config = _config(CI / "tox.ini", envs, "-k", "busy", "--quaero-workers=3", workdir=tmp_path)
    for env in envs.split(","):
        (command,) = _pytest_commands(config[env]["commands"])  # exactly one pytest run, whatever the factors
        assert command[-3:] == ["-k", "busy", "--quaero-workers=3"], command
        assert "--quaero-scenario=medium" in command
        assert ("-n" in command) == env.endswith("-xdist")
        report_dir = str(CI / "reports" / env)
        assert f"--junitxml={report_dir}/junit.xml" in command and f"--quaero-json={report_dir}/quaero.json" in command
        assert {"GITHUB_*", "QUAERO_*"} <= set(config[env]["pass_env"])


# ---------------------------------------------------------------- tox.ini of this project


def test_project_tox_runs_its_own_tests_and_the_example_under_the_matrix(tmp_path: Path) -> None:
    envs = f"{PY}-suite-pytestmin,{PY}-light-pytestmax,{PY}-heavy-xdist-pytestmin"
    config = _config(ROOT / "tox.ini", envs, workdir=tmp_path)
    (suite,) = _pytest_commands(config[f"{PY}-suite-pytestmin"]["commands"])
    assert suite[-1] == "tests" and "-n" in suite
    (light,) = _pytest_commands(config[f"{PY}-light-pytestmax"]["commands"])
    assert light[-1] == "examples/minimal" and "--quaero-scenario=light" in light and "-n" not in light
    (heavy,) = _pytest_commands(config[f"{PY}-heavy-xdist-pytestmin"]["commands"])
    assert "--quaero-scenario=heavy" in heavy and "-n" in heavy
    assert all("GITHUB_*" in config[env]["pass_env"] for env in envs.split(","))
    # posargs replace the path: `-- -k busy` runs this project's own tests (testpaths)
    (selected,) = _pytest_commands(_config(ROOT / "tox.ini", f"{PY}-light-pytestmax", "-k", "busy",
                                           workdir=tmp_path)[f"{PY}-light-pytestmax"]["commands"])
    assert selected[-2:] == ["-k", "busy"] and "examples/minimal" not in selected


def test_project_tox_has_a_lint_env_and_no_machine_paths() -> None:
    text = (ROOT / "tox.ini").read_text()
    assert re.search(r"^\[testenv:lint\]\n(.*\n)*?commands =\n    python -m ruff check \.\n    python -m mypy$", text,
                     re.M)
    assert "suite" in text.split("envlist =", 1)[1].split("\n\n")[0]
    # no developer's home, no pyenv version folder: paths are tox's own ({env_tmp_dir}) or relative
    assert not re.search(r"(?<![\w{}])/(home|Users|root|work|opt|usr)/|[A-Z]:\\\\|versions/3\.\d+\.\d+", text)


# ---------------------------------------------------------------- the workflow


def _block(name: str) -> str:
    """The ``run: |`` script of the workflow step called ``name``."""
    lines = WORKFLOW.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == f"- name: {name}")
    assert lines[start + 1].strip() == "run: |"
    indent = len(lines[start + 2]) - len(lines[start + 2].lstrip())
    body = []
    for line in lines[start + 2:]:
        if line.strip() and len(line) - len(line.lstrip()) < indent:
            break
        body.append(line[indent:])
    return "\n".join(body)


def _tox_lines() -> list[str]:
    return [line.split("run: ", 1)[1] for line in WORKFLOW.read_text().splitlines() if "run: tox -e " in line]


@pytest.mark.parametrize("save", ["false", "true"])
def test_workflow_runs_each_environment_against_its_own_baseline(tmp_path: Path, save: str) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stand_in = bin_dir / "tox"
    stand_in.write_text('#!/usr/bin/env bash\nprintf "%s\\n" "$@" > "$TOX_ARGS"\n')
    stand_in.chmod(0o755)
    github_env = tmp_path / "github_env"
    github_env.write_text("")
    text = WORKFLOW.read_text()
    limits = re.search(r"^  QUAERO_LIMITS: (\S+)$", text, re.M)
    assert limits is not None
    env = {**os.environ, "GITHUB_ENV": str(github_env), "SAVE": save, "QUAERO_LIMITS": limits.group(1),
           "PY": "3.12", "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(["bash", "-e", "-c", _block("the regression gate's options")], env=env,
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    for line in github_env.read_text().splitlines():  # what the runner puts in the later steps' environment
        name, _, value = line.partition("=")
        env[name] = value
    ran = []
    for line in _tox_lines():
        env["TOX_ARGS"] = str(tmp_path / "args")
        script = line.replace("${{ matrix.scenario }}", "light")
        done = subprocess.run(["bash", "-e", "-c", script], env=env, capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        ran.append((tmp_path / "args").read_text().splitlines())
    expected = []
    for dist in ("nodist", "xdist"):
        gate = [f"--quaero-baseline=.quaero/baselines/{dist}.json", f"--quaero-compare-fail={limits.group(1)}"]
        if save == "true":
            gate.append(f"--quaero-save-baseline=.quaero/baselines/{dist}.json")
        expected.append(["-e", f"py312-light-{dist}", "--", *gate])
    assert ran == expected


def test_workflow_uploads_the_reports_whatever_the_outcome() -> None:
    text = WORKFLOW.read_text()
    upload = text.split("- name: upload the reports", 1)[1].split("- name:", 1)[0]
    assert "if: ${{ !cancelled() }}" in upload and "path: reports/" in upload
    assert "uses: actions/upload-artifact@" in upload
    tox_ini = (CI / "tox.ini").read_text()
    assert "{tox_root}{/}reports{/}{env_name}" in tox_ini  # where the reports step looks
    assert "actions/cache/restore@" in text and "path: .quaero/baselines" in text


# ---------------------------------------------------------------- real tox runs


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel of this checkout, where pip finds ``pytest-quaero`` (the example's deps name it)."""
    folder = tmp_path_factory.mktemp("wheelhouse")
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(folder), str(ROOT)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return folder


@pytest.mark.slow
def test_ci_example_env_runs_selected_tests_and_writes_the_step_summary(tmp_path: Path, wheelhouse: Path) -> None:
    project = tmp_path / "project"
    (project / "tests").mkdir(parents=True)
    shutil.copy(CI / "tox.ini", project / "tox.ini")
    (project / "pyproject.toml").write_text('[tool.pytest.ini_options]\ntestpaths = ["tests"]\n')
    (project / "tests" / "test_queue.py").write_text(
        "def test_busy_queue_drains():\n    assert True\n\n\ndef test_something_else():\n    assert True\n")
    summary = tmp_path / "step_summary.md"
    env = {**os.environ, "PIP_FIND_LINKS": str(wheelhouse), "GITHUB_STEP_SUMMARY": str(summary),
           "GITHUB_ACTIONS": "true", "GITHUB_REPOSITORY": "team/queue", "GITHUB_RUN_ID": "42",
           "QUAERO_JOB_TIME": "1ms", "QUAERO_POLL_INTERVAL": "20ms", "QUAERO_STAGGER": "50ms"}
    env.pop("PYTEST_ADDOPTS", None)
    done = _tox("-e", f"{PY}-light", "--", "-k", "busy", "-p", "no:cacheprovider", cwd=project, env=env, timeout=600)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "test_busy_queue_drains" in output or "passed" in output
    counts = re.search(r"(\d+) passed, (\d+) deselected", output)
    assert counts is not None, output
    assert int(counts.group(1)) == 2  # test_busy_queue_drains and quaero[light]::sqlite_busy_errors
    assert "congratulations" in output
    # GITHUB_* reached pytest inside tox: the run appended its verdict to the step summary
    assert summary.exists() and "light" in summary.read_text(), output
    report_dir = project / "reports" / f"{PY}-light"
    assert {"junit.xml", "quaero.json", "quaero.md"} <= {p.name for p in report_dir.iterdir()}


@pytest.mark.slow
def test_project_suite_env_runs_under_the_lowest_pytest(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"}
    done = _tox("--workdir", str(tmp_path), "-e", f"{PY}-suite-pytestmin", "--",
                "tests/test_option_names.py", "tests/test_cli.py", "-p", "no:cacheprovider",
                cwd=ROOT, env=env, timeout=900)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-5000:]
    assert re.search(r"platform .* pytest-8\.0\.\d+", output), output[-3000:]
    assert re.search(r"\d+ passed", output)
