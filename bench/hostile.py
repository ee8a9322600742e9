"""Issue 26's acceptance figures: each hostile body of its table sent to a live uvicorn on
127.0.0.1, with /healthz asked every 50 ms meanwhile.

    python -m bench.hostile            # prints one line per row, writes test-artifacts/hostile.json
    python -m bench.hostile --jacobians   # only the six maximal Jacobian requests

For each row: the status, the seconds to the answer, the error body's size, the server's
resident memory growth (VmHWM, its peak, against the idle server) and the slowest /healthz
answer while it was served. Wall-clock figures want a quiet machine (the tests assert the
mechanisms instead: tests/api/test_hostile_bodies.py). Loopback only.
"""

import asyncio
import json
import subprocess
import sys
import time
import zipfile
from typing import Any

import httpx
import numpy as np

from bench.server import running_server
from tests import hostile_bodies as hostile
from tests.helpers import ROOT, npy
from tests.hostile_bodies import NPZ, archive

APP = "app.main:app"
"""The service itself (not `bench.app`'s additions)."""
MiB = 1 << 20
JSON = "application/json"


def hostile_rows() -> list[tuple[str, str, bytes, str]]:
    """(row, path, body, content type) of issue 26's table: the bodies
    tests/api/test_hostile_bodies.py sends (tests/hostile_bodies.py)."""
    return [
        ("bzip2 bomb (320 MiB)", "/v1/cross-entropy", hostile.bomb(zipfile.ZIP_BZIP2), NPZ),
        ("lzma bomb (320 MiB)", "/v1/cross-entropy", hostile.bomb(zipfile.ZIP_LZMA), NPZ),
        ("deflate declaring 1000 B", "/v1/cross-entropy", hostile.bomb(zipfile.ZIP_DEFLATED), NPZ),
        ("zeroed CRC", "/v1/cross-entropy", hostile.forged(crc=0), NPZ),
        ("method 99", "/v1/cross-entropy", hostile.forged(method=99), NPZ),
        ("encryption flag", "/v1/cross-entropy", hostile.forged(flags=1), NPZ),
        ("shape (4000000000,)", "/v1/cross-entropy", hostile.header_only((4_000_000_000,)), NPZ),
        (
            "shape (200000, 200000)",
            "/v1/cross-entropy",
            hostile.header_only((200_000, 200_000)),
            NPZ,
        ),
        ("shape (10**30,)", "/v1/cross-entropy", hostile.header_only((10**30,)), NPZ),
        ("request.json 3000 deep", "/v1/cross-entropy", hostile.nested_request_json(3000), NPZ),
        ("logits.npy twice", "/v1/cross-entropy", hostile.member_twice(), NPZ),
        (
            'unterminated \\" x 32,000',
            "/v1/grade/batch",
            hostile.unterminated_escaped_quotes(32_000),
            JSON,
        ),
        (
            'unterminated \\" x 500,000 (1 MB)',
            "/v1/grade/batch",
            hostile.unterminated_escaped_quotes(500_000),
            JSON,
        ),
        ("ite\\u006ds x 500,000", "/v1/grade/batch", hostile.escaped_items_key(500_000), JSON),
        ("300,000 boolean labels", "/v1/cross-entropy", hostile.boolean_labels(300_000), JSON),
        ("student answer 250 deep", "/v1/grade", hostile.deep_student_answer(250), JSON),
    ]


POLLER = """
import sys, time, httpx
slowest = 0.0
with httpx.Client(base_url=sys.argv[1], timeout=60) as client:
    while True:
        started = time.monotonic()
        client.get("/healthz")
        slowest = max(slowest, time.monotonic() - started)
        print(slowest, flush=True)
        time.sleep(0.05)
"""
"""Asks /healthz every 50 ms from its own process (the client reading large responses must not
delay the probe), printing the slowest answer so far."""


async def _healthz_while(url: str, work: Any) -> tuple[Any, float]:
    """work's result and the slowest /healthz answer while it ran."""
    poller = subprocess.Popen(
        [sys.executable, "-c", POLLER, url], stdout=subprocess.PIPE, text=True
    )
    assert poller.stdout is not None
    first = await asyncio.to_thread(poller.stdout.readline)  # the poller answers before work
    try:
        result = await work
        await asyncio.sleep(0.1)
    finally:
        poller.terminate()
        output, _ = poller.communicate(timeout=20)
    answers = (first + output).split()
    return result, float(answers[-1]) if answers else float("nan")


async def measure_rows() -> list[dict[str, Any]]:
    rows = []
    for name, path, body, content_type in hostile_rows():
        with running_server(app=APP) as server:
            idle = server.rss_bytes()

            async def send(
                url: str = server.url, path: str = path, body: bytes = body, ct: str = content_type
            ) -> Any:
                async with httpx.AsyncClient(base_url=url, timeout=120) as client:
                    started = time.monotonic()
                    response = await client.post(path, content=body, headers={"content-type": ct})
                    return response, time.monotonic() - started

            (response, seconds), healthz = await _healthz_while(server.url, send())
            row = {
                "row": name,
                "body_bytes": len(body),
                "status": response.status_code,
                "seconds": round(seconds, 3),
                "error_body_bytes": len(response.content) if response.status_code >= 400 else 0,
                "memory_growth_mib": round((server.peak_rss_bytes() - idle) / MiB, 1),
                "healthz_max_seconds": round(healthz, 3),
            }
            if name.startswith("student"):
                row["score"] = response.json().get("score")
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def _jacobian_body(rows: int, include: list[str]) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    return {
        "logits": rng.standard_normal((rows, 316)).round(4).tolist(),
        "labels": rng.integers(0, 316, rows).tolist(),
        "include": include,
    }


