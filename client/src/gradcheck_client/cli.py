"""The `gradcheck` command line: `check` your outputs from scripts and CI, `test` your function on a
suite of hard cases, hand out `problems` to a roster and `grade` a folder of answers.

Exit codes of every command: 0 success (for `check`: every given output passes; for `test`:
every applicable case passes), 1 (`check` and `test` only) an output or a case fails, 2 no
verdict: a usage error, an unreadable file or module, an unreachable service, a refused request
(its detail printed) or a 503 still refused after the retries.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn, TextIO

import httpx
import numpy as np
import numpy.typing as npt

from gradcheck_client import suite_command
from gradcheck_client.client import DEFAULT_RETRIES, DEFAULT_TIMEOUT, Client
from gradcheck_client.errors import GradcheckError
from gradcheck_client.results import CandidateCheck, OutputCheck
from gradcheck_client.suites import SuiteError

PASS, FAIL, NO_VERDICT = 0, 1, 2
CANDIDATE_FILES = ("probabilities", "log_probabilities", "losses", "gradient", "jacobian")


class Failure(Exception):
    """No verdict: the message is printed and the exit code is 2."""


def normalise_email(email: str) -> str:
    """An email as it becomes a seed: surrounding whitespace removed, lower-cased."""
    return email.strip().lower()


def seed_of(assignment: str, email: str) -> str:
    """The seed of a student's problem: "<assignment>:<normalised email>"."""
    return f"{assignment}:{normalise_email(email)}"


def file_key(email: str) -> str:
    """A student's file name (without .json): the normalised email, path characters replaced."""
    return re.sub(r"[^A-Za-z0-9@._+-]", "_", normalise_email(email))


def read_roster(path: Path) -> list[dict[str, str]]:
    """The roster's rows (a header row with an `email` column; other columns kept), emails
    normalised; rows without an email are left out, repeated emails kept once."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as file:
            reader = csv.DictReader(file)
            columns = [c.strip().lower() for c in reader.fieldnames or ()]
            if "email" not in columns:
                raise Failure(f"{path}: the header row has no `email` column")
            rows: dict[str, dict[str, str]] = {}
            for raw in reader:
                row = {
                    (k or "").strip().lower(): (v or "").strip()
                    for k, v in raw.items()
                    if isinstance(v, str)
                }
                email = normalise_email(row.get("email", ""))
                if email:
                    rows.setdefault(email, {**row, "email": email})
    except OSError as error:
        raise Failure(f"cannot read the roster: {error}") from error
    return list(rows.values())


def load_array(path: str) -> npt.NDArray[Any]:
    """An array from .npy (no pickles), .json or a text/CSV file of numbers."""
    file = Path(path)
    try:
        if file.suffix == ".npy":
            return np.asarray(np.load(file, allow_pickle=False))
        if file.suffix == ".json":
            return np.asarray(json.loads(file.read_text()))
        return np.loadtxt(file, delimiter="," if file.suffix == ".csv" else None, ndmin=1)
    except (OSError, ValueError) as error:
        raise Failure(f"cannot read {path}: {error}") from error


def _numbers(text: str, option: str) -> npt.NDArray[Any]:
    """`1,2,0.5`, or a file of numbers."""
    if Path(text).suffix in {".npy", ".json", ".csv", ".txt"}:
        return load_array(text)
    try:
        return np.array([float(x) for x in text.split(",")])
    except ValueError as error:
        raise Failure(f"{option}: expected numbers separated by commas, got {text!r}") from error


def _loss(text: str) -> Any:
    try:
        return float(text)
    except ValueError:
        return load_array(text)


def _short(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3g}"


def print_output(name: str, check: OutputCheck, out: TextIO) -> None:
    """One output's verdict in a line, then its worst entries."""
    if check.defect is not None:
        print(f"{name}: FAIL, not read: {check.defect}", file=out)
        return
    verdict = "PASS" if check.passed else "FAIL"
    line = (
        f"{name}: {verdict}, {check.checked - check.mismatches} of {check.checked} entries "
        f"within tolerance (max abs error {_short(check.max_abs_error)}, "
        f"max rel error {_short(check.max_rel_error)})"
    )
    if check.nonfinite:
        line += f", {check.nonfinite} not finite"
    print(line, file=out)
    for entry in check.worst[:3]:
        index = ", ".join(str(i) for i in entry.index)
        print(f"  at [{index}]: expected {entry.expected:.6g}, got {entry.got:.6g}", file=out)


