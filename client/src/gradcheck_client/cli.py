"""The `gradcheck` command line: `check` your outputs from scripts and CI, `test` your function on a
suite of hard cases, hand out `problems` to a roster and `grade` a folder of answers.

Exit codes of every command: 0 success (for `check`: every given output passes; for `test`:
every applicable case passes), 1 (`check` and `test` only) an output or a case fails, and
nothing else, 2 no verdict: a usage error, an unreadable file or module, an unreachable service,
a refused request (its detail printed), a 5xx (a 503 still refused after the retries), or any
other error, a bug of this program included.

Each command is an `add_<command>(commands, parents)` that sets its `run(args) -> int`; `parser`
lists them.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn, TextIO, TypeAlias

import numpy as np
import numpy.typing as npt

from gradcheck_client import suite_command, wire
from gradcheck_client.client import DEFAULT_RETRIES, DEFAULT_TIMEOUT, Client
from gradcheck_client.errors import (
    GradcheckError,
    RefusedError,
    TransportError,
    UnavailableError,
)
from gradcheck_client.results import (
    CandidateCheck,
    GradeResult,
    GradingResult,
    OutputCheck,
    PrairieLearnResult,
    Tolerance,
)
from gradcheck_client.suites import SuiteError

PASS, FAIL, NO_VERDICT = 0, 1, 2
CANDIDATE_FILES = ("probabilities", "log_probabilities", "losses", "gradient", "jacobian")
HEAD_FILES = ("input_gradient", "linear_weight_gradient", "linear_bias_gradient")
"""The LM head's own candidate outputs (with --input and --linear-weight)."""

DEFAULT_TOLERANCE: dict[str, tuple[float, float]] = {
    "float64": (1e-12, 1e-10),
    "float32": (1e-8, 1e-5),
    "float16": (1e-6, 1e-2),
    "bfloat16": (1e-5, 5e-2),
}
"""(atol, rtol) the service applies to an output sent in that dtype when the request gives no
tolerance (the least precise output's row for all of them): the service's own
`app.numerics.candidate.DEFAULT_TOLERANCE`, copied for `--help` (a test keeps them equal)."""


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
    """An array from .npy (no pickles; bfloat16 saved from ml_dtypes, descriptor '<V2', read as
    bfloat16 with or without ml_dtypes installed), .json, or a text/CSV file of numbers (all
    integers: an integer array, e.g. class indices)."""
    file = Path(path)
    try:
        if file.suffix == ".npy":
            array = np.asarray(np.load(file, allow_pickle=False))
            return wire.bfloat16(array) if wire.is_bfloat16_bits(array) else array
        if file.suffix == ".json":
            return np.asarray(json.loads(file.read_text()))
        text = np.loadtxt(
            file, dtype=str, delimiter="," if file.suffix == ".csv" else None, ndmin=1
        )
        try:
            return text.astype(np.int64)
        except ValueError:
            return text.astype(np.float64)
    except (OSError, ValueError) as error:
        raise Failure(f"cannot read {path}: {error}") from error


def load_numbers(path: str) -> npt.NDArray[Any]:
    """`load_array`, refusing anything but numbers (strings, objects, records)."""
    array = load_array(path)
    if array.dtype.kind not in "fiub" and not wire.is_float(array):
        raise Failure(f"{path}: an array of {array.dtype}, not of numbers")
    return array


def _numbers(text: str, option: str) -> npt.NDArray[Any]:
    """`1,2,0.5`, or a file of numbers."""
    if Path(text).suffix in {".npy", ".json", ".csv", ".txt"}:
        return load_numbers(text)
    try:
        return np.array([float(x) for x in text.split(",")])
    except ValueError as error:
        raise Failure(f"{option}: expected numbers separated by commas, got {text!r}") from error


def _loss(text: str) -> Any:
    try:
        return float(text)
    except ValueError:
        return load_numbers(text)


def candidate_dtype(value: Any) -> str:
    """The precision a candidate output is sent and checked in (integers go as float64)."""
    array = wire.as_array(value)
    if wire.is_bfloat16_bits(array):
        return "bfloat16"
    return array.dtype.name if array.dtype.name in DEFAULT_TOLERANCE else "float64"


def tolerance_option(
    atol: float | None, rtol: float | None, candidate: dict[str, Any]
) -> dict[str, float] | None:
    """The `tolerance` to send: None (the service applies the table's row of the least precise
    output) unless --atol or --rtol is given; one given alone keeps the other from that row."""
    if atol is None and rtol is None:
        return None
    row = max(
        (DEFAULT_TOLERANCE[candidate_dtype(value)] for value in candidate.values()),
        key=lambda tolerance: tolerance[1],
    )
    return {"atol": row[0] if atol is None else atol, "rtol": row[1] if rtol is None else rtol}


def _short(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3g}"


