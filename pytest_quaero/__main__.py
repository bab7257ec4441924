"""``pytest-quaero compare OLD.json NEW.json --fail=throughput:10%,p95:25%`` (or ``python -m pytest_quaero``).

Compares two results documents (``--quaero-json`` output or a baseline store) outside
pytest, for CI scripts. Results are matched by scenario key (name and shape); when a
file holds several machines' baselines, the one recorded on NEW's machine is used.
``--format=markdown`` writes the comparison as a Markdown block to post on a pull request
(or append to ``$GITHUB_STEP_SUMMARY``), ``--format=json`` as one JSON document.

Exit codes: 0 no regression; 1 a metric regressed beyond its limit (or, with
``--require-baseline``, a scenario of NEW has no baseline in OLD); 2 bad usage or a
file that cannot be read. Errors are one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from pytest_quaero.core.baseline import (
    BaselineError,
    compare,
    document_fingerprint,
    format_table,
    load_results,
    parse_rules,
    scenario_key,
)

EXIT_OK = 0
EXIT_REGRESSION = 1
EXIT_USAGE = 2

FORMATS = ("text", "markdown", "json")
#: what a comparison without any gated row says: the CLI's option, not the pytest one
NO_RULE = "nothing to gate (no counts in the baseline, no --fail rule)"


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("pytest-quaero")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def _prog() -> str:
    command = os.path.basename(sys.argv[0] if sys.argv else "")
    return "python -m pytest_quaero" if command in ("__main__.py", "", "-c") else command


def _parser() -> argparse.ArgumentParser:
    shown = f"%(prog)s {version()}"
    parser = argparse.ArgumentParser(prog=_prog(), description="pytest-quaero tools outside pytest.")
    parser.add_argument("--version", action="version", version=shown)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    compare = commands.add_parser(
        "compare", help="compare NEW results with OLD (the baseline); exit 1 on a regression",
        description="Compare the scenario results in NEW.json with those in OLD.json (the baseline). "
        "Exit 0: no regression; 1: regression (or missing baseline with --require-baseline); 2: usage error.",
    )
    compare.add_argument("--version", action="version", version=shown)
    compare.add_argument("old", metavar="OLD.json", help="the baseline: a results document or baseline store")
    compare.add_argument("new", metavar="NEW.json", help="the results to judge")
    compare.add_argument(
        "--fail", action="append", default=[], metavar="EXPR[,EXPR]",
        help="limits such as throughput:10%%,p95:25%%,execution_time:20%%,retries:+50 (repeatable); "
        "without any, only the exact counts of the baseline are gated",
    )
    compare.add_argument("--require-baseline", action="store_true",
                         help="fail when a scenario of NEW has no result in OLD")
    compare.add_argument("--scenario", action="append", default=[], metavar="NAME",
                         help="only this scenario (repeatable)")
    compare.add_argument("--format", choices=FORMATS, default="text",
                         help="text (default), markdown (a block to post on a pull request) or json")
    return parser


def _entries(args: argparse.Namespace) -> tuple[list[dict[str, Any]], list[str]]:
    """One entry per scenario of NEW, and the warnings; raises BaselineError on a bad file or rule."""
    rules = parse_rules(args.fail, option="--fail")
    old_doc, old_results = load_results(args.old)
    new_doc, new_results = load_results(args.new)
    if args.scenario:
        new_results = [r for r in new_results if r.scenario in args.scenario]
        if not new_results:
            raise BaselineError(f"{args.new} has no result of scenario {', '.join(args.scenario)}")
    if not new_results:
        raise BaselineError(f"{args.new} holds no results")
    entries: list[dict[str, Any]] = []
    warnings: list[str] = []
    for new in new_results:
        key = scenario_key(new)
        machine = document_fingerprint(new_doc, new)
        candidates = [(document_fingerprint(old_doc, old), old) for old in old_results if scenario_key(old) == key]
        same_machine = [old for fp, old in candidates if fp == machine]
        if same_machine:
            old, old_machine = same_machine[-1], machine
        elif candidates:
            old_machine, old = candidates[-1]
            warnings.append(f"{key}: the baseline was recorded on {old_machine}, NEW on {machine}; comparing anyway")
        else:
            entries.append({"key": key, "status": "no baseline", "summary": f"no baseline in {args.old}",
                            "machine": machine, "baseline_machine": None, "rows": []})
            continue
        result = compare(old, new, rules)
        warnings += list(result.warnings)  # each already names its scenario
        gated = any(row.passed is not None for row in result.rows)
        entries.append({
            "key": key, "status": "regression" if result.regressed else "ok",
            "summary": result.summary() if gated else NO_RULE,
            "machine": machine, "baseline_machine": old_machine,
            "rows": [row.as_dict() for row in result.rows],
        })
    return entries, warnings


def _exit_code(entries: list[dict[str, Any]], require_baseline: bool) -> int:
    if any(entry["status"] == "regression" for entry in entries):
        return EXIT_REGRESSION
    if require_baseline and any(entry["status"] == "no baseline" for entry in entries):
        return EXIT_REGRESSION
    return EXIT_OK


def _text(entries: list[dict[str, Any]], args: argparse.Namespace) -> str:
    lines: list[str] = []
    for entry in entries:
        if entry["status"] == "no baseline":
            lines.append(f"{entry['key']}: {entry['summary']}" + (" (required)" if args.require_baseline else ""))
            continue
        status = "REGRESSION" if entry["status"] == "regression" else "ok"
        lines.append(f"{entry['key']}: {status} - {entry['summary']}")
        lines += ["  " + line for line in format_table(entry["rows"])]
    return "\n".join(lines) + "\n"


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _markdown(entries: list[dict[str, Any]], warnings: list[str], args: argparse.Namespace, code: int) -> str:
    regressed = sum(entry["status"] == "regression" for entry in entries)
    missing = sum(entry["status"] == "no baseline" for entry in entries)
    if code == EXIT_OK:
        verdict = "✅ no regression"
    elif regressed:
        verdict = f"❌ {regressed} scenario{'s' if regressed != 1 else ''} regressed"
    else:
        verdict = f"❌ {missing} scenario{'s' if missing != 1 else ''} without the required baseline"
    rules = ", ".join(f"`{rule}`" for rule in args.fail) or "none (`--fail` not given: exact counts only)"
    lines = [f"### pytest-quaero compare: {verdict}", "",
             f"Baseline `{_cell(args.old)}`, new `{_cell(args.new)}`; limits: {rules}.", ""]
    for warning in warnings:
        lines += [f"> ⚠️ {_cell(warning)}", ""]
    for entry in entries:
        mark = {"ok": "✅", "regression": "❌"}.get(entry["status"], "❌" if args.require_baseline else "⚠️")
        lines += [f"#### {mark} {_cell(entry['key'])}: {_cell(entry['summary'])}", ""]
        if not entry["rows"]:
            continue
        lines += ["| Metric | Before | Now | Change | Noise | Limit | Status |",
                  "|---|---:|---:|---:|---:|---|---|"]
        for row in entry["rows"]:
            status = {True: "✅ PASS", False: "❌ FAIL"}.get(row["passed"], _cell(row["status"]))
            lines.append(f"| {_cell(row['metric'])} | {_cell(row['before_text'])} | {_cell(row['now_text'])} | "
                         f"{_cell(row['change'])} | {_cell(row.get('noise') or '-')} | "
                         f"{_cell(row['limit'] or '-')} | {status} |")
        lines.append("")
    return "\n".join(lines)


def _json(entries: list[dict[str, Any]], warnings: list[str], args: argparse.Namespace, code: int) -> str:
    document = {
        "tool": "pytest-quaero compare", "version": version(), "old": args.old, "new": args.new,
        "rules": list(args.fail), "require_baseline": bool(args.require_baseline),
        "passed": code == EXIT_OK, "exit_code": code, "warnings": warnings, "scenarios": entries,
    }
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def _compare(args: argparse.Namespace) -> int:
    try:
        entries, warnings = _entries(args)
    except BaselineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    code = _exit_code(entries, args.require_baseline)
    for warning in warnings:  # on stderr in every format: stdout stays the document
        print(f"warning: {warning}", file=sys.stderr)
    if args.format == "markdown":
        sys.stdout.write(_markdown(entries, warnings, args, code))
    elif args.format == "json":
        sys.stdout.write(_json(entries, warnings, args, code))
    else:
        sys.stdout.write(_text(entries, args))
    return code


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse has printed its usage message (or --version)
        return int(exc.code) if isinstance(exc.code, int) else EXIT_USAGE
    if args.command == "compare":
        return _compare(args)
    parser.print_help(sys.stderr)
    return EXIT_USAGE


def console_main() -> None:
    """The ``pytest-quaero`` console script."""
    sys.exit(main())


if __name__ == "__main__":
    sys.exit(main())