MAXIMAL_JACOBIANS = {
    "79 x 316, gradient and jacobian": _jacobian_body(79, ["gradient", "jacobian"]),
    "39 x 316, gradient and both Jacobians": _jacobian_body(
        39, ["gradient", "jacobian", "numeric_jacobian"]
    ),
}
"""Requests at the output limit (GRADCHECK_MAX_OUTPUT_ENTRIES, 8,000,000 numbers)."""


async def six_jacobians() -> list[dict[str, Any]]:
    rows = []
    for name, body in MAXIMAL_JACOBIANS.items():
        with running_server(app=APP) as server:
            url = server.url
            async with httpx.AsyncClient(base_url=url, timeout=300) as client:

                async def all_six(body: dict[str, Any] = body) -> list[int]:
                    answers = await asyncio.gather(
                        *(client.post("/v1/cross-entropy", json=body) for _ in range(6))
                    )
                    return [answer.status_code for answer in answers]

                started = time.monotonic()
                statuses, healthz = await _healthz_while(url, all_six())
        row = {
            "row": f"six maximal Jacobian requests ({name})",
            "statuses": statuses,
            "seconds": round(time.monotonic() - started, 3),
            "healthz_max_seconds": round(healthz, 3),
        }
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


async def four_numeric_only() -> dict[str, Any]:
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((30, 262_144)).astype(np.float32)
    labels = rng.integers(0, 262_144, 30)
    body = archive(
        [
            ("logits.npy", npy(logits)),
            ("labels.npy", npy(labels)),
            ("request.json", json.dumps({"include": ["numeric_gradient"]}).encode()),
        ]
    )
    budget = 800 << 20
    with running_server({"GRADCHECK_MEMORY_BUDGET_BYTES": str(budget)}, app=APP) as server:
        url, idle = server.url, server.rss_bytes()
        async with httpx.AsyncClient(base_url=url, timeout=300) as client:

            async def four() -> list[int]:
                answers = await asyncio.gather(
                    *(
                        client.post(
                            "/v1/cross-entropy", content=body, headers={"content-type": NPZ}
                        )
                        for _ in range(4)
                    )
                )
                return [answer.status_code for answer in answers]

            statuses, healthz = await _healthz_while(url, four())
        growth = (server.peak_rss_bytes() - idle) / MiB
    row = {
        "row": "four numeric_gradient-only .npz (30, 262144) float32 under 800 MiB",
        "statuses": statuses,
        "memory_growth_mib": round(growth, 1),
        "budget_mib": budget >> 20,
        "healthz_max_seconds": round(healthz, 3),
    }
    print(json.dumps(row), flush=True)
    return row


async def ten_timeouts() -> dict[str, Any]:
    rng = np.random.default_rng(0)
    body = archive(
        [
            ("logits.npy", npy(rng.standard_normal((256, 4000)))),
            ("labels.npy", npy(rng.integers(0, 4000, 256))),
            (
                "request.json",
                json.dumps(
                    {"include": ["loss", "numeric_gradient"], "numeric": {"method": "five_point"}}
                ).encode(),
            ),
        ]
    )
    with running_server({"GRADCHECK_REQUEST_TIMEOUT_SECONDS": "1"}, app=APP) as server:
        url = server.url
        rss = []
        statuses = []
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            for _ in range(10):
                response = await client.post(
                    "/v1/cross-entropy", content=body, headers={"content-type": NPZ}
                )
                statuses.append(response.status_code)
                for _ in range(100):  # until the abandoned worker stopped
                    metrics = (await client.get("/metrics")).text
                    line = [
                        entry
                        for entry in metrics.splitlines()
                        if entry.startswith("gradcheck_memory_in_flight_bytes ")
                    ]
                    if line and float(line[0].split()[1]) == 0:
                        break
                    await asyncio.sleep(0.1)
                rss.append(server.rss_bytes() >> 20)
    row = {
        "row": "ten 504s in a row",
        "statuses": statuses,
        "rss_mib_after_each": rss,
        "in_flight_after": 0 if line and float(line[0].split()[1]) == 0 else line,
    }
    print(json.dumps(row), flush=True)
    return row


async def main() -> None:
    results = {
        "rows": [] if "--jacobians" in sys.argv else await measure_rows(),
        "six_jacobians": await six_jacobians(),
        "four_numeric_only": {} if "--jacobians" in sys.argv else await four_numeric_only(),
        "ten_timeouts": {} if "--jacobians" in sys.argv else await ten_timeouts(),
        "note": "loopback, one uvicorn worker, a shared 2-core machine: not quiet-machine figures",
    }
    out = ROOT / "test-artifacts" / "hostile.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