def print_check(check: CandidateCheck, out: TextIO) -> None:
    """Every output's verdict, the diagnoses (most likely first) and the notes."""
    for name, output in check.outputs.items():
        print_output(name, output, out)
    for diagnosis in check.diagnoses:
        print(f"diagnosis {diagnosis.code} ({diagnosis.output}): {diagnosis.message}", file=out)
        if diagnosis.evidence:
            print(f"  evidence: {diagnosis.evidence}", file=out)
        if diagnosis.indistinguishable_from:
            others = ", ".join(diagnosis.indistinguishable_from)
            print(f"  indistinguishable here from: {others}", file=out)
    for note in check.notes:
        print(f"note: {note}", file=out)


def _client(args: argparse.Namespace) -> Client:
    if not args.url:
        raise Failure("no service address: give --url or set GRADCHECK_URL")
    return Client(
        args.url, api_key=args.api_key or None, timeout=args.timeout, retries=args.retries
    )


def run_check(args: argparse.Namespace) -> int:
    """`gradcheck check`: 0 when every given output passes, 1 when one fails."""
    candidate: dict[str, Any] = {
        name: load_array(path)
        for name in CANDIDATE_FILES
        if (path := getattr(args, name)) is not None
    }
    if args.loss is not None:
        candidate["loss"] = _loss(args.loss)
    if not candidate:
        raise Failure(
            "nothing to check: give at least one of --gradient, --probabilities, "
            "--log-probabilities, --jacobian, --loss, --losses"
        )
    logits = load_array(args.logits)
    options: dict[str, Any] = {"dtype": args.dtype}
    if args.atol is not None or args.rtol is not None:
        options["tolerance"] = {
            "atol": 1e-5 if args.atol is None else args.atol,
            "rtol": 1e-3 if args.rtol is None else args.rtol,
        }
    labels = None
    if args.labels is not None:
        labels = load_array(args.labels)
        options.update(
            ignore_index=args.ignore_index,
            reduction=args.reduction,
            label_smoothing=args.label_smoothing,
        )
        if args.weight is not None:
            options["weight"] = _numbers(args.weight, "--weight")
        if args.z_loss is not None:
            options["z_loss"] = args.z_loss
        if args.softcap is not None:
            options["softcap"] = args.softcap
    with _client(args) as service:
        check = service.check(logits, labels, candidate=candidate, **options)
    print_check(check, sys.stdout)
    print("passed" if check.passed else "failed", file=sys.stdout)
    return PASS if check.passed else FAIL


def _problem_options(args: argparse.Namespace) -> dict[str, Any]:
    options: dict[str, Any] = {
        "batch_size": args.batch_size,
        "num_classes": args.num_classes,
        "label_type": args.label_type,
        "logit_scale": args.logit_scale,
        "ignore_index": args.ignore_index,
        "reduction": args.reduction,
        "label_smoothing": args.label_smoothing,
        "dtype": args.dtype,
    }
    if args.weight is not None:
        options["weight"] = _numbers(args.weight, "--weight")
    return options


def run_problems(args: argparse.Namespace) -> int:
    """`gradcheck problems`: one problem per roster row, as `<out>/<email>.json`."""
    rows = read_roster(Path(args.roster))
    if not rows:
        raise Failure(f"{args.roster}: no row has an email")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    options = _problem_options(args)
    with _client(args) as service:
        for row in rows:
            seed = seed_of(args.assignment, row["email"])
            problem = service.problems(seed, **options)
            document = {"student": row["email"], "roster": row, "seed": seed, **problem.raw}
            path = out / f"{file_key(row['email'])}.json"
            path.write_text(json.dumps(document, indent=1) + "\n")
            print(f"{row['email']}: {path}")
    print(f"{len(rows)} problems written to {out}")
    return PASS


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise Failure(f"cannot read {path}: {error}") from error


