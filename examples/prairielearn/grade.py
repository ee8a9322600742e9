#!/usr/bin/env python3
"""PrairieLearn external grader: grade the student's answer.json with the gradcheck service.

Copy this file and config.json (the service's address, the course's API key and the grading
options) to serverFilesCourse/gradcheck/ of the course; info.json runs it in
prairielearn/grader-python with networking enabled. It reads the problem id that server.py
stored in /grade/data/data.json ("params") and the student's file from /grade/student/, and
writes the service's PrairieLearn result to /grade/results/results.json.

    python3 grade.py --check-config [config.json]

checks a config.json before it is synced to the course: its shape always, its values against
the service when the service answers (only a warning when it does not); exit 1 with what to fix
when it is wrong. server.py reads config.json with this file's read_config too.

When the service cannot be reached or fails (5xx), the attempt is not gradable, so it costs
the student nothing, and the student is asked to resubmit. When config.json is wrong or the
service refuses the request (4xx: a wrong API key, an id from another deployment), the attempt
is not gradable either: the student is told the question is misconfigured and that it is not
their mistake, and what to fix is printed on stderr for the instructor. Standard library only;
PL_GRADE_ROOT exists so the script can be tried outside PrairieLearn.
"""

import difflib
import json
import os
import sys
import time
import traceback
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(os.environ.get("PL_GRADE_ROOT", "/grade"))
CONFIG = ROOT / "serverFilesCourse" / "gradcheck" / "config.json"
RETRY = "The grading service could not be reached; this attempt was not counted. Please resubmit."
MISCONFIGURED = (
    "This question's autograder is misconfigured; this attempt was not counted. "
    "This is not your mistake: please tell your instructor."
)
# config.json's keys: their JSON type, whether they are required, and what they hold
KEYS = {
    "url": (str, True, 'the service\'s address, e.g. "https://gradcheck.example.edu"'),
    "api_key": (str, False, "the course's API key (leave it out if the service is open)"),
    "grading": (dict, True, 'the options of /v1/grade, e.g. {"points": {"loss": 1}}'),
}
# the options "grading" may hold; the grader sets problem_id, submission and format itself
GRADING = ("points", "tolerance", "partial_credit", "feedback", "visibility", "reveal_expected")
SET_HERE = ("problem_id", "problem", "submission", "format")
JSON_TYPES = {
    dict: "an object",
    list: "an array",
    str: "a string",
    bool: "true or false",
    int: "a number",
    float: "a number",
    type(None): "null",
}


class ConfigError(Exception):
    """config.json is wrong; the message says what to fix."""


class Unreachable(Exception):
    """The service could not be reached, or failed (5xx): worth a retry."""


class Refused(Exception):
    """The service refused the request (4xx): the message says what to fix."""


def unknown(section: str, key: str, known: tuple[str, ...]) -> str:
    """A key that is not one of `known`, with the closest one or the list."""
    close = difflib.get_close_matches(key, known, n=1)
    hint = f'did you mean "{close[0]}"?' if close else f"the keys are {', '.join(known)}"
    return f'unknown key "{".".join(filter(None, [section, key]))}" ({hint})'


def read_config(path: Path = CONFIG) -> dict:
    """config.json, checked for its shape; ConfigError says what to fix."""
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigError(f"{path} cannot be read ({error.strerror})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not UTF-8 text") from None
    except ValueError as error:
        raise ConfigError(
            f"{path} is not valid JSON: {error.msg} at line {error.lineno}, column "
            f"{error.colno} (a trailing comma, or a missing comma or quote?)"
        ) from None
    if not isinstance(config, dict):
        raise ConfigError(f"{path} must hold a JSON object, not {JSON_TYPES[type(config)]}")
    mistakes = [unknown("", key, tuple(KEYS)) for key in config if key not in KEYS]
    for key, (kind, required, meaning) in KEYS.items():
        if key not in config:
            if required:
                mistakes.append(f'"{key}" is missing: {meaning}')
        elif type(config[key]) is not kind:
            found = JSON_TYPES[type(config[key])]
            mistakes.append(f'"{key}" must be {JSON_TYPES[kind]}, not {found}: {meaning}')
    url = config.get("url")
    if isinstance(url, str) and not url.startswith(("http://", "https://")):
        mistakes.append(f'"url" must start with http:// or https:// (it is "{url}")')
    for key in config["grading"] if isinstance(config.get("grading"), dict) else ():
        if key in SET_HERE:
            mistakes.append(f'"grading" must not set "{key}": the grader sets it')
        elif key not in GRADING:
            mistakes.append(unknown("grading", key, GRADING))
    if mistakes:
        raise ConfigError(f"{path}: " + "; ".join(mistakes))
    return config


