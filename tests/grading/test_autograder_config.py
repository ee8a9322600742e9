"""A mistake in the autograders' config.json is the instructor's to fix, never the student's
problem: the Gradescope and PrairieLearn scripts still write a results.json that tells the
student it is not their mistake, and say what to fix (stderr; a hidden Gradescope test);
`setup.sh` / `--check-config` find the mistake when the autograder is built, from its shape
alone, and from the service when it answers (only a warning when it does not)."""

import ast
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from app.api.schemas.grading import GradeRequest, ProblemRequest
from tests.grading.test_examples import (
    API_KEY,
    GRADESCOPE,
    PL_EXAMPLES,
    SYSTEM_PYTHON,
    grade_dir,
    load_server,
    service,
)
from tests.grading.test_formats import check_gradescope, check_prairielearn
from tests.helpers import ROOT, free_port, module_from_file, require

pytestmark = pytest.mark.live
__all__ = ["service"]  # the live server fixture, shared with test_examples

GOOD = json.loads((GRADESCOPE / "config.json").read_text())

# (config.json's text, what the instructor is told to fix)
SHAPE_MISTAKES = [
    (
        json.dumps({k if k != "assignment" else "assignmnt": v for k, v in GOOD.items()}),
        'unknown key "assignmnt" (did you mean "assignment"?); "assignment" is missing',
    ),
    (
        json.dumps(GOOD, indent=2)[:-2] + ",\n}",
        "is not valid JSON: Expecting property name enclosed in double quotes at line 24",
    ),
    (json.dumps({**GOOD, "problem": [4, 3]}), '"problem" must be an object, not an array'),
    (json.dumps({**GOOD, "api_key": 12345}), '"api_key" must be a string, not a number'),
    (json.dumps({**GOOD, "assignment": " "}), '"assignment" is empty'),
    (json.dumps({**GOOD, "url": "gradcheck.example.edu"}), '"url" must start with http://'),
    (
        json.dumps({**GOOD, "grading": {**GOOD["grading"], "partial_credits": True}}),
        'unknown key "grading.partial_credits" (did you mean "partial_credit"?)',
    ),
    (
        json.dumps({**GOOD, "problem": {**GOOD["problem"], "seed": "hw3"}}),
        '"problem" must not set "seed": the autograder sets it',
    ),
    ("[]", "must hold a JSON object, not an array"),
    ("", "is not valid JSON: Expecting value at line 1, column 1"),
]
# config.json's values that only the service can judge: (change, what to fix)
VALUE_MISTAKES = [
    ({"grading": {**GOOD["grading"], "points": {"lost": 1}}}, '"grading.points.lost.[key]"'),
    ({"grading": {**GOOD["grading"], "feedback": "summary"}}, '"grading.feedback"'),
    ({"problem": {**GOOD["problem"], "batch_size": "four"}}, '"problem.batch_size"'),
    ({"api_key": "not-the-key"}, '"api_key" is not accepted by the service (HTTP 401)'),
]


