#!/usr/bin/env python3
"""PrairieLearn external grader: grade the student's answer.json with the gradcheck service.

Reads the problem id that server.py stored in /grade/data/data.json ("params"), the student's
file from /grade/student/ (a JSON object such as {"loss": 1.02, "gradient": [[...], ...]}), and
writes the service's PrairieLearn result to /grade/results/results.json. If the service cannot
be reached the attempt is reported as not gradable, so it does not cost the student an attempt.

info.json of the question: "externalGradingOptions": {"enabled": true, "image":
"prairielearn/grader-python", "entrypoint": "/grade/serverFilesCourse/gradcheck/grade.py",
"serverFilesCourse": ["gradcheck/"], "enableNetworking": true, "environment":
{"GRADCHECK_URL": "...", "GRADCHECK_API_KEY": "..."}}. Standard library only; PL_GRADE_ROOT
exists so the script can be tried outside PrairieLearn.
"""

import json
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(os.environ.get("PL_GRADE_ROOT", "/grade"))
URL = os.environ.get("GRADCHECK_URL", "https://gradcheck.example.edu").rstrip("/")
GRADING = {
    "points": {"probabilities": 1, "loss": 1, "gradient": 2},
    "partial_credit": True,
    "feedback": "full",
    "format": "prairielearn",
}


def post(path: str, body: dict) -> dict:
    """POST JSON to the service; the parsed JSON answer."""
    headers = {"Content-Type": "application/json"}
    if os.environ.get("GRADCHECK_API_KEY"):
        headers["X-API-Key"] = os.environ["GRADCHECK_API_KEY"]
    request = urllib.request.Request(
        URL + path, data=json.dumps(body).encode(), headers=headers, method="POST"
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.load(response)


def not_gradable(reason: str) -> dict:
    return {"gradable": False, "score": 0.0, "message": reason, "format_errors": [reason]}


def grade() -> dict:
    params = json.loads((ROOT / "data" / "data.json").read_text())["params"]
    files = sorted((ROOT / "student").glob("*.json"))
    if not files:
        return not_gradable("No answer file found: upload answer.json.")
    try:
        submission = json.loads(files[0].read_text())
    except (ValueError, UnicodeDecodeError) as error:
        return not_gradable(f"{files[0].name} is not valid JSON: {error}")
    try:
        return post(
            "/v1/grade", {"problem_id": params["problem_id"], "submission": submission, **GRADING}
        )
    except (urllib.error.URLError, OSError, ValueError) as error:
        print(f"gradcheck service error: {error}", file=sys.stderr)
        return not_gradable(
            "The grading service could not be reached; this attempt was not counted."
        )


if __name__ == "__main__":
    results = ROOT / "results"
    results.mkdir(parents=True, exist_ok=True)  # PrairieLearn does not create it
    (results / "results.json").write_text(json.dumps(grade(), indent=2))
