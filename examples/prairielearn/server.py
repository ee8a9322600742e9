"""PrairieLearn question server: one gradcheck problem per variant.

`generate` runs on the PrairieLearn server when a student opens a new variant: it asks the
gradcheck service for a problem and keeps its signed `problem_id` in `params`, which students
cannot change, for the external grader (grade.py) to grade against. The logits and labels go to
the question page. The service's address and key are read from the course's
serverFilesCourse/gradcheck/config.json, the file the grader reads too. Only the Python 3
standard library is used.
"""

import json
import urllib.request
from pathlib import Path

PROBLEM = {"batch_size": 3, "num_classes": 4, "label_type": "index", "reduction": "mean"}


def config(data: dict) -> dict:
    """serverFilesCourse/gradcheck/config.json: {"url": ..., "api_key": ..., ...}."""
    course_files = Path(data["options"]["server_files_course_path"])
    return json.loads((course_files / "gradcheck" / "config.json").read_text())


def generate(data: dict) -> None:
    """Fill data["params"] with a new problem; the seed is the variant's own random seed."""
    settings = config(data)
    body = {"seed": f"pl-variant-{data['variant_seed']}", **PROBLEM}
    headers = {"Content-Type": "application/json"}
    if settings.get("api_key"):
        headers["X-API-Key"] = settings["api_key"]
    request = urllib.request.Request(
        settings["url"].rstrip("/") + "/v1/problems",
        data=json.dumps(body).encode(),
        headers=headers,
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        problem = json.load(response)
    params = data["params"]
    params["problem_id"] = problem["problem_id"]
    params["logits"] = problem["logits"]
    params["labels"] = problem["labels"]
    params["batch_size"] = PROBLEM["batch_size"]
    params["num_classes"] = PROBLEM["num_classes"]
    params["logits_text"] = json.dumps(problem["logits"])
    params["labels_text"] = json.dumps(problem["labels"])
