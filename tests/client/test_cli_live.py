"""The `gradcheck` command line against a live server, in-process (`main(argv)`): every command
and every exit code (0 passes, 1 fails, 2 no verdict)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from gradcheck_client import Client
from gradcheck_client.cli import main, normalise_email, read_roster, seed_of

from tests.client.conftest import CLIENT_SRC, Stub, json_body
from tests.helpers import free_port, require_module

pytestmark = pytest.mark.live

LOGITS = np.array([[2.0, 1.0, 0.1], [0.5, 2.5, -1.0], [0.3, 0.0, 1.2], [1.0, -1.0, 0.5]])
LABELS = np.array([0, 1, 2, 0])


@pytest.fixture
def problem(tmp_path: Path, live_url: str) -> dict[str, Path]:
    """logits, labels and the right gradient / loss as files, plus a summed gradient."""
    with Client(live_url) as service:
        result = service.cross_entropy(LOGITS, LABELS, include=["loss", "gradient"])
    assert result.gradient is not None
    files = {
        "logits": tmp_path / "z.npy",
        "labels": tmp_path / "y.npy",
        "gradient": tmp_path / "g.npy",
        "summed": tmp_path / "g_sum.npy",
    }
    np.save(files["logits"], LOGITS)
    np.save(files["labels"], LABELS)
    np.save(files["gradient"], result.gradient)
    np.save(files["summed"], result.gradient * len(LABELS))
    (tmp_path / "loss.txt").write_text(repr(result.loss))
    return files


def check_args(url: str, files: dict[str, Path], *extra: str) -> list[str]:
    return [
        "check",
        "--url",
        url,
        "--logits",
        str(files["logits"]),
        "--labels",
        str(files["labels"]),
        *extra,
    ]


def test_check_exits_0_when_every_output_passes(
    live_url: str, problem: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    loss = (problem["logits"].parent / "loss.txt").read_text()
    code = main(
        check_args(live_url, problem, "--gradient", str(problem["gradient"]), "--loss", loss)
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "gradient: PASS (atol 1e-12, rtol 1e-10)" in out  # float64 .npy: the table's row
    assert "loss: PASS (atol 1e-12, rtol 1e-10)" in out
    assert "diagnosis" not in out


def test_a_given_tolerance_is_applied_and_printed_the_other_from_the_table(
    live_url: str, problem: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gradient = np.load(problem["gradient"]) * (1 + 7e-6)  # a loss-sized relative error
    np.save(tmp_path / "g_off.npy", gradient)
    assert main(check_args(live_url, problem, "--gradient", str(tmp_path / "g_off.npy"))) == 1
    assert "gradient: FAIL (atol 1e-12, rtol 1e-10)" in capsys.readouterr().out
    argv = check_args(
        live_url, problem, "--gradient", str(tmp_path / "g_off.npy"), "--rtol", "1e-3"
    )
    assert main(argv) == 0
    assert "gradient: PASS (atol 1e-12, rtol 0.001)" in capsys.readouterr().out


@pytest.fixture
def bfloat16_gradient(problem: dict[str, Path], tmp_path: Path) -> Path:
    """The right gradient in bfloat16, saved as docs/verify-a-kernel.md saves it ('<V2')."""
    ml_dtypes = require_module("ml_dtypes")
    path = tmp_path / "g16.npy"
    np.save(path, np.load(problem["gradient"]).astype(ml_dtypes.bfloat16))
    assert np.load(path).dtype.str == "|V2"
    return path


def test_a_bfloat16_npy_is_checked_at_the_bfloat16_tolerance(
    live_url: str,
    problem: dict[str, Path],
    bfloat16_gradient: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = main(check_args(live_url, problem, "--gradient", str(bfloat16_gradient)))
    out = capsys.readouterr().out
    assert code == 0, out
    assert "gradient: PASS (atol 1e-05, rtol 0.05)" in out
    assert "note: gradient: bfloat16 values" in out


def test_a_bfloat16_npy_works_without_ml_dtypes(
    live_url: str, problem: dict[str, Path], bfloat16_gradient: Path
) -> None:
    """The command in a Python where `import ml_dtypes` fails, as after `pip install ./client`."""
    argv = check_args(live_url, problem, "--gradient", str(bfloat16_gradient))
    script = (
        "import sys; sys.modules['ml_dtypes'] = None  # import ml_dtypes: ImportError\n"
        "from gradcheck_client.cli import main\n"
        f"sys.exit(main({argv!r}))"
    )
    run = subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, "PYTHONPATH": str(CLIENT_SRC)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "gradient: PASS (atol 1e-05, rtol 0.05)" in run.stdout
    assert "note: gradient: bfloat16 values" in run.stdout


def test_class_indices_from_a_text_file(
    live_url: str, problem: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, text in (("y.csv", "0\n1\n2\n0\n"), ("y.txt", "0 1 2 0\n")):
        (tmp_path / name).write_text(text)
        argv = check_args(live_url, problem, "--gradient", str(problem["gradient"]))
        argv[argv.index("--labels") + 1] = str(tmp_path / name)
        assert main(argv) == 0, capsys.readouterr()


def test_an_unexpected_error_exits_2_not_1(
    problem: dict[str, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug of the client")

    monkeypatch.setattr(Client, "check", broken)
    with pytest.raises(SystemExit) as exited:
        main(check_args("http://127.0.0.1:1", problem, "--gradient", str(problem["gradient"])))
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "RuntimeError: a bug of the client" in err
    assert "no verdict" in err


def test_check_exits_1_and_prints_the_diagnosis(
    live_url: str, problem: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(check_args(live_url, problem, "--gradient", str(problem["summed"])))
    out = capsys.readouterr().out
    assert code == 1, out
    assert "gradient: FAIL" in out
    assert "diagnosis not_divided (gradient)" in out


def test_check_takes_the_loss_options(
    live_url: str, problem: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    # the unweighted gradient is wrong for a weighted loss
    code = main(
        check_args(
            live_url,
            problem,
            "--gradient",
            str(problem["gradient"]),
            "--weight",
            "1,2,0.5",
            "--label-smoothing",
            "0.1",
            "--reduction",
            "mean",
            "--ignore-index",
            "-1",
        )
    )
    assert code == 1
    assert "gradient: FAIL" in capsys.readouterr().out


def test_check_without_labels_checks_softmax_outputs(
    live_url: str, problem: dict[str, Path], tmp_path: Path
) -> None:
    e = np.exp(LOGITS - LOGITS.max(axis=1, keepdims=True))
    np.save(tmp_path / "p.npy", e / e.sum(axis=1, keepdims=True))
    argv = [
        "check",
        "--url",
        live_url,
        "--logits",
        str(problem["logits"]),
        "--probabilities",
        str(tmp_path / "p.npy"),
    ]
    assert main(argv) == 0


def test_check_exits_2_on_a_refused_request_with_its_detail(
    live_url: str, problem: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    np.save(tmp_path / "bad.npy", np.array([0, 7, 1, 1]))
    argv = [
        "check",
        "--url",
        live_url,
        "--logits",
        str(problem["logits"]),
        "--labels",
        str(tmp_path / "bad.npy"),
        "--gradient",
        str(problem["gradient"]),
    ]
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "HTTP 422" in err
    assert "labels[1]" in err


def test_check_exits_2_without_a_server(
    problem: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(SystemExit) as exited:
        main(check_args(url, problem, "--gradient", str(problem["gradient"])))
    assert exited.value.code == 2
    assert f"cannot reach the service: POST {url}/v1/cross-entropy" in capsys.readouterr().err


def test_check_exits_2_on_a_503_that_stays(
    stub: Stub, problem: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    stub.answers = [(503, {"Retry-After": "0"}, json_body({"detail": "the service is busy"}))]
    with pytest.raises(SystemExit) as exited:
        main(
            check_args(stub.url, problem, "--gradient", str(problem["gradient"]), "--retries", "2")
        )
    assert exited.value.code == 2
    assert "HTTP 503" in capsys.readouterr().err
    assert len(stub.requests) == 3  # the first try and 2 retries


@pytest.mark.parametrize(
    "argv",
    [
        ["check"],  # no --logits
        ["check", "--url", "http://127.0.0.1:1", "--logits", "z.npy", "--reduction", "avg"],
        ["frobnicate"],
    ],
)
def test_usage_errors_exit_2(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2


def test_nothing_to_check_missing_files_and_no_url_exit_2(
    problem: dict[str, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for argv in (
        check_args("http://127.0.0.1:1", problem),
        check_args("http://127.0.0.1:1", problem, "--gradient", "missing.npy"),
    ):
        with pytest.raises(SystemExit) as exited:
            main(argv)
        assert exited.value.code == 2
    monkeypatch.delenv("GRADCHECK_URL", raising=False)
    argv = ["check", "--logits", str(problem["logits"]), "--gradient", str(problem["gradient"])]
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    assert "GRADCHECK_URL" in capsys.readouterr().err


def test_url_and_key_come_from_the_environment(
    live_url: str, problem: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GRADCHECK_URL", live_url)
    monkeypatch.setenv("GRADCHECK_API_KEY", "unused-by-an-open-server")
    argv = [
        "check",
        "--logits",
        str(problem["logits"]),
        "--labels",
        str(problem["labels"]),
        "--gradient",
        str(problem["gradient"]),
    ]
    assert main(argv) == 0


ROSTER = "name,Email,section\nAda,Ada@Example.edu ,A\nBob, bob@example.edu,B\n,,C\n"


def test_roster_emails_are_normalised(tmp_path: Path) -> None:
    (tmp_path / "roster.csv").write_text(ROSTER)
    rows = read_roster(tmp_path / "roster.csv")
    assert [row["email"] for row in rows] == ["ada@example.edu", "bob@example.edu"]
    assert rows[0]["name"] == "Ada"
    assert rows[0]["section"] == "A"
    assert normalise_email(" Ada@Example.EDU ") == "ada@example.edu"
    assert seed_of("hw3", " Ada@Example.edu") == "hw3:ada@example.edu"


@pytest.mark.parametrize("result_format", ["native", "gradescope", "prairielearn"])
def test_problems_then_grade_a_roster(
    live_url: str, tmp_path: Path, result_format: str, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "roster.csv").write_text(ROSTER)
    problems, answers, results = tmp_path / "problems", tmp_path / "answers", tmp_path / "results"
    argv = [
        "problems",
        "--url",
        live_url,
        "--roster",
        str(tmp_path / "roster.csv"),
        "--out",
        str(problems),
        "--assignment",
        "hw3",
        "--batch-size",
        "2",
    ]
    assert main(argv) == 0
    written = sorted(p.name for p in problems.glob("*.json"))
    assert written == ["ada@example.edu.json", "bob@example.edu.json"]
    ada = json.loads((problems / "ada@example.edu.json").read_text())
    assert ada["seed"] == "hw3:ada@example.edu"
    assert ada["roster"]["name"] == "Ada"
    with Client(live_url) as service:
        same = service.problems("hw3:ada@example.edu", batch_size=2)
        assert same.problem_id == ada["problem_id"]
        right = service.cross_entropy(same.logits, same.labels, include=["loss", "gradient"])
    assert right.gradient is not None
    answers.mkdir()
    (answers / "ada@example.edu.json").write_text(
        json.dumps({"loss": right.loss, "gradient": right.gradient.tolist()})
    )
    (answers / "bob@example.edu.json").write_text(json.dumps({"loss": 0.0}))
    capsys.readouterr()
    argv = [
        "grade",
        "--url",
        live_url,
        "--answers",
        str(answers),
        "--problems",
        str(problems),
        "--out",
        str(results),
        "--format",
        result_format,
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "ada@example.edu:" in out
    ada_result = json.loads((results / "ada@example.edu.json").read_text())
    bob_result = json.loads((results / "bob@example.edu.json").read_text())
    if result_format == "prairielearn":
        assert (ada_result["score"], bob_result["score"]) == (1.0, 0.0)
    else:
        assert ada_result["score"] == 2.0
        assert bob_result["score"] == 0.0
    if result_format == "gradescope":
        assert "tests" in ada_result

    # an answer without a problem is reported and makes the exit code 2
    (answers / "eve@example.edu.json").write_text(json.dumps({"loss": 0.0}))
    assert main(argv) == 2
    assert "eve@example.edu: no problem" in capsys.readouterr().err


def test_problems_needs_an_email_column(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "roster.csv").write_text("name,mail\nAda,ada@example.edu\n")
    argv = [
        "problems",
        "--url",
        "http://127.0.0.1:1",
        "--roster",
        str(tmp_path / "roster.csv"),
        "--out",
        str(tmp_path / "p"),
        "--assignment",
        "hw3",
    ]
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    assert "email" in capsys.readouterr().err
