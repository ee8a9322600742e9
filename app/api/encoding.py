"""Numpy results → response bytes, as JSON (orjson, straight from the arrays) or as .npz; and
`.npz` request bodies → arrays (`read_npz_request`).

No Python lists are built for the arrays. The encoders decide nothing: which outputs a report
holds, and that they are finite (`Report.refuse_non_finite`), is settled before they run.
Log-probabilities of masked (−inf) logits are written as null (log 0) in JSON.
"""

import io
import math
import secrets
import zipfile
from collections.abc import Callable
from typing import Any

import numpy as np
import orjson
from fastapi import Response
from starlette.types import Receive, Scope, Send

from app.api.archive import REQUEST_FIELDS_MEMBER, read_npz
from app.core.media import JSON_MEDIA_TYPE, NPZ_MEDIA_TYPE
from app.numerics.candidate import CandidateCheck
from app.numerics.deadline import NEVER, Deadline
from app.numerics.directional import DirectionalDerivatives
from app.numerics.gradcheck import Check, Report
from app.numerics.layout import Layout
from app.numerics.tasks import LinearResult, LossResult, SoftmaxResult

NPZ_METADATA_MEMBER = "metadata.json"


def check_fields(
    check: Check, index_of: Callable[[tuple[int, ...]], tuple[int, ...]]
) -> dict[str, Any]:
    """A check as its documented JSON object (`CheckModel`); `index_of` turns an index of the
    rows the numerics work on into the caller's index."""
    a = check.agreement
    h = check.steps.h
    return {
        "passed": a.passed,
        "max_abs_error": a.max_abs_error,
        "max_rel_error": a.max_rel_error,
        "mismatches": a.mismatches,
        "checked": a.checked,
        "atol": check.tolerance.atol,
        "rtol": check.tolerance.rtol,
        "method": str(check.method),
        "step": check.steps.base,
        "step_rule": check.steps.rule,
        "step_min": float(h.min()),
        "step_max": float(h.max()),
        "estimated_truncation_error": check.estimate.truncation,
        "estimated_rounding_error": check.estimate.rounding,
        "worst_mismatches": [
            {"index": list(index_of(m.index)), "analytic": m.analytic, "numeric": m.numeric}
            for m in a.worst
        ],
        "message": check.message(),
        **({"directions": check.directions} if check.directions is not None else {}),
    }


def directional_fields(result: DirectionalDerivatives) -> dict[str, Any]:
    """A directional check's numbers (`DirectionalModel`); its verdict is `check_fields`'."""
    numbers = {"numeric": result.numeric.tolist(), "analytic": result.analytic.tolist()}
    return {**numbers, "seed": result.seed}  # k numbers: lists, in JSON and in .npz metadata


def _json_number(value: float) -> float | str:
    """A caller's value as JSON can carry it: non-finite ones as "NaN", "Infinity", "-Infinity"."""
    if math.isfinite(value):
        return value
    if math.isnan(value):
        return "NaN"
    return "Infinity" if value > 0 else "-Infinity"


CANDIDATE_INDEX_KINDS = {
    "probabilities": "class",
    "log_probabilities": "class",
    "gradient": "class",
    "losses": "position",
    "loss": "position",
    "jacobian": "pair",
    "hessian": "pair",
}


def candidate_fields(check: CandidateCheck, layout: Layout | None) -> dict[str, Any]:
    """A candidate check as its documented JSON object (`CandidateCheckModel`); the caller's
    non-finite values are quoted, error sizes over them are null, and positions are the
    caller's (`layout`; None when the check was made in the caller's shapes already)."""

    def index_of(name: str, index: tuple[int, ...]) -> list[int]:
        if layout is None or layout.is_matrix or not index:
            return list(index)
        return list(layout.output_index(index, CANDIDATE_INDEX_KINDS[name]))

    return {
        "passed": check.passed,
        "outputs": {
            name: {
                "passed": output.passed,
                "checked": output.checked,
                "mismatches": output.mismatches,
                "nonfinite": output.nonfinite,
                "max_abs_error": output.max_abs_error,
                "max_rel_error": output.max_rel_error,
                "max_ulp_error": output.max_ulp_error,
                "worst": [
                    {
                        "index": index_of(name, entry.index),
                        "expected": _json_number(entry.expected),
                        "got": _json_number(entry.got),
                    }
                    for entry in output.worst
                ],
                **({"defect": output.defect} if output.defect is not None else {}),
            }
            for name, output in check.outputs.items()
        },
        "diagnoses": [
            {
                "code": diagnosis.code,
                "output": diagnosis.output,
                "message": diagnosis.message,
                "evidence": diagnosis.evidence,
                "indistinguishable_from": list(diagnosis.indistinguishable_from),
            }
            for diagnosis in check.diagnoses
        ],
        "notes": list(check.notes),
        "tolerance": {"atol": check.atol, "rtol": check.rtol},
    }


