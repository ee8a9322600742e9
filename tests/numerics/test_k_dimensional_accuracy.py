"""K-dimensional inputs keep the accuracy guarantee: the adversarial cases sent as (1, C, N)
through the API's request parsing (`accuracy/kdim.py`, part of `make accuracy`)."""

from accuracy import kdim


def test_k_dimensional_inputs_keep_the_guarantee() -> None:
    worst = kdim.run("quick", 2026)
    assert set(worst) == set(kdim.OUTPUTS)
    assert all(error <= kdim.GUARANTEE for error in worst.values()), worst