def run(
    command: list[str], env: dict[str, str], cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    require(SYSTEM_PYTHON is not None, "python3 is not on PATH")
    return subprocess.run(
        command, env={**os.environ, **env}, cwd=cwd, capture_output=True, text=True, timeout=120
    )


def autograder(tmp_path: Path, config: str) -> Path:
    """/autograder with the zip unpacked in source/ (its config.json: `config`) and a
    submission from a student."""
    root = tmp_path / "autograder"
    (root / "source").mkdir(parents=True)
    for name in ("run_autograder", "setup.sh"):
        shutil.copy(GRADESCOPE / name, root / "source" / name)
    (root / "source" / "config.json").write_text(config)
    (root / "submission").mkdir()
    (root / "submission" / "answer.json").write_text('{"loss": 1.0}')
    metadata = {"users": [{"email": "ada@example.edu"}]}
    (root / "submission_metadata.json").write_text(json.dumps(metadata))
    return root


def run_autograder(root: Path) -> tuple[dict[str, Any], subprocess.CompletedProcess[str]]:
    process = run(["bash", str(root / "source" / "run_autograder")], {"AUTOGRADER_ROOT": str(root)})
    assert process.returncode == 0, process.stderr
    assert "Traceback" not in process.stderr
    return json.loads((root / "results" / "results.json").read_text()), process


def setup(root: Path) -> subprocess.CompletedProcess[str]:
    return run(["bash", str(root / "source" / "setup.sh")], {"AUTOGRADER_ROOT": str(root)})


def assert_not_the_students_mistake(results: dict[str, Any], fix: str) -> None:
    """0 points, a message for the student, what to fix in a test only instructors see."""
    check_gradescope(results)
    assert results["score"] == 0.0
    assert "misconfigured" in results["output"]
    assert "not your mistake" in results["output"]
    assert fix not in results["output"]
    (note,) = results["tests"]
    assert (note["visibility"], note["max_score"]) == ("hidden", 0.0)
    assert fix in note["output"]


def with_service(url: str, **changes: Any) -> str:
    return json.dumps({**GOOD, "url": url, "api_key": API_KEY, **changes})


@pytest.mark.parametrize(("config", "fix"), SHAPE_MISTAKES)
def test_gradescope_config_shape_mistakes(tmp_path: Path, config: str, fix: str) -> None:
    root = autograder(tmp_path, config)
    results, process = run_autograder(root)
    assert_not_the_students_mistake(results, fix)
    assert fix in process.stderr
    # the build fails on it, with the same words, without asking the service
    built = setup(root)
    assert built.returncode == 1
    assert fix in built.stderr
    assert "Traceback" not in built.stderr


@pytest.mark.parametrize(("change", "fix"), VALUE_MISTAKES)
def test_gradescope_config_value_mistakes_found_by_the_service(
    service: str, tmp_path: Path, change: dict[str, Any], fix: str
) -> None:
    root = autograder(tmp_path, with_service(service, **change))
    built = setup(root)
    assert built.returncode == 1, built.stdout
    assert "config.json is wrong" in built.stderr
    assert fix in built.stderr
    results, _ = run_autograder(root)
    assert_not_the_students_mistake(results, fix)


def test_gradescope_setup_accepts_the_right_config_and_only_warns_offline(
    service: str, tmp_path: Path
) -> None:
    root = autograder(tmp_path, with_service(service))
    built = setup(root)
    assert built.returncode == 0, built.stderr
    assert f"config.json is right: checked against the service at {service}" in built.stdout
    (root / "source" / "config.json").write_text(with_service(f"http://127.0.0.1:{free_port()}"))
    built = setup(root)
    assert built.returncode == 0, built.stderr
    assert "warning: config.json has the right shape, but its values could not be checked" in (
        built.stderr
    )


def test_the_scripts_know_every_option_of_the_service() -> None:
    """The options config.json may set are those of /v1/problems and /v1/grade, less what the
    scripts set themselves: a typo is found offline, and no option is refused by mistake."""
    text = (GRADESCOPE / "run_autograder").read_text()
    start = text.index("OPTIONS = {") + len("OPTIONS = ")
    options = ast.literal_eval(text[start : text.index("\n}\n", start) + 2])
    assert set(options["problem"]) == set(ProblemRequest.model_fields) - {"seed"}
    grading_options = set(GradeRequest.model_fields) - {
        "problem_id",
        "problem",
        "submission",
        "format",
    }
    assert set(options["grading"]) == grading_options
    pl_grader = load_grader()
    assert set(pl_grader.GRADING) == grading_options


# ----- PrairieLearn -----


def load_grader() -> Any:
    """examples/prairielearn/grade.py as a module."""
    return module_from_file("pl_grade", PL_EXAMPLES / "grade.py")


PL_GOOD = json.loads((PL_EXAMPLES / "config.json").read_text())
PL_MISTAKES = [
    (
        json.dumps({**PL_GOOD, "urll": PL_GOOD["url"]}),
        'unknown key "urll" (did you mean "url"?)',
    ),
    (json.dumps(PL_GOOD, indent=2)[:-2] + ",\n}", "is not valid JSON"),
    (json.dumps({**PL_GOOD, "grading": "verdict"}), '"grading" must be an object, not a string'),
]


@pytest.mark.parametrize(("config", "fix"), PL_MISTAKES)
def test_prairielearn_config_mistakes(service: str, tmp_path: Path, config: str, fix: str) -> None:
    root, _ = grade_dir(tmp_path, service, '{"loss": 1.0}')
    path = root / "serverFilesCourse" / "gradcheck" / "config.json"
    path.write_text(config)
    process = run([str(SYSTEM_PYTHON), str(PL_EXAMPLES / "grade.py")], {"PL_GRADE_ROOT": str(root)})
    assert process.returncode == 0, process.stderr
    assert "Traceback" not in process.stderr
    results = json.loads((root / "results" / "results.json").read_text())
    check_prairielearn(results)
    assert results["gradable"] is False  # costs no attempt
    assert "not your mistake" in results["message"]
    assert fix not in results["message"]
    assert fix in process.stderr
    checked = run(
        [str(SYSTEM_PYTHON), str(PL_EXAMPLES / "grade.py"), "--check-config", str(path)], {}
    )
    assert checked.returncode == 1
    assert fix in checked.stderr
    # a new variant's server.py names the same mistake to the course's staff
    course_files = tmp_path / "serverFilesCourse"
    (course_files / "gradcheck" / "config.json").write_text(config)
    data = {
        "params": {},
        "variant_seed": 7,
        "options": {"server_files_course_path": str(course_files)},
    }
    with pytest.raises(Exception, match=r"config\.json") as error:
        load_server().generate(data)
    assert fix in str(error.value)


def test_prairielearn_check_config_against_the_service(service: str, tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    grade = [str(SYSTEM_PYTHON), str(PL_EXAMPLES / "grade.py"), "--check-config", str(path)]
    path.write_text(json.dumps({**PL_GOOD, "url": service, "api_key": API_KEY}))
    checked = run(grade, {})
    assert checked.returncode == 0, checked.stderr
    assert f"checked against the service at {service}" in checked.stdout
    wrong = {**PL_GOOD["grading"], "points": {"gradient": "two"}}
    path.write_text(json.dumps({**PL_GOOD, "url": service, "api_key": API_KEY, "grading": wrong}))
    checked = run(grade, {})
    assert checked.returncode == 1
    assert '"grading.points.gradient"' in checked.stderr
    path.write_text(json.dumps({**PL_GOOD, "url": f"http://127.0.0.1:{free_port()}"}))
    checked = run(grade, {})
    assert checked.returncode == 0
    assert "warning" in checked.stderr


@pytest.mark.parametrize(
    ("command", "example"),
    [
        ("GRADCHECK_CONFIG=config.json bash run_autograder --check-config", GRADESCOPE),
        ("python3 grade.py --check-config config.json", PL_EXAMPLES),
    ],
)
def test_the_guides_check_commands_as_written(
    service: str, tmp_path: Path, command: str, example: Path
) -> None:
    """The guide's commands, run in the folder to zip (Gradescope) or to sync (PrairieLearn),
    whose config.json has the service's address and key."""
    guide = (ROOT / "docs" / "autograding.md").read_text()
    assert f"```bash\n{command}\n```" in guide
    script = "run_autograder" if example == GRADESCOPE else "grade.py"
    shutil.copy(example / script, tmp_path / script)
    config = json.loads((example / "config.json").read_text())
    (tmp_path / "config.json").write_text(
        json.dumps({**config, "url": service, "api_key": API_KEY})
    )
    checked = run(["bash", "-c", command], {}, cwd=tmp_path)
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout == f"config.json is right: checked against the service at {service}\n"
