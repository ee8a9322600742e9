"""The suites' cases (`app.numerics.suites`): deterministic, exact in their dtype, shaped as
their features say, and each hard for the reason it gives (checked on the arrays themselves)."""

import numpy as np
import pytest

from app.numerics.suites import (
    BUILDERS,
    CASTS,
    CROSS_ENTROPY,
    LINEAR_CROSS_ENTROPY,
    LINEAR_OPTION_DEFAULTS,
    OPTION_DEFAULTS,
    Case,
    Feature,
    LinearCase,
    exact_in,
    suite,
)

ALL_CASES = [(name, case) for name in BUILDERS for case in BUILDERS[name]().cases]
CE_CASES = [(name, case) for name, case in ALL_CASES if isinstance(case, Case)]
HEAD_CASES = [case for _, case in ALL_CASES if isinstance(case, LinearCase)]


def ce_case(suite_name: str, name: str) -> Case:
    """A cross-entropy case of a served suite, by name."""
    found = suite(suite_name)
    assert found is not None
    case = found.case(name)
    assert isinstance(case, Case)
    return case


def test_every_build_gives_the_same_cases() -> None:
    for name, builder in BUILDERS.items():
        first, second = builder(), builder()
        assert first.version == second.version
        for a, b in zip(first.cases, second.cases, strict=True):
            assert type(a) is type(b) and a.name == b.name
            assert dict(a.options) == dict(b.options)
            for field, value in a.request().items():
                assert np.array_equal(value, b.request()[field]), (a.name, field)
        assert suite(name) is suite(name)


def test_case_names_are_unique_within_each_suite() -> None:
    for builder in BUILDERS.values():
        names = [case.name for case in builder().cases]
        assert len(names) == len(set(names))


def test_every_case_names_its_endpoint() -> None:
    for name, case in ALL_CASES:
        expected = LINEAR_CROSS_ENTROPY if name == "lm_head" else CROSS_ENTROPY
        assert case.endpoint == expected
        assert isinstance(case, LinearCase if name == "lm_head" else Case)


@pytest.mark.parametrize(("suite_name", "case"), CE_CASES, ids=lambda x: getattr(x, "name", x))
def test_a_case_is_exact_in_its_dtype_and_shaped_as_its_features_say(
    suite_name: str, case: object
) -> None:
    assert isinstance(case, Case)
    assert not case.logits.flags.writeable
    assert case.dtype in CASTS
    assert np.array_equal(exact_in(case.logits, case.dtype), case.logits)
    assert np.isfinite(case.logits).all()
    assert set(case.options) <= set(OPTION_DEFAULTS)
    assert "\n" not in case.reason
    probability = case.labels.ndim == case.logits.ndim
    assert (Feature.PROBABILITY_TARGETS in case.features) == probability
    assert (Feature.NO_BATCH in case.features) == (case.logits.ndim == 1)
    assert (Feature.K_DIM in case.features) == (case.logits.ndim > 2)
    if not probability:
        ignore = case.options.get("ignore_index", OPTION_DEFAULTS["ignore_index"])
        labels = case.labels[case.labels != ignore]
        assert (
            (labels >= 0) & (labels < case.logits.shape[0 if case.logits.ndim == 1 else 1])
        ).all()
        if (case.labels == ignore).any():
            assert "ignore_index" in case.options
    request = case.request()
    assert request["tolerance"] == {"atol": case.tolerance[0], "rtol": case.tolerance[1]}


def test_the_basics_are_hard_where_they_say() -> None:
    spread = ce_case("basics", "spread_800")
    row, label = spread.logits[1], spread.labels[1]
    assert row.max() - row[label] == 800.0
    assert np.exp(row[label] - row.max()) == 0.0  # underflows in float64
    with np.errstate(over="ignore"):
        assert np.isinf(np.exp(ce_case("basics", "logits_near_1e3").logits).max())
        assert np.isinf(np.exp(ce_case("basics", "offset_3e5").logits).max())
    assert ce_case("basics", "one_sample").logits.shape[0] == 1
    assert ce_case("basics", "two_classes").logits.shape[1] == 2


