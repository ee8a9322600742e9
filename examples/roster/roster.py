#!/usr/bin/env python3
"""Hand out every student's problem from a roster CSV, later grade a folder of answers in one call.

    python3 roster.py hand-out roster.csv problems/ --assignment hw3
    python3 roster.py grade roster.csv problems/ answers/ grades.csv

The roster is a CSV file with a header row and an `email` column; other columns (name, section,
…) are kept and copied to the grades. Each email is trimmed and lower-cased before it becomes
the seed "<assignment>:<email>", so " Ada@Example.edu" and "ada@example.edu" are one student
(the Gradescope autograder does the same).

`hand-out` writes problems/<email>.json for each student: the problem to give them (logits,
labels, loss options) and its `problem_id`. `grade` reads answers/<email>.json (a student's
answer, as for /v1/grade) and grades every student who handed one in with one /v1/grade/batch
call per 1000 students (the service's default GRADCHECK_MAX_SUBMISSIONS), each against their
own problem, and writes a CSV: the roster's columns, then score, max_score and message. It then
prints what the class got wrong — per part, how many passed and in how many submissions each
mistake was found ("not_divided  9 of 30  30 %"), and the score distribution — and writes the
same as CSV (part, what, count, submissions, percent) to <grades>-summary.csv, or --summary.

The service's address and key come from --url / --api-key, or GRADCHECK_URL /
GRADCHECK_API_KEY. Standard library only.
"""

import argparse
import csv
import json
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

BATCH = 1000
PROBLEM = {"batch_size": 4, "num_classes": 3, "label_type": "index", "reduction": "mean"}
GRADING = {"points": {"loss": 1, "gradient": 2}, "partial_credit": True, "feedback": "verdict"}


def normalise(email: str) -> str:
    """The email as a seed: trimmed, lower-cased."""
    return email.strip().lower()


