"""Request bodies (JSON with -Infinity written, or a zip of .npy members) and response decoding."""

from __future__ import annotations

import io
import json
import math
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt

from gradcheck_client.results import (
    CandidateCheck,
    Check,
    CrossEntropyResult,
    DirectionalDerivatives,
    FloatArray,
    SoftmaxResult,
)

JSON_MEDIA_TYPE = "application/json"
NPZ_MEDIA_TYPE = "application/x-npz"
REQUEST_MEMBER = "request.json"
METADATA_MEMBER = "metadata.json"

FLOAT_DTYPES = frozenset({"float64", "float32", "float16", "bfloat16"})
"""The dtypes an .npz member may have; other floating or integer arrays are sent as float64."""

ARRAY_FIELDS = frozenset(
    {
        "probabilities",
        "log_probabilities",
        "jacobian",
        "numeric_jacobian",
        "loss",
        "losses",
        "gradient",
        "numeric_gradient",
        "hessian",
        "numeric_hessian",
        "hessian_vector_product",
    }
)
"""The array fields of a compute response (in JSON they are nested lists)."""


def _bfloat16() -> Any:
    """ml_dtypes.bfloat16, or None when ml_dtypes is not installed (extra `bfloat16`)."""
    try:
        import ml_dtypes
    except ImportError:
        return None
    return ml_dtypes.bfloat16


def is_bfloat16_bits(array: npt.NDArray[Any]) -> bool:
    """Whether `array` holds bfloat16 values as raw 2-byte voids: what `np.load` returns for
    an `ml_dtypes.bfloat16` array saved by `np.save` (descriptor '<V2')."""
    return array.dtype.kind == "V" and array.dtype.itemsize == 2 and array.dtype.names is None