def what_to_fix(path: str, status: int, detail: object) -> str:
    """The service's refusal of `path` as what to change in config.json."""
    if status == 401:
        return '"api_key" is not accepted by the service (HTTP 401): use the course\'s key'
    if status == 404:
        return f'"url" is not the service\'s address: it has no {path} (HTTP 404)'
    if status == 422 and isinstance(detail, dict) and isinstance(detail.get("detail"), list):
        fields = []
        for error in detail["detail"]:
            where = [str(part) for part in error.get("loc", [])[1:]]
            if where[:1] and where[0] in GRADING:
                where.insert(0, "grading")  # an option of config.json
            fields.append(f'"{".".join(where)}": {error.get("msg")}')
        return f"the service refused {path} (HTTP 422): " + "; ".join(fields)
    return f"the service refused {path} (HTTP {status}): {json.dumps(detail)[:2000]}"


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
            text = error.read().decode(errors="replace")
            if error.code < 500 and error.code != 429:
                try:
                    detail: object = json.loads(text)
                except ValueError:
                    detail = text[:2000]
                raise Refused(what_to_fix(path, error.code, detail)) from None
            failure = f"{url}: HTTP {error.code}: {text[:2000]}"
        except (urllib.error.URLError, OSError, ValueError) as error:
            failure = f"{url}: {error}"
        if attempt < 2:
            time.sleep(attempt + 1)
    raise Unreachable(failure)


def not_gradable(reason: str, instructor_note: str | None = None) -> dict:
    """A result that costs no attempt; a note for the instructor goes to stderr."""
    if instructor_note is not None:
        print(f"gradcheck grader: {instructor_note}", file=sys.stderr)
    return {
        "gradable": False,
        "score": 0.0,
        "message": reason,
        "format_errors": [reason],
        "tests": [],
    }


def grade() -> dict:
    try:
        config = read_config()
    except ConfigError as error:
        return not_gradable(MISCONFIGURED, f"fix config.json: {error}")
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
        return not_gradable(MISCONFIGURED, f"fix config.json: {error}")
    except Unreachable as error:
        print(f"gradcheck service error: {error}", file=sys.stderr)
        return not_gradable(RETRY)


def check_config(path: Path) -> int:
    """--check-config: the shape always, the values against the service when it answers."""
    try:
        config = read_config(path)
        problem = post(config, "/v1/problems", {"seed": "config-check"})
        body = {"problem_id": problem["problem_id"], "submission": {}, **config["grading"]}
        post(config, "/v1/grade", {**body, "format": "prairielearn"})
    except (ConfigError, Refused) as error:
        print(f"config.json is wrong, fix it before students submit: {error}", file=sys.stderr)
        return 1
    except Unreachable as error:
        print(
            "warning: config.json has the right shape, but its values could not be checked: "
            f"the service did not answer ({error})",
            file=sys.stderr,
        )
        return 0
    print(f"config.json is right: checked against the service at {config['url']}")
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--check-config"]:
        sys.exit(check_config(Path(sys.argv[2]) if len(sys.argv) > 2 else CONFIG))
    try:
        results = grade()
    except Exception:  # the last resort: a result that costs no attempt, not a traceback alone
        results = not_gradable(MISCONFIGURED, "the grader failed:\n" + traceback.format_exc())
    results_dir = ROOT / "results"
    results_dir.mkdir(parents=True, exist_ok=True)  # PrairieLearn does not create it
    (results_dir / "results.json").write_text(json.dumps(results, indent=2))
