#!/usr/bin/env python3
"""PrairieLearn external grader: grade the student's answer.json with the gradcheck service.

Copy this file and config.json (the service's address, the course's API key and the grading
options) to serverFilesCourse/gradcheck/ of the course; info.json runs it in
prairielearn/grader-python with networking enabled. It reads the problem id that server.py
stored in /grade/data/data.json ("params") and the student's file from /grade/student/, and
writes the service's PrairieLearn result to /grade/results/results.json.

When the service cannot be reached or fails (5xx), the attempt is not gradable, so it costs
the student nothing, and the student is asked to resubmit. When it refuses the request (4xx: a
wrong API key, an id from another deployment), the student is told the question is
misconfigured, and the status and `detail` are printed on stderr for the instructor. Standard
library only; PL_GRADE_ROOT exists so the script can be tried outside PrairieLearn.
"""

import json
import os
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(os.environ.get("PL_GRADE_ROOT", "/grade"))
CONFIG = ROOT / "serverFilesCourse" / "gradcheck" / "config.json"
RETRY = "The grading service could not be reached; this attempt was not counted. Please resubmit."
MISCONFIGURED = (
    "This question's autograder is misconfigured (the grading service refused its request); "
    "this attempt was not counted. This is not your mistake: please tell your instructor."
)


class Unreachable(Exception):
    """The service could not be reached, or failed (5xx): worth a retry."""


class Refused(Exception):
    """The service refused the request (4xx): the course's configuration is wrong."""


def post(config: dict, path: str, body: dict) -> dict:
    """POST JSON to the service; the parsed answer. Retries twice when it is unreachable."""
    headers = {"Content-Type": "application/json"}
    if config.get("api_key"):
        headers["X-API-Key"] = config["api_key"]
    url = config["url"].rstrip("/") + path
    for attempt in range(3):
        request = urllib.request.Request(
            url, data=json.dumps(body).encode(), headers=headers, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return json.load(response)
        except urllib.error.HTTPError as error:
            detail = error.read().decode(errors="replace")[:2000]
            if error.code < 500 and error.code != 429:
                raise Refused(f"{path}: HTTP {error.code}: {detail}") from None
            failure = f"{path}: HTTP {error.code}: {detail}"
        except (urllib.error.URLError, OSError, ValueError) as error:
            failure = f"{path}: {error}"
        if attempt < 2:
            time.sleep(attempt + 1)
    raise Unreachable(failure)


def not_gradable(reason: str) -> dict:
    return {"gradable": False, "score": 0.0, "message": reason, "format_errors": [reason]}


def grade() -> dict:
    config = json.loads(CONFIG.read_text())
    params = json.loads((ROOT / "data" / "data.json").read_text())["params"]
    files = sorted((ROOT / "student").glob("*.json"))
    if not files:
        return not_gradable("No answer file found: upload answer.json.")
    try:
        submission = json.loads(files[0].read_text())
    except (ValueError, UnicodeDecodeError) as error:
        return not_gradable(f"{files[0].name} is not valid JSON: {error}")
    body = {"problem_id": params["problem_id"], "submission": submission, **config["grading"]}
    try:
        return post(config, "/v1/grade", {**body, "format": "prairielearn"})
    except Refused as error:
        print(f"gradcheck refused the request, check config.json: {error}", file=sys.stderr)
        return not_gradable(MISCONFIGURED)
    except Unreachable as error:
        print(f"gradcheck service error: {error}", file=sys.stderr)
        return not_gradable(RETRY)


if __name__ == "__main__":
    results = ROOT / "results"
    results.mkdir(parents=True, exist_ok=True)  # PrairieLearn does not create it
    (results / "results.json").write_text(json.dumps(grade(), indent=2))