def print_output(name: str, check: OutputCheck, tolerance: Tolerance, out: TextIO) -> None:
    """One output's verdict in a line, with the tolerance applied, then its worst entries."""
    applied = f"atol {tolerance.atol:g}, rtol {tolerance.rtol:g}"
    if check.defect is not None:
        print(f"{name}: FAIL ({applied}), not read: {check.defect}", file=out)
        return
    verdict = "PASS" if check.passed else "FAIL"
    line = (
        f"{name}: {verdict} ({applied}), {check.checked - check.mismatches} of "
        f"{check.checked} entries within tolerance (max abs error "
        f"{_short(check.max_abs_error)}, max rel error {_short(check.max_rel_error)}, "
        f"max ulp error {_short(check.max_ulp_error)})"
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
        print_output(name, output, check.tolerance, out)
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


def run_head_check(args: argparse.Namespace) -> int:
    """`gradcheck check --input … --linear-weight …`: the LM head fused with its loss
    (/v1/linear-cross-entropy); 0 when every given output passes, 1 when one fails."""
    candidate: dict[str, Any] = {
        name: load_numbers(path)
        for name in (*HEAD_FILES, "losses")
        if (path := getattr(args, name)) is not None
    }
    if args.loss is not None:
        candidate["loss"] = _loss(args.loss)
    if not candidate:
        raise Failure(
            "nothing to check: give at least one of --input-gradient, --linear-weight-gradient, "
            "--linear-bias-gradient, --loss, --losses"
        )
    if args.linear_weight is None or args.labels is None:
        raise Failure("--input needs --linear-weight and --labels")
    options: dict[str, Any] = {
        "linear_bias": None if args.linear_bias is None else load_numbers(args.linear_bias),
        "weight": None if args.weight is None else _numbers(args.weight, "--weight"),
        "ignore_index": args.ignore_index,
        "reduction": args.reduction,
        "label_smoothing": args.label_smoothing,
        "dtype": args.dtype,
        "z_loss": args.z_loss,
        "softcap": args.softcap,
        "causal_shift": args.causal_shift or None,
        "denominator": args.denominator,
        "tolerance": tolerance_option(args.atol, args.rtol, candidate),
    }
    with _client(args) as service:
        result = service.linear_cross_entropy(
            load_numbers(args.input),
            load_numbers(args.linear_weight),
            load_numbers(args.labels),
            candidate=candidate,
            **options,
        )
    check = result.candidate_check
    if check is None:
        raise Failure("the service answered without a candidate_check")
    print_check(check, sys.stdout)
    print("passed" if check.passed else "failed", file=sys.stdout)
    return PASS if check.passed else FAIL


def run_check(args: argparse.Namespace) -> int:
    """`gradcheck check`: 0 when every given output passes, 1 when one fails."""
    if args.input is not None:
        return run_head_check(args)
    if args.logits is None:
        raise Failure("give --logits (or --input and --linear-weight for an LM head)")
    candidate: dict[str, Any] = {
        name: load_numbers(path)
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
    logits = load_numbers(args.logits)
    options: dict[str, Any] = {
        "dtype": args.dtype,
        "tolerance": tolerance_option(args.atol, args.rtol, candidate),
    }
    labels = None
    if args.labels is not None:
        labels = load_numbers(args.labels)
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


def _summary(result: GradingResult) -> str:
    """A result's score in words, in its format's terms."""
    if isinstance(result, GradeResult):
        return f"{result.score:g} of {result.max_score:g}"
    if isinstance(result, PrairieLearnResult):  # the score is a fraction
        return f"{result.score:.0%}" + ("" if result.gradable else " (not gradable)")
    return f"{result.score:g} of {sum(test.max_score for test in result.tests):g}"


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
        results = service.grade_batch(items=items, **options)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for key, result in zip(keys, results, strict=True):
        (out / f"{key}.json").write_text(json.dumps(result.raw, indent=1) + "\n")
        print(f"{key}: {_summary(result)}")
    print(f"{len(results)} answers graded, results in {out}")
    for part in results.summary.parts:
        found = ", ".join(f"{code} in {count}" for code, count in part.codes.items())
        print(
            f"{part.name}: {part.passed} of {part.submissions} passed"
            + (f"; {found}" if found else "")
        )
    return NO_VERDICT if missing else PASS


def _tolerance_help() -> str:
    rows = "\n".join(
        f"  {dtype:<9} {atol:<6g} {rtol:g}" for dtype, (atol, rtol) in DEFAULT_TOLERANCE.items()
    )
    return (
        "tolerance: an entry passes where |got - expected| <= atol + rtol*|expected|. Without\n"
        "--atol/--rtol the service applies the row of the least precise output you send (each\n"
        ".npy file is sent in its own dtype; integers, .json and .csv files as float64):\n\n"
        f"  dtype     atol   rtol\n{rows}\n\n"
        "--atol or --rtol alone keeps the other from that row. Every PASS/FAIL line prints the\n"
        "tolerance applied."
    )


def _common_options() -> argparse.ArgumentParser:
    """--url, --api-key, --timeout, --retries: every command talks to the service."""
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
    return common


def _loss_options() -> argparse.ArgumentParser:
    """The loss options of F.cross_entropy."""
    loss = argparse.ArgumentParser(add_help=False)
    loss.add_argument("--weight", help="class weights: 1,2,0.5 or a .npy file")
    loss.add_argument("--ignore-index", type=int, default=None)
    loss.add_argument("--reduction", choices=["mean", "sum", "none"], default=None)
    loss.add_argument("--label-smoothing", type=float, default=None)
    return loss


Commands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def add_check(commands: Commands, parents: list[argparse.ArgumentParser]) -> None:
    """`gradcheck check`."""
    check = commands.add_parser(
        "check",
        parents=parents,
        help="check your outputs (.npy files) and name the mistake",
        description="Send your outputs with the problem's logits and labels; prints a verdict "
        "per output and the diagnoses. Without --labels the outputs are softmax's.",
        epilog=_tolerance_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    check.add_argument("--logits", help="logits z (.npy, .json or .csv)")
    check.add_argument(
        "--input",
        help="hidden states x of an LM head (.npy): checked with --linear-weight through "
        "/v1/linear-cross-entropy instead of logits",
    )
    check.add_argument("--linear-weight", help="the head W (C, d) (.npy)")
    check.add_argument("--linear-bias", help="the head's bias b (C,) (.npy)")
    check.add_argument(
        "--causal-shift", action="store_true", help="position t predicts label t + 1 (HF)"
    )
    check.add_argument("--denominator", type=float, help="the mean's divisor (num_items_in_batch)")
    for name in HEAD_FILES:
        check.add_argument(f"--{name.replace('_', '-')}", dest=name, help=f"your {name} (.npy)")
    check.add_argument(
        "--labels",
        help="class indices or target rows (.npy, .json, or .csv/.txt: all integers are "
        "class indices)",
    )
    for name in CANDIDATE_FILES:
        check.add_argument(f"--{name.replace('_', '-')}", dest=name, help=f"your {name} (.npy)")
    check.add_argument("--loss", help="your loss: a number, or a file of N losses")
    check.add_argument(
        "--dtype",
        choices=["float64", "float32"],
        default="float64",
        help="the precision the service computes in (your outputs are always compared with the "
        "exact float64 reference)",
    )
    check.add_argument("--atol", type=float, help="absolute tolerance (default: the table below)")
    check.add_argument("--rtol", type=float, help="relative tolerance (default: the table below)")
    check.add_argument("--z-loss", type=float, help="z-loss coefficient")
    check.add_argument("--softcap", type=float, help="logit soft-capping")
    check.set_defaults(run=run_check, ignore_index=-100, reduction="mean", label_smoothing=0.0)


def add_problems(commands: Commands, parents: list[argparse.ArgumentParser]) -> None:
    """`gradcheck problems`."""
    problems = commands.add_parser(
        "problems",
        parents=parents,
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


def add_grade(commands: Commands, parents: list[argparse.ArgumentParser]) -> None:
    """`gradcheck grade`."""
    grade = commands.add_parser(
        "grade",
        parents=parents,
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


def parser() -> argparse.ArgumentParser:
    """The command line: one `add_<command>` per subcommand, each setting its `run`."""
    common, loss = _common_options(), _loss_options()
    root = argparse.ArgumentParser(
        prog="gradcheck",
        description="Check softmax / cross-entropy outputs against the gradcheck service.",
        epilog="Exit codes: 0 success (check: every given output passes; test: every applicable "
        "case passes), 1 an output or a case fails (and nothing else), 2 no verdict (usage "
        "error, unreadable file, service unreachable or refusing, any other error).",
    )
    commands = root.add_subparsers(dest="command", required=True)
    add_check(commands, [common, loss])
    add_problems(commands, [common, loss])
    add_grade(commands, [common])
    add_test(commands, [common])
    return root


def add_test(commands: Commands, parents: list[argparse.ArgumentParser]) -> None:
    """`gradcheck test` (its arguments and work in `gradcheck_client.suite_command`)."""
    suite_command.add_parser(commands, parents).set_defaults(run=run_test)


def run_test(args: argparse.Namespace) -> int:
    """`gradcheck test`: 0 when every applicable case passes, 1 when one fails."""
    with _client(args) as service:
        try:
            return suite_command.run_test(args, service)
        except (suite_command.ImportFailure, SuiteError, ImportError) as error:
            raise Failure(str(error)) from error


def _fail(message: str) -> NoReturn:
    print(f"gradcheck: {message}", file=sys.stderr)
    raise SystemExit(NO_VERDICT)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code. 1 only ever means an output fails: every
    error, unexpected ones included, exits with 2 (argparse's usage errors too)."""
    args = parser().parse_args(argv)
    try:
        code: int = args.run(args)
    except Failure as error:
        _fail(str(error))
    except RefusedError as error:
        _fail(f"the service refused the request: {error}")
    except UnavailableError as error:
        busy = f"; still busy after {args.retries} retries, try again later"
        _fail(f"the service is unavailable: {error}{busy if error.status == 503 else ''}")
    except TransportError as error:
        _fail(f"cannot reach the service: {error}")
    except GradcheckError as error:
        _fail(f"unexpected answer from the service: {error}")
    except Exception:  # a crash must not exit 1, which means "an output fails"
        traceback.print_exc()
        _fail("internal error (the traceback is above); no verdict")
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
