import pytest

pytest_plugins = ["pytester"]


@pytest.fixture(autouse=True)
def _no_ci_step_summary(monkeypatch: pytest.MonkeyPatch) -> None:
    # pytester runs inherit the environment: on GitHub Actions every inner session would
    # otherwise append its criteria tables to the real job summary
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
