"""``python -m pytest_quaero compare OLD.json NEW.json --fail=throughput:10%,p95:25%``.

Compares two results documents (``--quaero-json`` output or a baseline store) outside
pytest, for CI scripts. Results are matched by scenario key (name and shape); when a
file holds several machines' baselines, the one recorded on NEW's machine is used.

Exit codes: 0 no regression; 1 a metric regressed beyond its limit (or, with
``--require-baseline``, a scenario of NEW has no baseline in OLD); 2 bad usage or a
file that cannot be read. Errors are one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

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


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pytest_quaero",
        description="pytest-quaero tools outside pytest.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    compare = commands.add_parser(
        "compare", help="compare NEW results with OLD (the baseline); exit 1 on a regression",
        description="Compare the scenario results in NEW.json with those in OLD.json (the baseline). "
        "Exit 0: no regression; 1: regression (or missing baseline with --require-baseline); 2: usage error.",
    )
    compare.add_argument("old", metavar="OLD.json", help="the baseline: a results document or baseline store")
    compare.add_argument("new", metavar="NEW.json", help="the results to judge")
    compare.add_argument(
        "--fail", action="append", default=[], metavar="EXPR[,EXPR]",
        help="limits such as throughput:10%%,p95:25%%,execution_time:20%%,retries:+50 (repeatable); "
        "without any, the table is shown and nothing fails",
    )
    compare.add_argument("--require-baseline", action="store_true",
                         help="fail when a scenario of NEW has no result in OLD")
    compare.add_argument("--scenario", action="append", default=[], metavar="NAME",
                         help="only this scenario (repeatable)")
    return parser


def _compare(args: argparse.Namespace) -> int:
    try:
        rules = parse_rules(args.fail, option="--fail")
        old_doc, old_results = load_results(args.old)
        new_doc, new_results = load_results(args.new)
    except BaselineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.scenario:
        new_results = [r for r in new_results if r.scenario in args.scenario]
        if not new_results:
            print(f"error: {args.new} has no result of scenario {', '.join(args.scenario)}", file=sys.stderr)
            return EXIT_USAGE
    if not new_results:
        print(f"error: {args.new} holds no results", file=sys.stderr)
        return EXIT_USAGE
    regressed = missing = 0
    for new in new_results:
        key = scenario_key(new)
        machine = document_fingerprint(new_doc, new)
        candidates = [(document_fingerprint(old_doc, old), old) for old in old_results if scenario_key(old) == key]
        same_machine = [old for fp, old in candidates if fp == machine]
        if same_machine:
            old = same_machine[-1]
        elif candidates:
            old_machine, old = candidates[-1]
            print(f"warning: {key}: the baseline was recorded on {old_machine}, NEW on {machine}; "
                  "comparing anyway", file=sys.stderr)
        else:
            missing += 1
            print(f"{key}: no baseline in {args.old}" + (" (required)" if args.require_baseline else ""))
            continue
        result = compare(old, new, rules)
        for warning in result.warnings:
            print(f"warning: {warning}", file=sys.stderr)
        status = "REGRESSION" if result.regressed else "ok"
        print(f"{key}: {status} - {result.summary()}")
        for line in format_table(result.rows):
            print("  " + line)
        regressed += result.regressed
    if regressed or (missing and args.require_baseline):
        return EXIT_REGRESSION
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse has printed its usage message
        return int(exc.code) if isinstance(exc.code, int) else EXIT_USAGE
    if args.command == "compare":
        return _compare(args)
    parser.print_help(sys.stderr)
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