def test_the_kernel_cases_overflow_and_underflow_float32() -> None:
    kernel = suite("kernel")
    assert kernel is not None
    with np.errstate(over="ignore", under="ignore"):
        large = ce_case("kernel", "float32_large").logits.astype(np.float32)
        assert np.isinf(np.exp(large)).any()
        under = ce_case("kernel", "float32_underflow")
        row = under.logits[0].astype(np.float32)
        assert np.exp(row[under.labels[0]] - row.max()) == 0.0
    assert ce_case("kernel", "vocab_32000").logits.shape[1] == 32_000
    assert {case.dtype for case in kernel.cases} == {"float32", "bfloat16"}


@pytest.mark.parametrize("case", HEAD_CASES, ids=lambda case: case.name)
def test_a_head_case_is_exact_in_its_dtype_and_its_labels_are_valid(case: LinearCase) -> None:
    arrays = [case.input, case.linear_weight] + (
        [] if case.linear_bias is None else [case.linear_bias]
    )
    classes, d = case.linear_weight.shape
    for array in arrays:
        assert not array.flags.writeable
        assert np.array_equal(exact_in(array, case.dtype), array)
        assert np.isfinite(array).all()
    assert case.input.shape[-1] == d
    assert case.linear_bias is None or case.linear_bias.shape == (classes,)
    assert set(case.options) <= set(LINEAR_OPTION_DEFAULTS)
    assert "\n" not in case.reason
    causal = bool(case.options.get("causal_shift"))
    assert case.input.ndim == (3 if causal else 2)
    assert case.labels.shape == case.input.shape[:-1]
    ignore = case.options.get("ignore_index", OPTION_DEFAULTS["ignore_index"])
    kept = case.labels[case.labels != ignore]
    assert ((kept >= 0) & (kept < classes)).all()
    if (case.labels == ignore).any():
        assert "ignore_index" in case.options
    request = case.request()
    assert request["tolerance"] == {"atol": case.tolerance[0], "rtol": case.tolerance[1]}
    assert case.large == (case.name == "vocab_32000")


def _logits(case: LinearCase) -> np.ndarray:
    x = case.input.reshape(-1, case.input.shape[-1])
    bias = 0.0 if case.linear_bias is None else case.linear_bias
    logits: np.ndarray = x @ case.linear_weight.T + bias
    return logits


def head_case(name: str) -> LinearCase:
    found = suite("lm_head")
    assert found is not None
    case = found.case(name)
    assert isinstance(case, LinearCase)
    return case


def test_the_head_cases_are_hard_where_they_say() -> None:
    spread = head_case("spread_800")
    assert spread.linear_bias is None
    row = _logits(spread)[1]
    assert row.max() - row[spread.labels[1]] > 799
    assert np.exp(row[spread.labels[1]] - row.max()) == 0.0  # underflows in float64
    with np.errstate(over="ignore"):
        assert np.isinf(np.exp(_logits(head_case("logits_near_1e3")))).any()
        assert np.isinf(np.exp(_logits(head_case("bias_offset_3e5")))).all()
    assert head_case("one_sample").input.shape[0] == 1
    assert head_case("two_classes").linear_weight.shape[0] == 2
    assert head_case("vocab_32000").linear_weight.shape[0] == 32_000
    dtypes = {case.name: case.dtype for case in HEAD_CASES}
    assert (dtypes["float32"], dtypes["bfloat16"], dtypes["vocab_32000"]) == (
        "float32",
        "bfloat16",
        "float32",
    )
    # the padding falls unevenly on chunks of 4, so a mean per chunk differs from the mean
    padded = head_case("ignore_index").labels.reshape(-1, 4)
    assert len({int((chunk != -100).sum()) for chunk in padded}) > 1
    reductions = {case.options.get("reduction", "mean") for case in HEAD_CASES}
    assert reductions == {"mean", "sum", "none"}
    assert (
        head_case("denominator").options["denominator"]
        > (head_case("denominator").labels != -100).sum()
    )
