"""The autograder examples, run as Gradescope and PrairieLearn would run them, against a live
server on 127.0.0.1 with API keys and a signing secret; temporary directories stand in for
/autograder and /grade. The scripts run under the system's python3 (standard library only)."""

import importlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.grading.test_formats import check_gradescope, check_prairielearn
from tests.helpers import ROOT, free_port, module_from_file, require, start_uvicorn

pytestmark = pytest.mark.live

API_KEY = "example-course-key-0123456789"
GRADESCOPE = ROOT / "examples" / "gradescope"
RUN_AUTOGRADER = GRADESCOPE / "run_autograder"
PL_EXAMPLES = ROOT / "examples" / "prairielearn"
ROSTER = ROOT / "examples" / "roster" / "roster.py"
SYSTEM_PYTHON = shutil.which("python3")


@pytest.fixture(scope="module")
def service() -> Iterator[str]:
    """A live server that needs an API key and signs with a fixed secret."""
    port = free_port()
    env = {"GRADCHECK_API_KEYS": API_KEY, "GRADCHECK_SECRET_KEY": "example-secret-" + "x" * 32}
    process = start_uvicorn(port, env)
    yield f"http://127.0.0.1:{port}"
    process.terminate()
    process.wait(timeout=10)


def call(url: str, path: str, body: dict[str, Any]) -> Any:
    response = httpx.post(url + path, json=body, headers={"X-API-Key": API_KEY}, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def correct_answer(url: str, problem: dict[str, Any], parts: tuple[str, ...]) -> dict[str, Any]:
    body = {key: problem[key] for key in ("logits", "labels", "reduction")}
    values = call(
        url, "/v1/cross-entropy", {**body, "include": ["probabilities", "loss", "gradient"]}
    )
    return {part: values[part] for part in parts}


def configured(example: Path, target: Path, url: str, key: str) -> None:
    """The example's config.json with the live server's address and key, written to `target`."""
    config = json.loads(example.read_text())
    config.update(url=url, api_key=key)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(config))