def read_roster(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """The header and rows of a roster CSV; every row has a non-empty email."""
    with path.open(newline="", encoding="utf-8-sig") as file:
        reader = csv.DictReader(file)
        header = list(reader.fieldnames or [])
        if "email" not in header:
            sys.exit(f"{path}: the header row has no 'email' column (it has {header})")
        rows = []
        for line, row in enumerate(reader, start=2):
            if not normalise(row.get("email") or ""):
                sys.exit(f"{path}:{line}: no email")
            rows.append(row)
    return header, rows


def post(args: argparse.Namespace, path: str, body: dict) -> dict:
    """POST JSON to the service; exits with the status and detail if it refuses."""
    headers = {"Content-Type": "application/json"}
    if args.api_key:
        headers["X-API-Key"] = args.api_key
    request = urllib.request.Request(
        args.url.rstrip("/") + path, data=json.dumps(body).encode(), headers=headers
    )
    try:
        with urllib.request.urlopen(request, timeout=300) as response:
            return json.load(response)
    except urllib.error.HTTPError as error:
        detail = error.read().decode(errors="replace")[:2000]
        sys.exit(f"{path}: HTTP {error.code}: {detail}")
    except (urllib.error.URLError, OSError) as error:
        sys.exit(f"{path}: the service at {args.url} could not be reached: {error}")


def hand_out(args: argparse.Namespace) -> None:
    _, rows = read_roster(args.roster)
    args.problems.mkdir(parents=True, exist_ok=True)
    for row in rows:
        email = normalise(row["email"])
        problem = post(args, "/v1/problems", {"seed": f"{args.assignment}:{email}", **PROBLEM})
        (args.problems / f"{email}.json").write_text(json.dumps(problem, indent=1))
    print(f"{len(rows)} problems written to {args.problems}/")


def grade(args: argparse.Namespace) -> None:
    header, rows = read_roster(args.roster)
    items, graded_rows, missing = [], [], []
    for row in rows:
        email = normalise(row["email"])
        answer = args.answers / f"{email}.json"
        if not answer.exists():
            missing.append(row)
            continue
        problem = json.loads((args.problems / f"{email}.json").read_text())
        try:
            submission = json.loads(answer.read_text())
        except (ValueError, UnicodeDecodeError) as error:
            submission = f"{answer.name} is not valid JSON: {error}"  # graded as not gradable
        items.append(
            {"problem_id": problem["problem_id"], "submission": submission, "student": email}
        )
        graded_rows.append(row)
    results, summaries = [], []
    for start in range(0, len(items), BATCH):
        body = {"items": items[start : start + BATCH], **GRADING}
        answer = post(args, "/v1/grade/batch", body)
        results += answer["results"]
        summaries.append(answer["summary"])
    with args.grades.open("w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, [*header, "score", "max_score", "message"])
        writer.writeheader()
        for row, result in zip(graded_rows, results, strict=True):
            writer.writerow(
                {
                    **row,
                    "score": result["score"],
                    "max_score": result["max_score"],
                    "message": result["message"],
                }
            )
        for row in missing:
            writer.writerow({**row, "score": 0, "max_score": "", "message": "no answer handed in"})
    print(f"{len(results)} graded, {len(missing)} without an answer: {args.grades}")
    if results:
        report_class(args, summaries, [result["score"] for result in results])


def class_rows(summaries: list[dict]) -> list[dict]:
    """One row per part and count (passed, unreadable, then each mistake's code), summed over
    the batches' summaries."""
    counts: dict[tuple[str, str], int] = {}
    submissions: dict[str, int] = {}
    for summary in summaries:
        for part in summary["parts"]:
            name = part["name"]
            submissions[name] = submissions.get(name, 0) + part["submissions"]
            found = {"passed": part["passed"], "unreadable": part["unreadable"], **part["codes"]}
            for what, count in found.items():
                counts[name, what] = counts.get((name, what), 0) + count
    return [
        {
            "part": name,
            "what": what,
            "count": count,
            "submissions": submissions[name],
            "percent": round(100 * count / submissions[name]),
        }
        for (name, what), count in counts.items()
    ]


def report_class(args: argparse.Namespace, summaries: list[dict], scores: list[float]) -> None:
    """Print what the class got wrong as a table, and write it as CSV."""
    rows = class_rows(summaries)
    print(f"\n{'part':<14}{'':<30}{'submissions':>12}{'%':>6}")
    for row in rows:
        share = f"{row['count']} of {row['submissions']}"
        print(f"{row['part']:<14}{row['what']:<30}{share:>12}{row['percent']:>5} %")
    ordered = sorted(scores)
    middle = len(ordered) // 2
    median = ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2
    print(
        f"scores: mean {sum(scores) / len(scores):.3g}, median {median:.3g}, "
        f"min {ordered[0]:.3g}, max {ordered[-1]:.3g} of {summaries[0]['scores']['max_score']:g}"
    )
    path = args.summary or args.grades.with_name(args.grades.stem + "-summary.csv")
    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, ["part", "what", "count", "submissions", "percent"])
        writer.writeheader()
        writer.writerows(rows)
    print(f"class summary: {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default=os.environ.get("GRADCHECK_URL", "http://localhost:8000"))
    parser.add_argument("--api-key", default=os.environ.get("GRADCHECK_API_KEY", ""))
    commands = parser.add_subparsers(dest="command", required=True)
    out = commands.add_parser("hand-out", help="write every student's problem")
    out.add_argument("roster", type=Path)
    out.add_argument("problems", type=Path)
    out.add_argument(
        "--assignment",
        default="hw3",
        help='first part of every seed: the "assignment" of the Gradescope config.json (hw3)',
    )
    marking = commands.add_parser("grade", help="grade a folder of answers in one call")
    marking.add_argument("roster", type=Path)
    marking.add_argument("problems", type=Path)
    marking.add_argument("answers", type=Path)
    marking.add_argument("grades", type=Path)
    marking.add_argument("--summary", type=Path, help="the class summary CSV to write")
    args = parser.parse_args()
    if args.command == "hand-out":
        hand_out(args)
    else:
        grade(args)


if __name__ == "__main__":
    main()
