"""A typed client of the gradcheck service: numpy arrays in, numpy arrays out.

```python
from gradcheck_client import Client

with Client("http://127.0.0.1:8000") as service:
    result = service.cross_entropy(logits, labels, candidate={"gradient": my_gradient})
    print(result.loss, result.gradient_check.passed, result.candidate_check.diagnoses)
```

`service.test(fn, suite="basics")` runs your own function on a suite of hard cases. The command
line `gradcheck` (see `gradcheck --help`) checks `.npy` files and tests functions from scripts
and CI; the pytest plugin (`gradcheck_case`) runs a test once per case.
"""

from gradcheck_client.client import AsyncClient, Client, __version__
from gradcheck_client.errors import ErrorItem, GradcheckError
from gradcheck_client.results import (
    CandidateCheck,
    CandidateEntry,
    Check,
    CrossEntropyResult,
    Diagnosis,
    DirectionalDerivatives,
    Mismatch,
    OutputCheck,
    Problem,
    SoftmaxResult,
)
from gradcheck_client.suites import CaseResult, SuiteReport

__all__ = [
    "AsyncClient",
    "CandidateCheck",
    "CandidateEntry",
    "CaseResult",
    "Check",
    "Client",
    "CrossEntropyResult",
    "Diagnosis",
    "DirectionalDerivatives",
    "ErrorItem",
    "GradcheckError",
    "Mismatch",
    "OutputCheck",
    "Problem",
    "SoftmaxResult",
    "SuiteReport",
    "__version__",
]