def bfloat16(array: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """bfloat16 bits as `ml_dtypes.bfloat16` when ml_dtypes is installed; as they are (2-byte
    voids, which are sent as bfloat16 all the same) otherwise."""
    kind = _bfloat16()
    return array if kind is None else array.view(kind)


def bfloat16_as_float32(array: npt.NDArray[Any]) -> npt.NDArray[np.float32]:
    """bfloat16 bits as float32, exactly: a bfloat16 is the upper half of a float32."""
    widened = array.view(np.uint16).astype(np.uint32) << np.uint32(16)
    return widened.view(np.float32)


def as_array(value: Any) -> npt.NDArray[Any]:
    """Anything `np.asarray` takes, torch tensors included (detached, moved to the CPU; a
    bfloat16 tensor keeps its bits: an ml_dtypes.bfloat16 array when ml_dtypes is installed,
    2-byte voids otherwise, which are sent as bfloat16 all the same)."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # a torch tensor, without torch
        tensor = value.detach().cpu()
        if str(tensor.dtype) == "torch.bfloat16":
            import torch  # present: the tensor is one of its own

            return bfloat16(np.asarray(tensor.view(torch.int16).numpy()).view("V2"))
        value = tensor
    return np.asarray(value)


def is_float(array: npt.NDArray[Any]) -> bool:
    return array.dtype.kind == "f" or array.dtype.name == "bfloat16" or is_bfloat16_bits(array)


def _float_member(array: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """A float member in its own precision when the service reads it (bfloat16 bits as they
    are: the service reads '<V2' as bfloat16), else float64."""
    if array.dtype.name in FLOAT_DTYPES or is_bfloat16_bits(array):
        return array
    if array.dtype.kind in "fiub":
        return array.astype(np.float64)
    raise ValueError(f"cannot send an array of dtype {array.dtype} in binary")


def _label_member(array: npt.NDArray[Any]) -> npt.NDArray[Any]:
    if array.dtype.kind in "iub":
        return array.astype(np.int64)
    return _float_member(array)


def _json_value(value: Any, *, floats: bool) -> Any:
    """A value as JSON-ready Python objects: arrays as nested lists (floats as float64, so
    -inf stays -inf and json.dumps writes -Infinity); ragged or odd values element by element."""
    if isinstance(value, Mapping):
        return {str(k): _json_value(v, floats=floats) for k, v in value.items()}
    if value is None or isinstance(value, str | bool):
        return value
    try:
        array = as_array(value)
    except (ValueError, TypeError):
        array = None
    if array is None or (array.dtype.kind not in "fiub" and not is_float(array)):
        if isinstance(value, list | tuple):
            return [_json_value(v, floats=floats) for v in value]
        return value
    if is_bfloat16_bits(array):
        array = bfloat16_as_float32(array)
    if floats or is_float(array):
        return array.astype(np.float64).tolist()
    return array.astype(np.int64).tolist()


def dumps(document: Any) -> bytes:
    """JSON with NaN, Infinity and -Infinity written as Python's json writes them (httpx's
    `json=` refuses them): the service reads -Infinity as a masked logit."""
    return json.dumps(document, allow_nan=True, separators=(",", ":")).encode()


def jsonable(value: Any) -> Any:
    """Arrays and tensors anywhere inside dicts and lists as nested lists of numbers."""
    return _json_value(value, floats=False)


@dataclass(frozen=True)
class Body:
    """A compute request: its arrays by member name (`logits`, `labels`, `weight`,
    `candidate.gradient`, …) and every other field."""

    arrays: dict[str, Any]
    fields: dict[str, Any]

    def json(self) -> bytes:
        """The JSON body: arrays nested under their dotted names."""
        document: dict[str, Any] = dict(self.fields)
        for name, value in self.arrays.items():
            *parents, leaf = name.split(".")
            target = document
            for parent in parents:
                target = target.setdefault(parent, {})
            target[leaf] = _json_value(value, floats=leaf != "labels")
        return dumps(document)

    def npz(self) -> bytes | None:
        """The binary body (a zip of .npy members and request.json), or None when a value is
        no rectangular array of numbers (a ragged candidate, say: JSON lets the service report
        it inside the check)."""
        members: dict[str, npt.NDArray[Any]] = {}
        try:
            for name, value in self.arrays.items():
                array = as_array(value)
                if array.dtype.kind == "O":
                    return None
                members[name] = _label_member(array) if name == "labels" else _float_member(array)
        except (ValueError, TypeError):
            return None
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
            for name, array in members.items():
                with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                    np.lib.format.write_array(
                        member,
                        array,
                        allow_pickle=False,  # any layout, written in C order
                    )
            if self.fields:
                archive.writestr(REQUEST_MEMBER, dumps(self.fields))
        return buffer.getvalue()


def error_detail(response: httpx.Response) -> Any:
    """The `detail` of an error body (JSON), or its text."""
    try:
        body = response.json()
    except ValueError:
        return response.text.strip() or response.reason_phrase
    return body.get("detail", body) if isinstance(body, dict) else body


def _read_npz(content: bytes) -> tuple[dict[str, npt.NDArray[Any]], dict[str, Any]]:
    arrays: dict[str, npt.NDArray[Any]] = {}
    metadata: dict[str, Any] = {}
    with zipfile.ZipFile(io.BytesIO(content)) as archive:
        for name in archive.namelist():
            with archive.open(name) as member:
                if name == METADATA_MEMBER:
                    metadata = json.loads(member.read())
                elif name.endswith(".npy"):
                    array = np.lib.format.read_array(member, allow_pickle=False)
                    if is_bfloat16_bits(array):
                        array = bfloat16(array)
                    arrays[name.removesuffix(".npy")] = array
    return arrays, metadata


def _read_json(body: dict[str, Any]) -> tuple[dict[str, npt.NDArray[Any]], dict[str, Any]]:
    dtype = np.float32 if body.get("dtype") == "float32" else np.float64
    arrays: dict[str, npt.NDArray[Any]] = {}
    metadata: dict[str, Any] = {}
    for name, value in body.items():
        if name in ARRAY_FIELDS and value is not None:
            array = np.array(value, dtype=np.float64)  # null → nan: only in log_probabilities
            if name == "log_probabilities":
                array[np.isnan(array)] = -math.inf  # null is log 0 of a masked logit
            arrays[name] = array.astype(dtype, copy=False)
        else:
            metadata[name] = value
    return arrays, metadata


def read_compute(response: httpx.Response) -> tuple[dict[str, npt.NDArray[Any]], dict[str, Any]]:
    """A compute response's arrays (numpy, -inf for masked log-probabilities) and other fields,
    whether the service answered .npz or JSON."""
    media_type = response.headers.get("content-type", "").split(";")[0].strip()
    if media_type == NPZ_MEDIA_TYPE:
        return _read_npz(response.content)
    body = response.json()
    if not isinstance(body, dict):
        raise ValueError(f"unexpected response body from {response.url}: {body!r:.200}")
    return _read_json(body)


def _check(metadata: dict[str, Any], name: str) -> Check | None:
    value = metadata.get(name)
    return None if value is None else Check.from_json(value)


def _candidate(metadata: dict[str, Any]) -> CandidateCheck | None:
    value = metadata.get("candidate_check")
    return None if value is None else CandidateCheck.from_json(value)


def _softmax_fields(arrays: dict[str, FloatArray], metadata: dict[str, Any]) -> dict[str, Any]:
    return {
        "dtype": str(metadata["dtype"]),
        "batch_size": int(metadata["batch_size"]),
        "num_classes": int(metadata["num_classes"]),
        "spatial_shape": tuple(int(d) for d in metadata["spatial_shape"]),
        "probabilities": arrays.get("probabilities"),
        "log_probabilities": arrays.get("log_probabilities"),
        "jacobian": arrays.get("jacobian"),
        "numeric_jacobian": arrays.get("numeric_jacobian"),
        "jacobian_check": _check(metadata, "jacobian_check"),
        "candidate_check": _candidate(metadata),
        "arrays": arrays,
        "raw": metadata,
    }


def softmax_result(arrays: dict[str, FloatArray], metadata: dict[str, Any]) -> SoftmaxResult:
    """The typed result of /v1/softmax (KeyError when a required field is missing)."""
    return SoftmaxResult(**_softmax_fields(arrays, metadata))


def _directional(metadata: dict[str, Any]) -> DirectionalDerivatives | None:
    """k numbers each, written as lists (in .npz responses too, in metadata.json)."""
    value = metadata.get("directional_derivatives")
    if value is None:
        return None
    return DirectionalDerivatives(
        np.asarray(value["numeric"], dtype=np.float64),
        np.asarray(value["analytic"], dtype=np.float64),
        int(value["seed"]),
    )


def _scalar_or_array(array: FloatArray | None) -> float | FloatArray | None:
    return float(array) if array is not None and array.ndim == 0 else array


def cross_entropy_result(
    arrays: dict[str, FloatArray], metadata: dict[str, Any]
) -> CrossEntropyResult:
    """The typed result of /v1/cross-entropy (a reduced loss as a float; KeyError when a
    required field is missing)."""
    losses = _scalar_or_array(arrays["losses"])
    assert losses is not None
    return CrossEntropyResult(
        **_softmax_fields(arrays, metadata),
        reduction=str(metadata["reduction"]),
        losses=losses,
        loss=_scalar_or_array(arrays.get("loss")),
        gradient=arrays.get("gradient"),
        numeric_gradient=arrays.get("numeric_gradient"),
        gradient_check=_check(metadata, "gradient_check"),
        directional_derivatives=_directional(metadata),
        hessian=arrays.get("hessian"),
        numeric_hessian=arrays.get("numeric_hessian"),
        hessian_check=_check(metadata, "hessian_check"),
        hessian_vector_product=arrays.get("hessian_vector_product"),
    )
