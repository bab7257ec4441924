"""The ``quaero_scenario`` marker, and the scenarios it (or ``--quaero-scenario``) may name.

Imported at every start-up (the plugin registers the marker), so it needs only
the light core modules: settings and scenarios.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import pytest

from pytest_quaero.core.scenarios import BUILTIN, Scenario, check_stagger, scenario_value
from pytest_quaero.core.settings import Settings, SettingsError
from pytest_quaero.session import session_of

__all__ = ["MARKER", "MARKER_NAMES", "check_marker_names", "known_scenarios", "near_miss", "scenario_from_marker"]

MARKER = (
    "quaero_scenario(name=None, *, parents=None, children=None, time_limit=None, **settings): "
    "the load scenario quaero_run() runs in this test: a name (light, medium, heavy) or a custom "
    "parents x children tree; keyword settings (workers=4, stagger='100ms', ...) override the session's."
)

_SCENARIO_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*")

#: the plugin's markers, by name
MARKER_NAMES = ("quaero_scenario",)


def near_miss(name: str, registered: set[str]) -> str | None:
    """The quaero marker ``name`` was probably meant to be, or None.

    A misspelt marker is only a PytestUnknownMarkWarning to pytest, and ``quaero_run()``
    would then run a 1 x 1 scenario as if nothing had been asked. So a name that starts
    with ``quaero``, or is one or two edits away from a quaero marker (``quearo_scenario``),
    is taken for a typo, unless the project registered it as a marker of its own.
    """
    if name in MARKER_NAMES or name in registered:
        return None
    import difflib  # deferred: only an unknown marker name is compared

    close = difflib.get_close_matches(name, MARKER_NAMES, n=1, cutoff=0.8)
    if close:
        return close[0]
    return MARKER_NAMES[0] if name.lower().startswith(("quaero", "quearo", "qauero")) else None


def check_marker_names(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A usage error for the first marker of ``items`` that looks like a misspelt quaero marker."""
    registered = {line.split(":")[0].split("(")[0].strip() for line in config.getini("markers")}
    for item in items:
        for mark in item.iter_markers():
            meant = near_miss(mark.name, registered)
            if meant is None:
                continue
            raise pytest.UsageError(
                f"{item.nodeid}: unknown marker @pytest.mark.{mark.name}; did you mean "
                f"@pytest.mark.{meant}? (pytest would only warn, and quaero_run() would run a 1 x 1 "
                "scenario instead of the one asked for.)")


def known_scenarios(config: pytest.Config) -> dict[str, Scenario]:
    """Built-in scenarios plus every one ``pytest_quaero_scenarios`` adds; checked once per session.

    Raises ValueError (the plugin turns it into a usage error) naming the hook
    implementation that returned something unusable.
    """
    session = session_of(config)
    if session.known_scenarios is None:
        session.known_scenarios = _collect_scenarios(config)
    return session.known_scenarios


def _impl_origin(impl: Any) -> str:
    where = getattr(impl.plugin, "__file__", None) or type(impl.plugin).__qualname__
    return f"{impl.function.__name__} in {where}"


def _collect_scenarios(config: pytest.Config) -> dict[str, Scenario]:
    known: dict[str, Scenario] = dict(BUILTIN)
    origins = dict.fromkeys(known, "the built-in scenarios")
    # Called one implementation at a time, so an error can say whose return it was.
    for impl in reversed(config.hook.pytest_quaero_scenarios.get_hookimpls()):
        if impl.hookwrapper or impl.wrapper:
            continue
        origin = _impl_origin(impl)
        try:
            returned = impl.function()
        except Exception as exc:  # noqa: BLE001 - the user's code: any exception is theirs, told in one line
            said = " ".join(str(exc).split())  # one line, whatever the exception's text
            raise ValueError(f"{origin} raised {type(exc).__name__}: {said}") from None
        if returned is None:
            continue
        if isinstance(returned, Scenario):
            returned = [returned]
        if not isinstance(returned, (list, tuple)):
            raise ValueError(f"{origin} returned {type(returned).__name__}; return a list of "
                             "pytest_quaero.Scenario.")
        for scenario in returned:
            if not isinstance(scenario, Scenario):
                raise ValueError(f"{origin} returned {scenario!r}; each item must be a pytest_quaero.Scenario.")
            if not _SCENARIO_NAME.fullmatch(scenario.name) or scenario.name == "all":
                raise ValueError(f"{origin}: scenario name {scenario.name!r} is not allowed; use lower-case "
                                 "letters, digits, '-' and '_' (and not 'all').")
            if scenario.name in known:
                raise ValueError(f"{origin}: scenario {scenario.name!r} is already defined by "
                                 f"{origins[scenario.name]}.")
            known[scenario.name] = scenario
            origins[scenario.name] = origin
    return known


def scenario_from_marker(
    config: pytest.Config, args: tuple[Any, ...], kwargs: Mapping[str, Any], *, where: str
) -> tuple[Scenario, Settings]:
    """The scenario and settings a ``quaero_scenario`` marker (or quaero_run call) asks for."""
    kwargs = dict(kwargs)
    if len(args) > 1:
        raise pytest.UsageError(f"{where}: takes at most one scenario name, got {args!r}.")
    name = args[0] if args else kwargs.pop("name", None)
    parents, children = kwargs.pop("parents", None), kwargs.pop("children", None)
    time_limit = kwargs.pop("time_limit", None)
    try:
        known = known_scenarios(config)
        if isinstance(name, Scenario):
            scenario = name
        elif name is not None and (parents is None and children is None):
            if str(name) not in known:
                raise ValueError(f"unknown scenario {name!r}; allowed: {', '.join(known)}")
            scenario = known[str(name)]
        else:
            base = known.get(str(name)) if name is not None else None
            scenario = Scenario(
                str(name or "custom"),
                int(scenario_value("parents", parents, where=where) if parents is not None
                    else (base.parents if base else 1)),
                int(scenario_value("children", children, where=where) if children is not None
                    else (base.children if base else 1)),
                float(base.time_limit if base else 300.0),
                shape=base.shape if base else (),
            )
        if time_limit is not None:
            scenario = replace(scenario, time_limit=float(scenario_value("time_limit", time_limit, where=where)))
        settings = session_of(config).settings
        if kwargs:
            settings = settings.replace(source=where, **kwargs)
        check_stagger(settings, scenario)
    except SettingsError as exc:  # already names the marker as its source
        raise pytest.UsageError(str(exc)) from None
    except (ValueError, TypeError) as exc:
        raise pytest.UsageError(f"{where}: {exc}") from None
    return scenario, settings