def report_fields(
    report: Report, include: frozenset[str], dtype: str, layout: Layout
) -> dict[str, Any]:
    """The response fields of a report, only what `include` asks for, in the caller's shapes
    (`layout`): arrays stay numpy arrays (the reduced loss a 0-d array: a number in JSON, a 0-d
    `.npy` member in .npz)."""
    fields: dict[str, Any] = {
        "batch_size": layout.positions[0] if layout.positions else 1,
        "num_classes": layout.classes,
        "spatial_shape": list(layout.positions[1:]),
        "dtype": dtype,
    }
    for name in ("probabilities", "log_probabilities"):  # kept whenever they are asked for
        if name in include:
            assert report.kept_softmax is not None
            fields[name] = layout.per_class(getattr(report.kept_softmax, name))
    per_class = {"gradient": report.gradient, "numeric_gradient": report.numeric_gradient}
    for name, array in per_class.items():
        if name in include and array is not None:
            fields[name] = layout.per_class(array)
    per_class_pair = {
        "jacobian": report.jacobian,
        "numeric_jacobian": report.numeric_jacobian,
        "hessian": report.hessian,
        "numeric_hessian": report.numeric_hessian,
    }
    for name, array in per_class_pair.items():
        if name in include and array is not None:
            fields[name] = layout.per_class_pair(array)
    if report.hessian_vector_product is not None:
        fields["hessian_vector_product"] = layout.per_class(report.hessian_vector_product)
    if "loss" in include and report.loss is not None:
        fields["loss"] = report.loss if report.loss.ndim == 0 else layout.per_position(report.loss)
    if report.losses is not None:
        fields["losses"] = layout.per_position(report.losses)
    if report.gradient_check is not None:
        fields["gradient_check"] = check_fields(
            report.gradient_check, lambda index: layout.output_index(index, "class")
        )
    for name, check in {
        "jacobian_check": report.jacobian_check,
        "hessian_check": report.hessian_check,
    }.items():
        if check is not None:
            fields[name] = check_fields(check, lambda index: layout.output_index(index, "pair"))
    return fields


DTYPE_NAMES = {np.dtype(np.float64): "float64", np.dtype(np.float32): "float32"}
"""The name of each precision, as the response states it (numpy's `dtype.name` is slower)."""


def softmax_fields(result: SoftmaxResult, layout: Layout) -> dict[str, Any]:
    """The response fields of a softmax result, in the caller's shapes (`layout`)."""
    report = result.report
    fields = report_fields(report, result.include, DTYPE_NAMES[report.logits.dtype], layout)
    if result.candidate_check is not None:
        fields["candidate_check"] = candidate_fields(result.candidate_check, layout)
    return fields


def cross_entropy_fields(result: LossResult, layout: Layout) -> dict[str, Any]:
    """The response fields of a cross-entropy result, in the caller's shapes (`layout`)."""
    report = result.report
    fields = report_fields(report, result.include, DTYPE_NAMES[report.logits.dtype], layout)
    fields["reduction"] = str(result.reduction)
    directional = result.directional
    if directional is not None:
        fields["gradient_check"] = check_fields(directional.check, lambda index: index)
        fields["directional_derivatives"] = directional_fields(directional)
    if result.candidate_check is not None:
        fields["candidate_check"] = candidate_fields(result.candidate_check, layout)
    return fields


def wants_npz(accept: str | None) -> bool:
    """True if the Accept header asks for application/x-npz."""
    return bool(accept) and NPZ_MEDIA_TYPE in (accept or "")


def _json_ready(value: Any) -> Any:
    """0-d arrays as Python numbers, other arrays C-contiguous (what orjson serialises)."""
    if not isinstance(value, np.ndarray):
        return value
    if value.ndim == 0:
        return value.item()
    return value if value.flags.c_contiguous else np.ascontiguousarray(value)


JSON_PIECE_NUMBERS = 1 << 16
"""Arrays with more numbers than this are written in pieces of about this many (rows, or slices
of a flat array): orjson holds the GIL for a whole call, so one call on a 79 × 316 × 316
Jacobian (0.7 s) would hold up the event loop, /healthz included, for as long; between pieces
the loop gets its turn."""


