"""Peak memory of the numerics of one request, in a fresh process: `python -m bench.memory N C`.

Prints JSON: the tracemalloc peak (numpy reports its array buffers to tracemalloc) while the
service turns a validated request into its response fields, and the bytes of those fields'
arrays. Run it in its own process so nothing else in the heap blurs the reading.
"""

import sys
import tracemalloc

import orjson

from app.api.encoding import cross_entropy_fields
from app.api.inputs import to_loss_call
from app.api.schemas.compute import CrossEntropyRequest
from app.core.config import Settings
from bench.cases import output_bytes, problem


def measure(num_samples: int, num_classes: int) -> dict[str, int]:
    """Peak bytes allocated while computing the default outputs, and the outputs' bytes."""
    body = orjson.dumps(problem(num_samples, num_classes), option=orjson.OPT_SERIALIZE_NUMPY)
    request = CrossEntropyRequest.model_validate_json(body)
    settings = Settings()
    tracemalloc.start()
    before, _ = tracemalloc.get_traced_memory()
    tracemalloc.reset_peak()
    call = to_loss_call(request, settings)
    fields = cross_entropy_fields(call.run(), call.layout)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {"peak_bytes": peak - before, "output_bytes": output_bytes(fields)}


if __name__ == "__main__":
    print(orjson.dumps(measure(int(sys.argv[1]), int(sys.argv[2]))).decode())
