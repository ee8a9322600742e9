"""PrairieLearn question server: one gradcheck problem per variant.

`generate` runs on the PrairieLearn server when a student opens a new variant: it asks the
gradcheck service for a problem and keeps its signed `problem_id` in `params`, which students
cannot change, for the external grader (grade.py) to grade against. The logits and labels go to
the question page. Only the Python 3 standard library is used.
"""

import json
import os
import urllib.request

URL = os.environ.get("GRADCHECK_URL", "https://gradcheck.example.edu").rstrip("/")
API_KEY = os.environ.get("GRADCHECK_API_KEY", "")
PROBLEM = {"batch_size": 3, "num_classes": 4, "label_type": "index", "reduction": "mean"}


def generate(data: dict) -> None:
    """Fill data["params"] with a new problem; the seed is the variant's own random seed."""
    body = {"seed": f"pl-variant-{data['variant_seed']}", **PROBLEM}
    headers = {"Content-Type": "application/json"}
    if API_KEY:
        headers["X-API-Key"] = API_KEY
    request = urllib.request.Request(
        f"{URL}/v1/problems", data=json.dumps(body).encode(), headers=headers, method="POST"
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        problem = json.load(response)
    data["params"]["problem_id"] = problem["problem_id"]
    data["params"]["logits"] = problem["logits"]
    data["params"]["labels"] = problem["labels"]