def _write_json_array(out: bytearray, array: np.ndarray) -> None:
    """Append orjson's text of `array` to `out`, a piece (a row, or a slice of a flat array) at
    a time: each piece's bytes are dropped once appended."""
    option = orjson.OPT_SERIALIZE_NUMPY
    out += b"["
    if array.ndim == 1:
        step = JSON_PIECE_NUMBERS
        for start in range(0, len(array), step):
            if start:
                out += b","
            out += orjson.dumps(array[start : start + step], option=option)[1:-1]
    else:
        for index, row in enumerate(array):
            if index:
                out += b","
            out += orjson.dumps(row, option=option)
    out += b"]"


def encode_json(fields: dict[str, Any]) -> bytes | memoryview:
    """orjson straight from numpy (NaN/inf would become null): no Python lists are built.
    Arrays over JSON_PIECE_NUMBERS numbers are written piece by piece in place of a marker in
    the rest of the document, into one growing buffer that is answered as it is (a memoryview
    of it, never copied into a bytes object: that copy doubled the peak of a large answer)."""
    ready = {}
    large = {}
    for name, value in fields.items():
        ready[name] = value = _json_ready(value)
        if isinstance(value, np.ndarray) and value.size > JSON_PIECE_NUMBERS:
            large[name] = value
    if not large:
        return orjson.dumps(ready, option=orjson.OPT_SERIALIZE_NUMPY)
    marker = secrets.token_hex(16)
    document = orjson.dumps(
        {name: f"{marker}{name}" if name in large else value for name, value in ready.items()},
        option=orjson.OPT_SERIALIZE_NUMPY,
    )
    out = bytearray()
    position = 0
    for name, value in large.items():
        quoted = f'"{marker}{name}"'.encode()
        start = document.index(quoted, position)
        out += document[position:start]
        _write_json_array(out, value)
        position = start + len(quoted)
    out += document[position:]
    return memoryview(out)


def _write_npy(archive: zipfile.ZipFile, member_name: str, array: np.ndarray) -> None:
    """One `.npy` member (format 1.0 header, then the C-order bytes), written in one piece:
    the array's buffer is checksummed and handed on as it is, never cut into chunks."""
    contiguous = array if array.flags.c_contiguous else array.copy(order="C")
    with archive.open(member_name, "w", force_zip64=True) as member:
        np.lib.format.write_array_header_1_0(
            member, np.lib.format.header_data_from_array_1_0(contiguous)
        )
        member.write(contiguous.reshape(-1).view(np.uint8).data)


class _Pieces:
    """A write-only file that keeps what it is given (memoryviews: no copy), in order.

    zipfile, given a file it cannot seek, streams each member with its sizes and CRC in a data
    descriptor after the data. An array's bytes are therefore never copied on the way to the
    response (`NpzResponse`), and copied once where one body is wanted (`encode_npz`), where
    io.BytesIO would copy them on every growth of its buffer (3× slower for a 20 MB Jacobian).
    """

    def __init__(self) -> None:
        self._pieces: list[memoryview] = []
        self._size = 0

    def write(self, data: bytes | memoryview, /) -> int:
        piece = memoryview(data)
        self._pieces.append(piece)
        self._size += piece.nbytes
        return piece.nbytes

    def tell(self) -> int:
        return self._size

    def flush(self) -> None:
        """Nothing is buffered."""

    def close(self) -> None:
        """Nothing to release: the pieces are read by `parts`."""

    def parts(self) -> list[bytes | memoryview]:
        """What was written, in order: each array's buffer as it is, the small pieces between
        them (zip and .npy headers) joined."""
        parts: list[bytes | memoryview] = []
        small: list[memoryview] = []
        for piece in self._pieces:
            if piece.nbytes < SMALL_PIECE_BYTES:
                small.append(piece)
                continue
            if small:
                parts.append(b"".join(small))
                small = []
            parts.append(piece)
        if small:
            parts.append(b"".join(small))
        return parts


SMALL_PIECE_BYTES = 64 << 10
"""Pieces of an .npz body below this size are joined with their neighbours before sending."""


