"""Grading at course scale against a live server: the roster script hands out and grades a class
in one call, and a million-submission body is a fast 413 that leaves the server's memory as it
was."""

import csv
import json
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.helpers import ROOT, require
from tests.live.conftest import ServerFactory

pytestmark = pytest.mark.live

ROSTER = ROOT / "examples" / "roster" / "roster.py"
API_KEY = "roster-course-key-0123456789"
SYSTEM_PYTHON = shutil.which("python3")


def roster(url: str, *args: str | Path) -> subprocess.CompletedProcess[str]:
    require(SYSTEM_PYTHON is not None, "python3 is not on PATH")
    return subprocess.run(
        [str(SYSTEM_PYTHON), str(ROSTER), "--url", url, "--api-key", API_KEY, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )


def right_answer(url: str, problem: dict[str, Any]) -> dict[str, Any]:
    keys = ("logits", "labels", "weight", "ignore_index", "reduction", "label_smoothing")
    body = {key: problem[key] for key in keys} | {"include": ["loss", "gradient"]}
    response = httpx.post(url + "/v1/cross-entropy", json=body, headers={"X-API-Key": API_KEY})
    values = response.json()
    return {"loss": values["loss"], "gradient": values["gradient"]}


def test_the_roster_script_hands_out_and_grades_a_class(
    start_server: ServerFactory, tmp_path: Path
) -> None:
    server = start_server(GRADCHECK_API_KEYS=API_KEY, GRADCHECK_SECRET_KEY="r" * 40)
    csv_path = tmp_path / "roster.csv"
    csv_path.write_text(
        "email,name,section\n"
        "ada@example.edu,Ada,A\n"
        " Bob@Example.edu ,Bob,A\n"
        "cy@example.edu,Cy,B\n"
        "di@example.edu,Di,B\n"
        "eve@example.edu,Eve,B\n"
    )
    problems, answers = tmp_path / "problems", tmp_path / "answers"
    roster(server.url, "hand-out", csv_path, problems, "--assignment", "hw3")
    assert sorted(p.name for p in problems.iterdir()) == [
        "ada@example.edu.json",
        "bob@example.edu.json",
        "cy@example.edu.json",
        "di@example.edu.json",
        "eve@example.edu.json",
    ]
    handed = {p.stem: json.loads(p.read_text()) for p in problems.iterdir()}
    assert handed["bob@example.edu"]["parameters"]["seed"] == "hw3:bob@example.edu"
    answers.mkdir()
    for email in ("ada@example.edu", "bob@example.edu"):
        answer = right_answer(server.url, handed[email])
        (answers / f"{email}.json").write_text(json.dumps(answer))
    # cy hands in ada's answer; di hands in nothing
    (answers / "cy@example.edu.json").write_text((answers / "ada@example.edu.json").read_text())
    # eve flips the sign of both parts (y − a): the class summary counts it
    flipped = right_answer(server.url, handed["eve@example.edu"])
    flipped = {"loss": -flipped["loss"], "gradient": (-np.asarray(flipped["gradient"])).tolist()}
    (answers / "eve@example.edu.json").write_text(json.dumps(flipped))
    grades = tmp_path / "grades.csv"
    printed = roster(server.url, "grade", csv_path, problems, answers, grades).stdout
    with grades.open() as file:
        rows = {row["name"]: row for row in csv.DictReader(file)}
    assert list(next(iter(rows.values()))) == [
        "email",
        "name",
        "section",
        "score",
        "max_score",
        "message",
    ]
    scores = {name: float(row["score"]) for name, row in rows.items()}
    assert (scores["Ada"], scores["Bob"], scores["Di"]) == (3.0, 3.0, 0.0)
    assert float(rows["Cy"]["score"]) < 3.0
    assert rows["Di"]["message"] == "no answer handed in"
    assert rows["Bob"]["section"] == "A"
    assert scores["Eve"] == 0.0
    with (tmp_path / "grades-summary.csv").open() as file:
        summary = {(row["part"], row["what"]): row for row in csv.DictReader(file)}
    for part in ("loss", "gradient"):
        assert summary[part, "sign_flipped"] == {
            "part": part,
            "what": "sign_flipped",
            "count": "1",
            "submissions": "4",
            "percent": "25",
        }
        assert summary[part, "passed"]["count"] == "2"
    assert re.search(r"gradient\s+sign_flipped\s+1 of 4\s+25 %", printed), printed


def test_the_roster_script_reports_a_refusal(start_server: ServerFactory, tmp_path: Path) -> None:
    server = start_server(GRADCHECK_API_KEYS="another-key-0123456789")
    csv_path = tmp_path / "roster.csv"
    csv_path.write_text("email\nada@example.edu\n")
    with pytest.raises(subprocess.CalledProcessError) as error:
        roster(server.url, "hand-out", csv_path, tmp_path / "problems")
    assert "HTTP 401" in error.value.stderr


def resident_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_a_million_submissions_are_a_fast_413_without_memory_growth(
    start_server: ServerFactory,
) -> None:
    require(Path("/proc/self/status").exists(), "needs /proc")
    server = start_server()
    body = (
        b'{"problem": {"logits": [[1, 2]], "labels": [0]}, "submissions": ['
        + b",".join([b"0"] * 1_000_000)
        + b"]}"
    )
    headers = {"content-type": "application/json"}
    with httpx.Client(base_url=server.url, timeout=60) as client:
        client.post("/v1/grade/batch", content=body[:1000] + b"]}", headers=headers)  # warm up
        before = resident_bytes(server.process.pid)
        timings = []
        for _ in range(5):
            started = time.perf_counter()
            response = client.post("/v1/grade/batch", content=body, headers=headers)
            timings.append(time.perf_counter() - started)
            assert response.status_code == 413
        after = resident_bytes(server.process.pid)
    print(
        f"million-zero body: {min(timings) * 1000:.1f} ms, RSS {(after - before) / 2**20:+.1f} MiB"
    )
    assert after - before < 16 * 2**20  # the 2 MB body's own buffers at most
