"""A typed client of the gradcheck service: numpy arrays in, numpy arrays out.

```python
from gradcheck_client import Client

with Client("http://127.0.0.1:8000") as service:
    result = service.cross_entropy(logits, labels, candidate={"gradient": my_gradient})
    print(result.loss, result.gradient_check.passed, result.candidate_check.diagnoses)
```

The command line `gradcheck` (see `gradcheck --help`) checks `.npy` files from scripts and CI.
"""

from gradcheck_client.client import AsyncClient, Client, __version__
from gradcheck_client.errors import ErrorItem, GradcheckError
from gradcheck_client.linear import LinearCrossEntropyResult
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

__all__ = [
    "AsyncClient",
    "CandidateCheck",
    "CandidateEntry",
    "Check",
    "Client",
    "CrossEntropyResult",
    "Diagnosis",
    "DirectionalDerivatives",
    "ErrorItem",
    "GradcheckError",
    "LinearCrossEntropyResult",
    "Mismatch",
    "OutputCheck",
    "Problem",
    "SoftmaxResult",
    "__version__",
]
