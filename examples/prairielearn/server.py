"""PrairieLearn question server: one gradcheck problem per variant.

`generate` runs on the PrairieLearn server when a student opens a new variant: it asks the
gradcheck service for a problem and keeps its signed `problem_id` in `params`, which students
cannot change, for the external grader (grade.py) to grade against. The logits and labels go to
the question page. The service's address and key are read from the course's
serverFilesCourse/gradcheck/config.json, the file the grader reads, and with the grader's own
code (grade.py beside it), so a mistake in config.json is named the same way in both: here as
the question's error, which PrairieLearn shows to the course's staff. Only the Python 3
standard library is used.
"""

import importlib.util
import json
from pathlib import Path
from types import ModuleType

PROBLEM = {"batch_size": 3, "num_classes": 4, "label_type": "index", "reduction": "mean"}


def grader(data: dict) -> ModuleType:
    """serverFilesCourse/gradcheck/grade.py, whose read_config and post this file uses."""
    path = Path(data["options"]["server_files_course_path"]) / "gradcheck" / "grade.py"
    spec = importlib.util.spec_from_file_location("gradcheck_grade", path)
    if not path.is_file() or spec is None or spec.loader is None:
        raise RuntimeError(f"{path} is missing: copy grade.py beside config.json")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def generate(data: dict) -> None:
    """Fill data["params"] with a new problem; the seed is the variant's own random seed."""
    grade = grader(data)
    settings = grade.read_config(Path(grade.__file__).with_name("config.json"))
    body = {"seed": f"pl-variant-{data['variant_seed']}", **PROBLEM}
    problem = grade.post(settings, "/v1/problems", body)
    params = data["params"]
    params["problem_id"] = problem["problem_id"]
    params["logits"] = problem["logits"]
    params["labels"] = problem["labels"]
    params["batch_size"] = PROBLEM["batch_size"]
    params["num_classes"] = PROBLEM["num_classes"]
    params["logits_text"] = json.dumps(problem["logits"])
    params["labels_text"] = json.dumps(problem["labels"])
