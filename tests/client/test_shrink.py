"""Shrinking without a service (`gradcheck_client.shrink`): what each step keeps, that labels stay
valid (for the LM head's requests too), that the budget stops it, and that the reproduction is
Python that compiles."""

from typing import Any

import numpy as np
import pytest
from gradcheck_client.shrink import (
    LinearShrinker,
    OutOfBudget,
    Shrinker,
    function_import,
    keep_classes,
    reproduction,
    shape_text,
)
from gradcheck_client.suites import Suite, SuiteError
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.client import implementations as impl

RNG = np.random.default_rng(7)
LOGITS = np.round(RNG.normal(size=(6, 7)), 4)
LOGITS[4, 3] = 1000.5  # the one entry a predicate below cares about
LABELS = np.array([0, 6, 2, -100, 5, 1])


def request() -> dict[str, Any]:
    return {"logits": LOGITS.copy(), "labels": LABELS.copy(), "ignore_index": -100}


def overflows(smaller: dict[str, Any]) -> bool:
    """Stands for a function whose exp overflows: fails while a logit exceeds 709."""
    return bool(np.abs(smaller["logits"]).max() > 709)


def test_an_overflow_shrinks_to_its_row_and_its_large_logit() -> None:
    smallest = Shrinker(request(), "float64", overflows).run()
    logits = smallest["logits"]
    assert logits.shape == (1, 2)
    assert logits.max() == 1000.0  # rounded, and still above 709
    assert np.count_nonzero(logits) == 1
    label = int(smallest["labels"][0])
    assert 0 <= label < 2


def test_classes_that_are_labels_are_kept_and_labels_renumbered() -> None:
    kept = keep_classes({**request(), "labels": np.array([6, 2, 2, -100, 6, 2])}, [2, 6])
    assert kept["labels"].tolist() == [1, 0, 0, -100, 1, 0]
    assert np.array_equal(kept["logits"], LOGITS[:, [2, 6]])

    def needs_label_six(smaller: dict[str, Any]) -> bool:
        return bool(smaller["logits"].shape[0] >= 2)

    smallest = Shrinker(request(), "float64", needs_label_six).run()
    classes = smallest["logits"].shape[1]
    labels = smallest["labels"]
    assert all(label == -100 or 0 <= label < classes for label in labels)
    assert smallest["logits"].shape[0] == 2


def test_float32_values_stay_exact_in_float32() -> None:
    def any_failure(smaller: dict[str, Any]) -> bool:
        return bool(smaller["logits"].shape[0] >= 1)

    start = {**request(), "logits": LOGITS.astype(np.float32).astype(np.float64)}
    smallest = Shrinker(start, "float32", any_failure).run()
    logits = smallest["logits"]
    assert np.array_equal(logits.astype(np.float32).astype(np.float64), logits)


def test_the_budget_stops_shrinking_with_the_smallest_found_so_far() -> None:
    calls = 0

    def limited(smaller: dict[str, Any]) -> bool:
        nonlocal calls
        if calls >= 3:
            raise OutOfBudget
        calls += 1
        return True

    smallest = Shrinker(request(), "float64", limited).run()
    assert calls == 3
    assert 1 <= smallest["logits"].shape[0] < LOGITS.shape[0]


def test_shrinking_is_deterministic() -> None:
    first = Shrinker(request(), "float64", overflows).run()
    second = Shrinker(request(), "float64", overflows).run()
    assert np.array_equal(first["logits"], second["logits"])
    assert np.array_equal(first["labels"], second["labels"])


@pytest.mark.parametrize("framework", ["numpy", "torch"])
def test_the_reproduction_compiles_and_imports_the_function(framework: str) -> None:
    shrunk = {**request(), "weight": np.linspace(0.5, 2, 7), "reduction": "sum"}
    text = reproduction(
        impl.cross_entropy, framework, shrunk, "float32", ["weight", "reduction"], "http://x"
    )
    compile(text, "reproduction", "exec")
    assert "from tests.client.implementations import cross_entropy" in text
    assert "reduction='sum'" in text
    assert ("torch.tensor(" in text) == (framework == "torch")
    assert function_import(lambda z, y: (z, y)) == ("# fn: the function you tested", "fn")


def test_a_suite_document_is_checked() -> None:
    with pytest.raises(SuiteError, match="expected an object with a `cases` list"):
        Suite.from_json({"name": "x"})
    case = {"name": "a", "request": {"logits": [[0.0, 1.0]], "labels": [0]}}
    with pytest.raises(SuiteError, match="case names repeat"):
        Suite.from_json({"cases": [case, case]})


