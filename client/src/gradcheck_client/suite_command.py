"""`gradcheck test package.module:function`: run a function on a suite's cases from the command
line (or CI), print the table and each failure's reproduction, and optionally write JUnit XML.

Exit codes: 0 every applicable case passes, 1 a case fails, 2 no verdict (the function cannot
be imported, the suite file cannot be read, the service is unreachable or refuses).
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

from gradcheck_client.client import Client
from gradcheck_client.suites import FEATURES, SuiteError, SuiteReport

PASS, FAIL = 0, 1


class ImportFailure(Exception):
    """The function to test cannot be imported: the message says why."""


def import_function(target: str) -> Callable[..., Any]:
    """`package.module:function` (or `module:Class.attribute`) imported, the current directory
    first on the path; a class (a torch module, say) is instantiated without arguments."""
    module_name, _, attribute = target.partition(":")
    if not module_name or not attribute:
        raise ImportFailure(f"{target!r}: expected package.module:function")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        found: Any = importlib.import_module(module_name)
    except Exception as error:
        raise ImportFailure(f"cannot import {module_name}: {error!r}") from error
    for part in attribute.split("."):
        try:
            found = getattr(found, part)
        except AttributeError as error:
            raise ImportFailure(f"{target}: {module_name} has no {attribute}") from error
    if inspect.isclass(found):
        found = found()
    if not callable(found):
        raise ImportFailure(f"{target} is not callable")
    return found  # type: ignore[no-any-return]


def parse_options(items: list[str]) -> dict[str, Any]:
    """`name=value` pairs, each value read as JSON where it is JSON (`weight=[1, 2]`,
    `label_smoothing=0.1`), else as text (`reduction=sum`)."""
    options: dict[str, Any] = {}
    for item in items:
        name, equals, text = item.partition("=")
        if not equals:
            raise SuiteError(f"--option {item!r}: expected name=value")
        try:
            options[name.strip()] = json.loads(text)
        except ValueError:
            options[name.strip()] = text
    return options


def junit_xml(report: SuiteReport, seconds: float) -> bytes:
    """The report as JUnit XML: one testcase per case, failures and skipped (not applicable)."""
    suite = ElementTree.Element(
        "testsuite",
        name=f"gradcheck.{report.suite.name}",
        tests=str(len(report.cases)),
        failures=str(len(report.failures)),
        skipped=str(sum(1 for case in report.cases if not case.applicable)),
        time=f"{seconds:.3f}",
    )
    for case in report.cases:
        element = ElementTree.SubElement(
            suite, "testcase", classname=f"gradcheck.{report.suite.name}", name=case.name
        )
        if not case.applicable:
            ElementTree.SubElement(element, "skipped", message=case.message)
        elif not case.passed:
            failure = ElementTree.SubElement(element, "failure", message=case.message)
            failure.text = (case.reproduction or "") + "\n"
    document: bytes = ElementTree.tostring(suite, encoding="utf-8", xml_declaration=True)
    return document


def print_report(report: SuiteReport) -> None:
    """The table, then each failure: why the case is hard, the shrunk problem, the Python."""
    print(report.table())
    for case in report.failures:
        print(f"\n--- {case.name}: {case.reason}")
        print(case.message)
        if case.reproduction:
            print("reproduce with:")
            print(case.reproduction)
    print("\npassed" if report.passed else "\nfailed")


def run_test(args: argparse.Namespace, client: Client) -> int:
    """`gradcheck test`: 0 when every applicable case passes, 1 when one fails."""
    fn = import_function(args.function)
    suite: str | Path = Path(args.suite_file) if args.suite_file else args.suite
    supports = (
        {s.strip() for s in args.supports.split(",") if s.strip()} if args.supports else set()
    )
    if supports - FEATURES:
        raise SuiteError(
            f"--supports: unknown {sorted(supports - FEATURES)}; known {sorted(FEATURES)}"
        )
    started = time.monotonic()
    report = client.test(
        fn,
        suite,
        framework=args.framework,
        supports=supports,
        options=parse_options(args.option or []),
    )
    print_report(report)
    if args.junit_xml:
        Path(args.junit_xml).write_bytes(junit_xml(report, time.monotonic() - started))
    return PASS if report.passed else FAIL


def add_parser(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    parents: list[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    """The `test` subcommand's arguments."""
    parser = commands.add_parser(
        "test",
        parents=parents,
        help="run your function on a suite of hard cases",
        description="Imports package.module:function, runs it on every case of a suite (served "
        "by the service, or a course's --suite-file) and checks its outputs; a failing case is "
        "shrunk to a smallest problem and printed with Python that reproduces it.",
    )
    parser.add_argument("function", help="package.module:function (or a torch module class)")
    parser.add_argument("--suite", default="basics", help="basics (default), torch or kernel")
    parser.add_argument("--suite-file", help="a course's suite: JSON of the service's schema")
    parser.add_argument("--framework", choices=["numpy", "torch"], default="numpy")
    parser.add_argument(
        "--supports", help="input features your function takes: k_dim,no_batch,probability_targets"
    )
    parser.add_argument(
        "--option",
        action="append",
        metavar="NAME=VALUE",
        help="fix an option for every case, e.g. reduction=sum (repeatable)",
    )
    parser.add_argument("--junit-xml", help="also write the report as JUnit XML to this file")
    return parser
