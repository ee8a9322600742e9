"""The suites' cases (`app.numerics.suites`): deterministic, exact in their dtype, shaped as
their features say, and each hard for the reason it gives (checked on the arrays themselves)."""

import numpy as np
import pytest

from app.numerics.suites import BUILDERS, CASTS, OPTION_DEFAULTS, Case, Feature, exact_in, suite

ALL_CASES = [(name, case) for name in BUILDERS for case in BUILDERS[name]().cases]


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
            assert isinstance(a, Case) and isinstance(b, Case)
            assert a.name == b.name
            assert np.array_equal(a.logits, b.logits)
            assert np.array_equal(a.labels, b.labels)
            assert dict(a.options) == dict(b.options)
        assert suite(name) is suite(name)


def test_case_names_are_unique_within_each_suite() -> None:
    for builder in BUILDERS.values():
        names = [case.name for case in builder().cases]
        assert len(names) == len(set(names))


@pytest.mark.parametrize(("suite_name", "case"), ALL_CASES, ids=lambda x: getattr(x, "name", x))
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