def _write_npz(file: _Pieces | io.BytesIO, fields: dict[str, Any], others_member: str) -> None:
    """A zip of stored members into `file`: one `.npy` per array field, in order, then the
    other fields as JSON in `others_member`."""
    others = {k: v for k, v in fields.items() if not isinstance(v, np.ndarray)}
    with zipfile.ZipFile(file, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, value in fields.items():
            if isinstance(value, np.ndarray):
                _write_npy(archive, f"{name}.npy", value)
        archive.writestr(others_member, orjson.dumps(others))


def _npz_parts(fields: dict[str, Any]) -> list[bytes | memoryview]:
    pieces = _Pieces()
    _write_npz(pieces, fields, NPZ_METADATA_MEMBER)
    return pieces.parts()


def encode_npz(fields: dict[str, Any]) -> bytes:
    """A zip of `.npy` members (one per array; scalars as 0-d arrays) and `metadata.json`.

    Readable with `np.load(io.BytesIO(body), allow_pickle=False)`; `["metadata.json"]` gives
    the JSON bytes of every non-array field.
    """
    return b"".join(_npz_parts(fields))


def encode_npz_request(fields: dict[str, Any]) -> bytes:
    """A request body as `.npz`, as `read_npz_request` reads it: one `.npy` member per array
    field and `request.json` holding the other fields (a suite's case, ready to be posted)."""
    body = io.BytesIO()  # seekable: sizes and CRCs in the headers, no data descriptors
    _write_npz(body, fields, REQUEST_FIELDS_MEMBER)
    return body.getvalue()


class NpzResponse(Response):
    """`encode_npz` of the fields, sent in the pieces it is written in: each array's own buffer
    goes to the server as it is, never joined into one body (for a 20 MB Jacobian, a copy of
    20 MB less, in time and in memory)."""

    media_type = NPZ_MEDIA_TYPE

    def __init__(self, fields: dict[str, Any]) -> None:
        self.parts = _npz_parts(fields)
        super().__init__(media_type=NPZ_MEDIA_TYPE)
        self.headers["content-length"] = str(sum(memoryview(part).nbytes for part in self.parts))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Send the headers, then each part."""
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        last = len(self.parts) - 1
        for index, part in enumerate(self.parts):
            await send({"type": "http.response.body", "body": part, "more_body": index < last})


def respond(fields: dict[str, Any], accept: str | None, deadline: Deadline = NEVER) -> Response:
    """The response in the format the client accepts: .npz if it asks for it, else JSON.

    A request already past its `deadline` stops here rather than encode a response that
    nobody will read.
    """
    deadline.check()
    if wants_npz(accept):
        return NpzResponse(fields)
    return Response(encode_json(fields), media_type=JSON_MEDIA_TYPE)


# ----- .npz requests → arrays -----

NPZ_MAX_EXPANSION = 4
"""An archive may hold at most this many times its own size (at least 1 MiB) uncompressed
(zip bombs: 413)."""


def npz_expansion_limit(body_bytes: int) -> int:
    """Most bytes an .npz body of `body_bytes` may inflate to, all members together."""
    return NPZ_MAX_EXPANSION * max(body_bytes, 1 << 20)


def read_npz_request(body: bytes) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The fields of an `application/x-npz` body: `request.json` (every non-array field), and
    one array per `.npy` member, named after its field (`logits`, `labels`, `weight`, `vector`,
    `candidate.gradient`, …), read by the bounded reader `app.api.archive.read_npz` (at most
    `npz_expansion_limit` bytes inflated; errors name the member)."""
    return read_npz(body, npz_expansion_limit(len(body)))


LINEAR_OUTPUTS = (
    "loss",
    "losses",
    "input_gradient",
    "linear_weight_gradient",
    "linear_bias_gradient",
    "logits",
    "logits_gradient",
    "probabilities",
)
"""The arrays of a linear cross-entropy report, in the order a response lists them."""


def linear_fields(result: LinearResult) -> dict[str, Any]:
    """The response fields of a linear cross-entropy result (`LinearCrossEntropyResponse`):
    the sizes, the outputs asked for in torch's shapes (numpy arrays), the numeric check and
    the candidate's."""
    report = result.report
    head = report.head
    fields: dict[str, Any] = {
        "batch_size": head.samples,
        "num_classes": head.classes,
        "in_features": int(head.x.shape[1]),
        "out_features": list(head.out_features),
        "dtype": DTYPE_NAMES[head.x.dtype],
        "reduction": str(head.problem.reduction),
    }
    for name in LINEAR_OUTPUTS:
        value = getattr(report, name)
        if name in result.include and value is not None:
            fields[name] = value
    if result.directional is not None:
        fields["gradient_check"] = check_fields(result.directional.check, lambda index: index)
        fields["directional_derivatives"] = directional_fields(result.directional)
    if result.candidate_check is not None:
        fields["candidate_check"] = candidate_fields(result.candidate_check, None)
    return fields
