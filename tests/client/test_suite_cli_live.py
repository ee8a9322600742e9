"""`gradcheck test package.module:function` against a live server, in-process (`main(argv)`):
exit 0 for a right function, 1 with the failing case, its reproduction and JUnit XML for a broken
one, 2 without a verdict (no module, no service, unreadable suite file)."""

import json
from pathlib import Path
from xml.etree import ElementTree

import httpx
import numpy as np
import pytest
from gradcheck_client.cli import main

from tests.helpers import free_port

pytestmark = pytest.mark.live

MODULE = "tests.client.implementations"


def test_a_right_function_exits_0(live_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["test", f"{MODULE}:softmax_loss", "--url", live_url])
    out = capsys.readouterr().out
    assert code == 0, out
    assert out.splitlines()[0] == "suite basics v1: 10 passed, 0 failed, 0 not applicable"
    assert out.rstrip().endswith("passed")


@pytest.mark.parametrize(
    ("bug", "suite", "case"),
    [
        ("no_max_shift", "basics", "logits_near_1e3"),
        ("unfused_backward", "basics", "spread_800"),
        ("smoothing_over_c_minus_1", "torch", "label_smoothing"),
        ("mean_over_all_rows", "torch", "ignore_index"),
        ("summed_gradient", "basics", "small_random"),
    ],
)
def test_a_broken_function_exits_1_with_its_reproduction(
    live_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    bug: str,
    suite: str,
    case: str,
) -> None:
    report = tmp_path / "report.xml"
    argv = ["test", f"{MODULE}:{bug}", "--suite", suite, "--url", live_url]
    code = main([*argv, "--junit-xml", str(report)])
    out = capsys.readouterr().out
    assert code == 1, out
    assert f"--- {case}: " in out
    assert f"from {MODULE} import {bug}" in out
    assert out.rstrip().endswith("failed")
    root = ElementTree.parse(report).getroot()
    assert root.get("name") == f"gradcheck.{suite}"
    failed = {tc.get("name") for tc in root if tc.find("failure") is not None}
    skipped = {tc.get("name") for tc in root if tc.find("skipped") is not None}
    assert case in failed
    assert int(root.get("failures", "")) == len(failed)
    assert int(root.get("skipped", "")) == len(skipped)
    reproduction = next(tc for tc in root if tc.get("name") == case).find("failure")
    assert reproduction is not None and "logits = np.array(" in (reproduction.text or "")
    logits_line = next(
        line for line in (reproduction.text or "").splitlines() if line.startswith("logits = ")
    )
    rows = np.array(eval(logits_line.split("np.array(", 1)[1].rsplit(", dtype", 1)[0]))
    assert rows.shape[0] <= 3 and rows.shape[1] <= 5


def test_fixed_options_and_a_course_suite_file(
    live_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    served = httpx.get(f"{live_url}/v1/suites/torch", timeout=30).json()
    course = {"name": "practice", "version": "1", "cases": served["cases"][:4]}
    path = tmp_path / "practice.json"
    path.write_text(json.dumps(course))
    argv = ["test", f"{MODULE}:cross_entropy", "--suite-file", str(path), "--url", live_url]
    assert main(argv) == 0
    assert capsys.readouterr().out.startswith("suite practice v1: 4 passed")
    argv = ["test", f"{MODULE}:softmax_loss", "--url", live_url, "--option", "reduction=sum"]
    assert main(argv) == 1  # a mean held to the sum: every case with N > 1 fails
    out = capsys.readouterr().out
    assert "one_sample       pass" in out


def test_no_verdict_exits_2(
    live_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as missing:
        main(["test", "no_such_module_here:fn", "--url", live_url])
    assert missing.value.code == 2
    assert "cannot import no_such_module_here" in capsys.readouterr().err
    with pytest.raises(SystemExit) as unreachable:
        main(["test", f"{MODULE}:softmax_loss", "--url", f"http://127.0.0.1:{free_port()}"])
    assert unreachable.value.code == 2
    assert "cannot reach the service" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text('{"cases": [{"name": "x"}]}')
    with pytest.raises(SystemExit) as unreadable:
        main(["test", f"{MODULE}:softmax_loss", "--suite-file", str(bad), "--url", live_url])
    assert unreadable.value.code == 2
    assert "neither a request nor a request_url" in capsys.readouterr().err


HEAD_MODULE = "tests.client.lm_head_implementations"


def test_an_lm_head_runs_from_the_command_line(
    live_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    right = ["test", f"{HEAD_MODULE}:chunked_linear_cross_entropy", "--suite", "lm_head"]
    assert main([*right, "--url", live_url]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "suite lm_head v1: 16 passed, 0 failed, 0 not applicable"
    report = tmp_path / "report.xml"
    broken = ["test", f"{HEAD_MODULE}:labels_not_shifted", "--suite", "lm_head"]
    assert main([*broken, "--url", live_url, "--junit-xml", str(report)]) == 1
    out = capsys.readouterr().out
    assert "--- causal_shift: " in out
    assert "[labels_not_shifted]" in out
    assert f"from {HEAD_MODULE} import labels_not_shifted" in out
    root = ElementTree.parse(report).getroot()
    assert root.get("name") == "gradcheck.lm_head"
    failed = [tc for tc in root if tc.find("failure") is not None]
    assert [tc.get("name") for tc in failed] == ["causal_shift"]
    text = failed[0].find("failure").text or ""  # type: ignore[union-attr]
    assert "input = np.array(" in text and "service.linear_cross_entropy(" in text