@settings(max_examples=40, deadline=None)
@given(
    rows=st.integers(1, 6),
    classes=st.integers(2, 7),
    seed=st.integers(0, 2**16),
    threshold=st.floats(0.0, 3.0),
)
def test_the_smallest_problem_still_fails_and_keeps_its_labels_valid(
    rows: int, classes: int, seed: int, threshold: float
) -> None:
    rng = np.random.default_rng(seed)
    start = {
        "logits": np.round(rng.normal(0, 2, (rows, classes)), 3),
        "labels": rng.integers(0, classes, rows),
    }
    start["logits"][0, 0] = threshold + 1.0  # fails from the start

    def fails(smaller: dict[str, Any]) -> bool:
        """Stands for a bug that shows where some logit exceeds the threshold."""
        return bool(smaller["logits"].max() > threshold)

    smallest = Shrinker(start, "float64", fails).run()
    assert fails(smallest)
    shape = smallest["logits"].shape
    assert shape[0] <= rows and 2 <= shape[1] <= classes
    assert ((smallest["labels"] >= 0) & (smallest["labels"] < shape[1])).all()
    assert shape == (1, 2)  # one row, its label and its largest logit


@settings(max_examples=40, deadline=None)
@given(
    layout=st.sampled_from(["rows", "k_dim", "no_batch"]),
    probability=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_every_layout_shrinks_to_a_consistent_request(
    layout: str, probability: bool, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    shape = {"rows": (4, 5), "k_dim": (3, 4, 2), "no_batch": (6,)}[layout]
    logits = np.round(rng.normal(0, 2, shape), 3)
    logits.reshape(-1)[-1] = 50.0
    axis = 0 if layout == "no_batch" else 1
    if probability:
        raw = rng.random(shape)
        labels: Any = raw / raw.sum(axis=axis, keepdims=True)
    else:
        labels = rng.integers(0, shape[axis], np.delete(np.array(shape), axis).tolist())
    start = {"logits": logits, "labels": labels}

    def fails(smaller: dict[str, Any]) -> bool:
        return bool(smaller["logits"].max() > 10)

    smallest = Shrinker(start, "float64", fails).run()
    assert fails(smallest)
    shrunk, kept = smallest["logits"], smallest["labels"]
    assert shrunk.ndim == logits.ndim
    if probability:
        assert kept.shape == shrunk.shape
    else:
        assert kept.shape == tuple(np.delete(np.array(shrunk.shape), axis).tolist())
        assert ((kept >= 0) & (kept < shrunk.shape[axis])).all()
    assert shrunk.shape[axis] >= 2


def head_request(causal: bool = False) -> dict[str, Any]:
    rng = np.random.default_rng(3)
    x = np.round(rng.normal(size=(8, 5)), 4)
    labels = np.array([0, 6, 2, -100, 5, 1, 6, 3])
    fields: dict[str, Any] = {
        "input": x.reshape(2, 4, 5) if causal else x,
        "linear_weight": np.round(rng.normal(size=(7, 5)), 4),
        "linear_bias": np.arange(7.0),
        "weight": np.arange(1.0, 8.0),
        "labels": labels.reshape(2, 4) if causal else labels,
        "ignore_index": -100,
    }
    if causal:
        fields["causal_shift"] = True
    return fields


def test_a_head_shrinks_positions_classes_and_features_together() -> None:
    calls: list[dict[str, Any]] = []

    def still_fails(smaller: dict[str, Any]) -> bool:
        calls.append(smaller)
        # "fails" while the class whose bias is 5.0 is a label of some kept position
        labels = smaller["labels"][smaller["labels"] != -100]
        return bool((smaller["linear_bias"][labels] == 5.0).any())

    smallest = LinearShrinker(head_request(), "float64", still_fails).run()
    assert smallest["input"].shape == (1, 1)
    assert smallest["labels"].shape == (1,)
    classes = smallest["linear_weight"].shape[0]
    assert classes == 2 and smallest["linear_weight"].shape[1] == 1
    assert smallest["linear_bias"].shape == smallest["weight"].shape == (classes,)
    label = int(smallest["labels"][0])
    assert smallest["linear_bias"][label] == 5.0
    assert smallest["weight"][label] == 6.0  # the class weights follow the classes
    assert shape_text(smallest) == "input 1×1, weight 2×1"
    assert len(calls) < 100


def test_a_causal_head_keeps_a_pair_of_positions_per_sequence() -> None:
    def still_fails(smaller: dict[str, Any]) -> bool:
        return bool(smaller["input"].ndim == 3)

    smallest = LinearShrinker(head_request(causal=True), "float64", still_fails).run()
    assert smallest["input"].shape == (1, 2, 1)
    assert smallest["labels"].shape == (1, 2)
    kept = smallest["labels"][smallest["labels"] != -100]
    assert ((kept >= 0) & (kept < smallest["linear_weight"].shape[0])).all()
