"""The autograding guide (docs/autograding.md) followed as written, against a live server on
127.0.0.1: the roster script hands the problems out with the guide's command, the Gradescope
autograder is zipped as the guide says (config.json given the service's address and key),
`setup.sh` checks it, and a right answer to a handed-out problem gets full marks."""

import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.grading.example import textbook_softmax
from tests.grading.test_examples import API_KEY, GRADESCOPE, SYSTEM_PYTHON, service
from tests.helpers import ROOT, require

pytestmark = pytest.mark.live
__all__ = ["service"]  # the live server fixture, shared with test_examples

GUIDE = ROOT / "docs" / "autograding.md"
ROSTER_CSV = ROOT / "examples" / "roster" / "roster.csv"


def guide_command(subcommand: str) -> list[str]:
    """The guide's `roster.py <subcommand>` command line, as written."""
    lines = [
        line
        for line in GUIDE.read_text().splitlines()
        if line.startswith("python3 examples/roster/roster.py") and f" {subcommand} " in line
    ]
    assert len(lines) == 1, lines
    return shlex.split(lines[0])


def right_answer(problem: dict[str, Any]) -> dict[str, Any]:
    """The loss and gradient of a handed-out problem, by the textbook formulas (mean over the
    samples, one-hot targets): what a student who did the exercise right uploads."""
    assert (problem["reduction"], problem["weight"], problem["label_smoothing"]) == (
        "mean",
        None,
        0.0,
    )
    logits, labels = np.array(problem["logits"]), np.array(problem["labels"])
    rows = np.arange(len(labels))
    probabilities = textbook_softmax(logits)
    loss = -np.log(probabilities[rows, labels]).mean()
    gradient = (probabilities - np.eye(logits.shape[1])[labels]) / len(labels)
    return {"loss": float(loss), "gradient": gradient.tolist()}


def test_the_guide_hands_out_problems_that_the_autograder_gives_full_marks(
    service: str, tmp_path: Path
) -> None:
    require(SYSTEM_PYTHON is not None, "python3 is not on PATH")
    # 1. hand out, with the guide's command (its address is the live server's)
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    shutil.copy(ROSTER_CSV, tmp_path / "roster.csv")
    command = guide_command("hand-out")
    assert command[:4] == ["python3", "examples/roster/roster.py", "--url", "http://localhost:8000"]
    command[3] = service
    subprocess.run(
        command,
        cwd=tmp_path,
        env={**os.environ, "GRADCHECK_API_KEY": API_KEY},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    # 2. the autograder, zipped as it is with config.json's url and api_key filled in
    source = tmp_path / "autograder" / "source"
    source.mkdir(parents=True)
    for name in ("run_autograder", "setup.sh"):
        shutil.copy(GRADESCOPE / name, source / name)
    config = json.loads((GRADESCOPE / "config.json").read_text())
    config.update(url=service, api_key=API_KEY)
    (source / "config.json").write_text(json.dumps(config))
    environment = {**os.environ, "AUTOGRADER_ROOT": str(tmp_path / "autograder")}
    built = subprocess.run(
        ["bash", str(source / "setup.sh")],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert built.returncode == 0, built.stderr
    assert f"checked against the service at {service}" in built.stdout
    full_marks = float(sum(config["grading"]["points"].values()))
    # 3. each student uploads the right answer to the problem handed to them
    emails = [
        line.split(",")[0] for line in ROSTER_CSV.read_text().splitlines()[1:] if line.strip()
    ]
    assert " Bob@Example.edu " in emails  # the roster's untidy email is the same student
    for email in emails:
        problem = json.loads((tmp_path / "problems" / f"{email.strip().lower()}.json").read_text())
        root = tmp_path / "autograder"
        shutil.rmtree(root / "submission", ignore_errors=True)
        shutil.rmtree(root / "results", ignore_errors=True)
        (root / "submission").mkdir()
        (root / "submission" / "answer.json").write_text(json.dumps(right_answer(problem)))
        metadata = {"users": [{"email": email, "id": 1, "name": "a student"}]}
        (root / "submission_metadata.json").write_text(json.dumps(metadata))
        subprocess.run(
            ["bash", str(source / "run_autograder")],
            env=environment,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        results = json.loads((root / "results" / "results.json").read_text())
        assert results["score"] == full_marks, (email, results["output"])
        assert re.match(r"Score 5 of 5", results["output"]), results["output"]


def test_one_assignment_name_everywhere() -> None:
    """The guide, the client's page, the roster script and the Gradescope config name the same
    assignment, so the seeds they make are the same."""
    assignment = json.loads((GRADESCOPE / "config.json").read_text())["assignment"]
    texts = {
        path: (ROOT / path).read_text()
        for path in ("docs/autograding.md", "docs/client.md", "examples/roster/roster.py")
    }
    names = {
        (path, name)
        for path, text in texts.items()
        for pattern in (
            r"--assignment[ =](\S+)",  # a hand-out command
            r'"([\w-]+):[\w.]+@example\.edu',  # a seed
            r'"--assignment", default="([^"]+)"',  # the roster script's default
        )
        for name in re.findall(pattern, text)
    }
    assert {path for path, _ in names} == set(texts)
    assert {name for _, name in names} == {assignment}, names