def _summary(result: dict[str, Any]) -> str:
    score = result.get("score")
    if "max_score" in result:
        return f"{score:g} of {result['max_score']:g}"
    if "gradable" in result:  # prairielearn: score is a fraction
        return f"{score:.0%}" + ("" if result["gradable"] else " (not gradable)")
    total = sum(float(t.get("max_score", 0)) for t in result.get("tests") or ())
    return f"{score:g} of {total:g}"


def _items_missing(error: GradcheckError) -> bool:
    """A 422 that refuses `items` itself: a service without roster batches."""
    return (
        error.status == 422
        and any(
            "items" in item.loc and item.type in {"extra_forbidden", "missing"}
            for item in error.errors
        )
        and not any(
            item.loc[:2] == ("body", "items") and len(item.loc) > 2 for item in error.errors
        )
    )


def run_grade(args: argparse.Namespace) -> int:
    """`gradcheck grade`: every `<answers>/<student>.json` against `<problems>/<student>.json`,
    in one batch call; results written to `<out>/<student>.json` in the chosen format."""
    answers_dir, problems_dir = Path(args.answers), Path(args.problems)
    if not answers_dir.is_dir():
        raise Failure(f"--answers {answers_dir}: not a directory")
    if not problems_dir.is_dir():
        raise Failure(f"--problems {problems_dir}: not a directory (see `gradcheck problems`)")
    keys, items, missing = [], [], []
    for answer in sorted(answers_dir.glob("*.json")):
        problem_file = problems_dir / answer.name
        if not problem_file.is_file():
            missing.append(answer.stem)
            continue
        problem = _read_json(problem_file)
        if not isinstance(problem, dict) or "problem_id" not in problem:
            raise Failure(f"{problem_file}: no problem_id")
        keys.append(answer.stem)
        items.append(
            {
                "problem_id": problem["problem_id"],
                "submission": _read_json(answer),
                "student": problem.get("student", answer.stem),
            }
        )
    for key in missing:
        print(f"{key}: no problem in {problems_dir}, not graded", file=sys.stderr)
    if not items:
        raise Failure(f"{answers_dir}: no answer with a problem to grade")
    options: dict[str, Any] = {"format": args.format}
    if args.feedback:
        options["feedback"] = args.feedback
    if args.partial_credit:
        options["partial_credit"] = True
    with _client(args) as service:
        try:
            results = service.grade_batch(items=items, **options)
        except GradcheckError as error:
            if not _items_missing(error):
                raise
            # a service without roster batches: one call per student
            results = [
                service.grade(item["submission"], problem_id=item["problem_id"], **options)
                for item in items
            ]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for key, result in zip(keys, results, strict=True):
        (out / f"{key}.json").write_text(json.dumps(result, indent=1) + "\n")
        print(f"{key}: {_summary(result)}")
    print(f"{len(results)} answers graded, results in {out}")
    return NO_VERDICT if missing else PASS


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--url",
        default=os.environ.get("GRADCHECK_URL"),
        help="the service's address (default: $GRADCHECK_URL)",
    )
    common.add_argument(
        "--api-key",
        default=os.environ.get("GRADCHECK_API_KEY"),
        help="sent as X-API-Key (default: $GRADCHECK_API_KEY)",
    )
    common.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds")
    common.add_argument(
        "--retries",
        type=int,
        default=DEFAULT_RETRIES,
        help="retries of a 503, each after its Retry-After (default 3)",
    )
    loss = argparse.ArgumentParser(add_help=False)
    loss.add_argument("--weight", help="class weights: 1,2,0.5 or a .npy file")
    loss.add_argument("--ignore-index", type=int, default=None)
    loss.add_argument("--reduction", choices=["mean", "sum", "none"], default=None)
    loss.add_argument("--label-smoothing", type=float, default=None)

    parser = argparse.ArgumentParser(
        prog="gradcheck",
        description="Check softmax / cross-entropy outputs against the gradcheck service.",
        epilog="Exit codes: 0 success (check: every given output passes), 1 an output fails, "
        "2 no verdict (usage error, unreadable file, service unreachable or refusing).",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    check = commands.add_parser(
        "check",
        parents=[common, loss],
        help="check your outputs (.npy files) and name the mistake",
        description="Send your outputs with the problem's logits and labels; prints a verdict "
        "per output and the diagnoses. Without --labels the outputs are softmax's.",
    )
    check.add_argument("--logits", required=True, help="logits z (.npy, .json or .csv)")
    check.add_argument("--labels", help="class indices or target rows (.npy, .json or .csv)")
    for name in CANDIDATE_FILES:
        check.add_argument(f"--{name.replace('_', '-')}", dest=name, help=f"your {name} (.npy)")
    check.add_argument("--loss", help="your loss: a number, or a file of N losses")
    check.add_argument("--dtype", choices=["float64", "float32"], default="float64")
    check.add_argument("--atol", type=float, help="absolute tolerance (default 1e-5)")
    check.add_argument("--rtol", type=float, help="relative tolerance (default 1e-3)")
    check.add_argument("--z-loss", type=float, help="z-loss coefficient")
    check.add_argument("--softcap", type=float, help="logit soft-capping")
    check.set_defaults(run=run_check, ignore_index=-100, reduction="mean", label_smoothing=0.0)

    problems = commands.add_parser(
        "problems",
        parents=[common, loss],
        help="one seeded problem per student of a roster",
        description="Reads a roster CSV (a header row with an `email` column; other columns "
        "kept) and writes <out>/<email>.json per student: the problem of the seed "
        '"<assignment>:<email>", the email trimmed and lower-cased.',
    )
    problems.add_argument("--roster", required=True, help="roster CSV")
    problems.add_argument("--out", required=True, help="folder for the problems")
    problems.add_argument("--assignment", required=True, help="e.g. hw3 (part of every seed)")
    problems.add_argument("--batch-size", type=int)
    problems.add_argument("--num-classes", type=int)
    problems.add_argument("--label-type", choices=["index", "probabilities"])
    problems.add_argument("--logit-scale", type=float)
    problems.add_argument("--dtype", choices=["float64", "float32"])
    problems.set_defaults(run=run_problems)

    grade = commands.add_parser(
        "grade",
        parents=[common],
        help="grade a folder of answers in one call",
        description="Grades every <answers>/<email>.json against <problems>/<email>.json "
        "(written by `gradcheck problems`) and writes <out>/<email>.json in the chosen format.",
    )
    grade.add_argument("--answers", required=True, help="folder of <email>.json answers")
    grade.add_argument("--problems", default="problems", help="folder of problems (problems/)")
    grade.add_argument("--out", default="results", help="folder for the results (results/)")
    grade.add_argument(
        "--format", choices=["native", "gradescope", "prairielearn"], default="native"
    )
    grade.add_argument("--feedback", help="feedback level (the service's default if omitted)")
    grade.add_argument("--partial-credit", action="store_true")
    grade.set_defaults(run=run_grade)
    suite_command.add_parser(commands, common).set_defaults(run=run_test)
    return parser


def run_test(args: argparse.Namespace) -> int:
    """`gradcheck test` (`gradcheck_client.suite_command`): 0 when every applicable case
    passes, 1 when one fails."""
    with _client(args) as service:
        try:
            return suite_command.run_test(args, service)
        except (suite_command.ImportFailure, SuiteError, ImportError) as error:
            raise Failure(str(error)) from error


def _fail(message: str) -> NoReturn:
    print(f"gradcheck: {message}", file=sys.stderr)
    raise SystemExit(NO_VERDICT)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (argparse's usage errors exit with 2)."""
    args = _parser().parse_args(argv)
    try:
        code: int = args.run(args)
    except Failure as error:
        _fail(str(error))
    except GradcheckError as error:
        lines = [f"the service refused the request: {error}"]
        if error.status == 503:
            lines.append(f"still busy after {args.retries} retries; try again later")
        _fail("\n".join(lines))
    except httpx.HTTPError as error:
        _fail(f"cannot reach the service: {error}")
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
