"""`Client.test(..., framework="torch")` against a live server: torch's own `F.cross_entropy`
(autograd) passes every case of the basics and torch suites, a torch kernel with z-loss and
soft-capping passes the kernel suite (float32 and bfloat16 logits), and a broken one is flagged."""

from typing import Any

import numpy as np
import pytest
from gradcheck_client import Client

from tests.client import implementations as impl
from tests.helpers import require_module

pytestmark = [pytest.mark.live, pytest.mark.torch]

EVERY_FEATURE = {"k_dim", "no_batch", "probability_targets"}


@pytest.fixture
def torch() -> Any:
    return require_module("torch")


@pytest.fixture(scope="module")
def service(live_url: str) -> Any:
    with Client(live_url) as client:
        yield client


@pytest.mark.parametrize("suite", ["basics", "torch"])
def test_torch_autograd_passes_every_case(service: Client, torch: Any, suite: str) -> None:
    report = service.test(
        torch.nn.functional.cross_entropy, suite, framework="torch", supports=EVERY_FEATURE
    )
    assert report.passed, report.table()
    assert all(case.applicable for case in report.cases), report.table()
    assert report.framework == "torch"


def test_a_torch_kernel_passes_the_kernel_suite(service: Client, torch: Any) -> None:
    report = service.test(impl.torch_kernel_loss, "kernel", framework="torch")
    assert report.passed, report.table()
    assert all(case.applicable for case in report.cases)
    plain = service.test(torch.nn.functional.cross_entropy, "kernel", framework="torch")
    assert plain.passed, plain.table()  # in bfloat16 itself, on the cases without z-loss
    assert {case.name for case in plain.cases if not case.applicable} == {
        "z_loss",
        "softcap",
        "z_loss_softcap_ignore",
    }


def test_torch_receives_tensors_in_the_case_dtype(service: Client, torch: Any) -> None:
    seen: dict[str, Any] = {}

    def recording(logits: Any, labels: Any, **options: Any) -> Any:
        seen.setdefault(str(logits.dtype), (logits.requires_grad, labels.dtype, options))
        return impl.torch_kernel_loss(logits, labels, **options)

    assert service.test(recording, "kernel", framework="torch").passed
    assert set(seen) == {"torch.float32", "torch.bfloat16"}
    assert seen["torch.float32"][0] is True
    assert seen["torch.float32"][1] == torch.int64


def test_a_broken_torch_function_is_flagged_and_reproduced(service: Client, torch: Any) -> None:
    report = service.test(impl.torch_summed_gradient, "basics", framework="torch")
    assert not report.passed
    case = next(c for c in report.failures if c.name == "small_random")
    assert case.diagnoses == {"gradient": ("not_divided",)}
    assert case.smallest is not None
    assert np.asarray(case.smallest["logits"]).shape[0] == 2
    assert case.reproduction is not None
    assert "torch.tensor(" in case.reproduction
    assert "requires_grad=True" in case.reproduction
