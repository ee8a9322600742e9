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

from gradcheck_client.client import (
    AsyncClient,
    Client,
    Dtype,
    GradientNumericOptions,
    LossCandidate,
    NumericOptions,
    SoftmaxCandidate,
    ToleranceOptions,
)
from gradcheck_client.errors import (
    ErrorItem,
    GradcheckError,
    RefusedError,
    ResponseError,
    ServiceError,
    TransportError,
    UnavailableError,
)
from gradcheck_client.linear import LinearCandidate, LinearCrossEntropyResult
from gradcheck_client.results import (
    BatchGrades,
    CandidateCheck,
    CandidateEntry,
    Check,
    ClassSummary,
    CrossEntropyResult,
    Diagnosis,
    DirectionalDerivatives,
    GeneratorInfo,
    GradeResult,
    GradescopeResult,
    GradescopeTest,
    GradingResult,
    Mismatch,
    MismatchEntry,
    OutputCheck,
    PartResult,
    PartSummary,
    PrairieLearnResult,
    PrairieLearnTest,
    Problem,
    ProblemParameters,
    ScoreBin,
    ScoreDistribution,
    SoftmaxResult,
    Tolerance,
)
from gradcheck_client.suites import CaseResult, SuiteReport
from gradcheck_client.version import __version__

__all__ = [
    "AsyncClient",
    "BatchGrades",
    "CandidateCheck",
    "CandidateEntry",
    "CaseResult",
    "Check",
    "ClassSummary",
    "Client",
    "CrossEntropyResult",
    "Diagnosis",
    "DirectionalDerivatives",
    "Dtype",
    "ErrorItem",
    "GeneratorInfo",
    "GradcheckError",
    "GradeResult",
    "GradescopeResult",
    "GradescopeTest",
    "GradientNumericOptions",
    "GradingResult",
    "LinearCandidate",
    "LinearCrossEntropyResult",
    "LossCandidate",
    "Mismatch",
    "MismatchEntry",
    "NumericOptions",
    "OutputCheck",
    "PartResult",
    "PartSummary",
    "PrairieLearnResult",
    "PrairieLearnTest",
    "Problem",
    "ProblemParameters",
    "RefusedError",
    "ResponseError",
    "ScoreBin",
    "ScoreDistribution",
    "ServiceError",
    "SoftmaxCandidate",
    "SoftmaxResult",
    "SuiteReport",
    "Tolerance",
    "ToleranceOptions",
    "TransportError",
    "UnavailableError",
    "__version__",
]