def run(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    require(SYSTEM_PYTHON is not None, "python3 is not on PATH")
    return subprocess.run(
        command,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )


# ----- Gradescope -----


def gradescope_dir(tmp_path: Path, answer: str | None, email: str = "ada@example.edu") -> Path:
    root = tmp_path / "autograder"
    (root / "submission").mkdir(parents=True)
    metadata = {"users": [{"email": email, "id": 1, "name": "Ada"}]}
    (root / "submission_metadata.json").write_text(json.dumps(metadata))
    if answer is not None:
        (root / "submission" / "answer.json").write_text(answer)
    return root


def run_autograder(
    root: Path, url: str, key: str = API_KEY
) -> tuple[dict[str, Any], subprocess.CompletedProcess[str]]:
    """run_autograder as Gradescope runs it, with config.json in /autograder/source."""
    configured(GRADESCOPE / "config.json", root / "source" / "config.json", url, key)
    process = run(["bash", str(RUN_AUTOGRADER)], {"AUTOGRADER_ROOT": str(root)})
    results: dict[str, Any] = json.loads((root / "results" / "results.json").read_text())
    return results, process


def student_problem(url: str, email: str) -> dict[str, Any]:
    """The problem the course handed this student: the seed rule of run_autograder, with the
    assignment and problem options of config.json."""
    config = json.loads((GRADESCOPE / "config.json").read_text())
    body = {"seed": f"{config['assignment']}:{email}", **config["problem"]}
    problem: dict[str, Any] = call(url, "/v1/problems", body)
    return problem


def test_gradescope_full_marks_for_the_students_own_problem(service: str, tmp_path: Path) -> None:
    answer = correct_answer(
        service, student_problem(service, "ada@example.edu"), ("loss", "gradient")
    )
    results, _ = run_autograder(gradescope_dir(tmp_path, json.dumps(answer)), service)
    check_gradescope(results)
    assert results["score"] == 5.0
    assert [(t["name"], t["status"]) for t in results["tests"]] == [
        ("loss", "passed"),
        ("gradient", "passed"),
    ]


def test_gradescope_someone_elses_answer_fails(service: str, tmp_path: Path) -> None:
    answer = correct_answer(
        service, student_problem(service, "bob@example.edu"), ("loss", "gradient")
    )
    results, _ = run_autograder(gradescope_dir(tmp_path, json.dumps(answer)), service)
    check_gradescope(results)
    assert results["score"] < 5.0
    assert results["tests"][0]["status"] == "failed"


@pytest.mark.parametrize(
    ("answer", "output"),
    [
        (
            '{"loss": NaN, "gradient": [[0, 0], [0, 0], [0, 0], [0, 0]]}',
            "Not gradable: loss is NaN",
        ),
        ('{"loss": 0.5, "gradient": "todo"}', 'gradient is the string "todo"'),
        ("{not json", "answer.json is not valid JSON"),
        (None, "No answer found"),
    ],
)
def test_gradescope_bad_uploads_get_zero_with_a_reason(
    service: str, tmp_path: Path, answer: str | None, output: str
) -> None:
    results, _ = run_autograder(gradescope_dir(tmp_path, answer), service)
    check_gradescope(results)
    assert results["score"] == 0.0
    texts = [results["output"], *(test["output"] for test in results["tests"])]
    assert any(output in text for text in texts)


def test_gradescope_email_is_normalised_into_the_seed(service: str, tmp_path: Path) -> None:
    answer = correct_answer(
        service, student_problem(service, "ada@example.edu"), ("loss", "gradient")
    )
    root = gradescope_dir(tmp_path, json.dumps(answer), email="  Ada@Example.EDU ")
    results, _ = run_autograder(root, service)
    assert results["score"] == 5.0


def test_gradescope_with_a_wrong_key_says_it_is_a_configuration_problem(
    service: str, tmp_path: Path
) -> None:
    results, process = run_autograder(gradescope_dir(tmp_path, "{}"), service, key="not-the-key")
    assert results["score"] == 0.0
    assert "misconfigured" in results["output"]
    assert "not your mistake" in results["output"]
    assert "resubmit" not in results["output"]
    # the instructor sees what to fix, in the autograder's output and in a hidden test
    assert '"api_key" is not accepted by the service (HTTP 401)' in process.stderr
    (note,) = results["tests"]
    assert note["visibility"] == "hidden"
    assert '"api_key" is not accepted' in note["output"]


def test_gradescope_when_the_service_is_unreachable(tmp_path: Path) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    results, process = run_autograder(gradescope_dir(tmp_path, "{}"), closed)
    assert results["score"] == 0.0
    assert "could not be reached" in results["output"]
    assert "resubmit" in results["output"]
    assert "gradcheck service error" in process.stderr


# ----- PrairieLearn -----


def load_server() -> Any:
    """examples/prairielearn/server.py, imported as PrairieLearn imports it."""
    return module_from_file("pl_server", PL_EXAMPLES / "server.py")


def grade_dir(tmp_path: Path, url: str, answer: str | None) -> tuple[Path, dict[str, Any]]:
    """The course's serverFilesCourse (config.json), a generated variant, and /grade."""
    course_files = tmp_path / "serverFilesCourse"
    configured(
        PL_EXAMPLES / "config.json", course_files / "gradcheck" / "config.json", url, API_KEY
    )
    shutil.copy(PL_EXAMPLES / "grade.py", course_files / "gradcheck" / "grade.py")
    data: dict[str, Any] = {
        "params": {},
        "variant_seed": 1234567,
        "submitted_answers": {},
        "options": {"server_files_course_path": str(course_files)},
    }
    load_server().generate(data)
    root = tmp_path / "grade"
    (root / "data").mkdir(parents=True)
    (root / "student").mkdir()
    (root / "data" / "data.json").write_text(json.dumps(data))
    shutil.copytree(course_files, root / "serverFilesCourse")
    if answer is not None:
        (root / "student" / "answer.json").write_text(answer)
    return root, data["params"]


def run_grader(
    root: Path, url: str | None = None, key: str = API_KEY
) -> tuple[dict[str, Any], subprocess.CompletedProcess[str]]:
    if url is not None:
        config = root / "serverFilesCourse" / "gradcheck" / "config.json"
        configured(PL_EXAMPLES / "config.json", config, url, key)
    process = run([str(SYSTEM_PYTHON), str(PL_EXAMPLES / "grade.py")], {"PL_GRADE_ROOT": str(root)})
    results: dict[str, Any] = json.loads((root / "results" / "results.json").read_text())
    return results, process


def test_prairielearn_generate_then_grade(service: str, tmp_path: Path) -> None:
    root, params = grade_dir(tmp_path, service, None)
    assert len(params["logits"]) == 3
    assert len(params["logits"][0]) == 4
    answer = correct_answer(
        service, params | {"reduction": "mean"}, ("probabilities", "loss", "gradient")
    )
    (root / "student" / "answer.json").write_text(json.dumps(answer))
    results, _ = run_grader(root)
    check_prairielearn(results)
    assert results["gradable"] is True
    assert results["score"] == 1.0
    assert [(t["name"], t["points"], t["max_points"]) for t in results["tests"]] == [
        ("probabilities", 1.0, 1.0),
        ("loss", 1.0, 1.0),
        ("gradient", 2.0, 2.0),
    ]


def test_prairielearn_partial_credit_and_format_errors(service: str, tmp_path: Path) -> None:
    root, params = grade_dir(tmp_path, service, None)
    answer = correct_answer(
        service, params | {"reduction": "mean"}, ("probabilities", "loss", "gradient")
    )
    answer["gradient"][0] = [0.0, 0.0, 0.0, 0.0]  # 4 of 12 entries wrong
    (root / "student" / "answer.json").write_text(json.dumps(answer))
    results, _ = run_grader(root)
    check_prairielearn(results)
    assert results["score"] == pytest.approx((1 + 1 + 2 * 8 / 12) / 4)

    (root / "student" / "answer.json").write_text('["not", "an", "object"]')
    results, _ = run_grader(root)
    check_prairielearn(results)
    assert results["gradable"] is False
    assert results["format_errors"][0].startswith("the submission must be a JSON object")


def test_prairielearn_unreachable_service_costs_no_attempt(service: str, tmp_path: Path) -> None:
    root, _ = grade_dir(tmp_path, service, "{}")
    closed = f"http://127.0.0.1:{free_port()}"
    results, _ = run_grader(root, closed)
    assert results["gradable"] is False
    assert "not counted" in results["message"]
    assert "resubmit" in results["message"]


def test_prairielearn_refusal_is_a_configuration_message(service: str, tmp_path: Path) -> None:
    root, _ = grade_dir(tmp_path, service, "{}")
    results, process = run_grader(root, service, key="not-the-key")
    assert results["gradable"] is False
    assert "misconfigured" in results["message"]
    assert "HTTP 401" in process.stderr
    data = json.loads((root / "data" / "data.json").read_text())
    data["params"]["problem_id"] += "x"  # an altered id: 422, also the course's problem
    (root / "data" / "data.json").write_text(json.dumps(data))
    results, process = run_grader(root, service)
    assert "misconfigured" in results["message"]
    assert "HTTP 422" in process.stderr
    assert "problem_id" in process.stderr


# ----- the documentation shows exactly these scripts -----


def page_as_mkdocs_reads_it(page: Path) -> str:
    """A docs page's Markdown with each `--8<-- "path"` line replaced by that file, as MkDocs
    includes it (pymdownx.snippets with the settings of mkdocs.yml: paths from the repository's
    root, a missing file is an error)."""
    markdown = importlib.import_module("markdown")  # ships no type hints
    md = markdown.Markdown(
        extensions=["pymdownx.snippets"],
        extension_configs={"pymdownx.snippets": {"base_path": [str(ROOT)], "check_paths": True}},
    )
    snippets = md.preprocessors["snippet"]
    lines: list[str] = []
    for line in page.read_text().split("\n"):
        included = snippets.run([line])
        if included != [line] and included[-1:] == [""]:
            # snippets splits a file at "\n", so its final newline becomes an empty last line;
            # the rendered block ends with the file's own newline, as the file does
            included = included[:-1]
        lines += included
    return "\n".join(lines)


DOCUMENTED = {
    RUN_AUTOGRADER: "bash",
    GRADESCOPE / "setup.sh": "bash",
    GRADESCOPE / "config.json": "json",
    PL_EXAMPLES / "info.json": "json",
    PL_EXAMPLES / "server.py": "python",
    PL_EXAMPLES / "grade.py": "python",
    PL_EXAMPLES / "config.json": "json",
    ROSTER: "python",
}


@pytest.mark.parametrize("example", sorted(DOCUMENTED))
def test_the_docs_show_the_tested_scripts(example: Path) -> None:
    docs = page_as_mkdocs_reads_it(ROOT / "docs" / "autograding.md")
    assert f"```{DOCUMENTED[example]}\n{example.read_text()}```" in docs
