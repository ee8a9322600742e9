"""`gradcheck check --input … --linear-weight …`: an LM head's gradients checked through
/v1/linear-cross-entropy against a live server (exit 0 right, 1 with the mistake named, 2 when
the head is incomplete)."""

from pathlib import Path

import numpy as np
import pytest
from gradcheck_client.cli import main

pytestmark = pytest.mark.live


@pytest.fixture
def head(tmp_path: Path) -> dict[str, Path]:
    """A head, its labels, and its right and last-chunk-only weight gradients as .npy files."""
    rng = np.random.default_rng(0)
    n, d, c = 96, 5, 7
    x, w, b = rng.normal(size=(n, d)), rng.normal(size=(c, d)), rng.normal(size=c)
    labels = rng.integers(0, c, size=n)
    z = x @ w.T + b
    a = np.exp(z - z.max(axis=1, keepdims=True))
    a /= a.sum(axis=1, keepdims=True)
    g = a.copy()
    g[np.arange(n), labels] -= 1
    g /= n  # mean over every token
    arrays = {
        "input": x,
        "linear_weight": w,
        "linear_bias": b,
        "labels": labels,
        "right": g.T @ x,
        "last_chunk": g[64:].T @ x[64:],
        "input_gradient": (g @ w).astype(np.float32),
    }
    files = {name: tmp_path / f"{name}.npy" for name in arrays}
    for name, array in arrays.items():
        np.save(files[name], array)
    return files


def head_args(url: str, files: dict[str, Path], *extra: str) -> list[str]:
    return [
        "check",
        "--url",
        url,
        "--input",
        str(files["input"]),
        "--linear-weight",
        str(files["linear_weight"]),
        "--linear-bias",
        str(files["linear_bias"]),
        "--labels",
        str(files["labels"]),
        *extra,
    ]


def test_a_right_head_exits_0(
    live_url: str, head: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    extra = ("--linear-weight-gradient", str(head["right"]))
    code = main(head_args(live_url, head, *extra, "--input-gradient", str(head["input_gradient"])))
    out = capsys.readouterr().out
    assert code == 0, out
    # the loosest dtype's row of the table (a float32 output was sent) applies to both
    assert "linear_weight_gradient: PASS (atol 1e-08, rtol 1e-05)" in out
    assert "input_gradient: PASS (atol 1e-08, rtol 1e-05)" in out


def test_a_gradient_of_the_last_chunk_exits_1_named(
    live_url: str, head: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(head_args(live_url, head, "--linear-weight-gradient", str(head["last_chunk"])))
    out = capsys.readouterr().out
    assert code == 1, out
    assert "diagnosis weight_gradient_not_accumulated (linear_weight_gradient)" in out


def test_an_incomplete_head_exits_2(
    head: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    args = [
        "check",
        "--input",
        str(head["input"]),
        "--loss",
        "1.0",
        "--labels",
        str(head["labels"]),
    ]
    with pytest.raises(SystemExit) as exited:
        main(args)
    assert exited.value.code == 2
    assert "--input needs --linear-weight and --labels" in capsys.readouterr().err
