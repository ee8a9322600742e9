"""Bodies small on the wire that would cost a careless server much (issue 26), built in one
place: the regression tests (tests/api/test_hostile_bodies.py) and the acceptance figures
(bench/hostile.py) send the very same bytes."""

import io
import json
import struct
import warnings
import zipfile
from collections.abc import Iterator

import numpy as np

from tests.helpers import npy

NPZ = "application/x-npz"
ZEROS_CHUNK = bytes(1 << 24)
BOMB_CHUNKS = 20
"""A bomb member holds BOMB_CHUNKS × 16 MiB = 320 MiB of zeros, as in the issue's table."""
PROBLEM = {"logits": [[0.5, 1.5, -0.2], [0.1, 0.2, 0.3]], "labels": [1, 0]}
"""A small /v1/grade problem whose answer is made hostile."""


def npy_header_only(shape: tuple[int, ...], descr: str = "<f8") -> bytes:
    """An .npy member whose header declares `shape` and that holds no data."""
    member = io.BytesIO()
    header = {"descr": descr, "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_1_0(member, header)
    return member.getvalue()


def archive(members: list[tuple[str, bytes]], method: int = zipfile.ZIP_STORED) -> bytes:
    """A zip of (name, data) members, in order (a name may repeat)."""
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns of a repeated name: that is the point
        with zipfile.ZipFile(buffer, "w", compression=method) as zipped:
            for name, data in members:
                zipped.writestr(name, data)
    return buffer.getvalue()


def _central_entries(body: bytes) -> Iterator[int]:
    """Offsets of the central directory's file headers."""
    position = body.find(b"PK\x01\x02")
    while position >= 0:
        yield position
        position = body.find(b"PK\x01\x02", position + 4)


def patched(body: bytes, **fields: int) -> bytes:
    """`body` with fields of every member's central and local headers overwritten: flags,
    method, crc, file_size (central only)."""
    data = bytearray(body)
    central = {"flags": (8, "<H"), "method": (10, "<H"), "crc": (16, "<L"), "file_size": (24, "<L")}
    local = {"flags": (6, "<H"), "method": (8, "<H"), "crc": (14, "<L")}
    for entry in list(_central_entries(body)):
        local_offset = struct.unpack_from("<L", data, entry + 42)[0]
        for name, value in fields.items():
            offset, layout = central[name]
            struct.pack_into(layout, data, entry + offset, value)
            if name in local:
                offset, layout = local[name]
                struct.pack_into(layout, data, local_offset + offset, value)
    return bytes(data)


def bomb(method: int, declared: int = 1000) -> bytes:
    """One `logits.npy` member of 320 MiB of zeros compressed with zip method `method`, its
    central directory declaring `declared` bytes."""
    buffer = io.BytesIO()
    with (
        zipfile.ZipFile(buffer, "w", compression=method) as zipped,
        zipped.open("logits.npy", "w", force_zip64=True) as member,
    ):
        for _ in range(BOMB_CHUNKS):
            member.write(ZEROS_CHUNK)
    return patched(buffer.getvalue(), file_size=declared)


def forged(**fields: int) -> bytes:
    """A small `logits.npy` archive with header fields overwritten (`patched`)."""
    return patched(archive([("logits.npy", npy(np.zeros((2, 3))))]), **fields)


def header_only(shape: tuple[int, ...]) -> bytes:
    """An archive whose `logits.npy` declares `shape` and holds no data."""
    return archive([("logits.npy", npy_header_only(shape))])


def nested_request_json(depth: int = 3000) -> bytes:
    """An archive whose `request.json` is a list nested `depth` deep."""
    nested = b"[" * depth + b"]" * depth
    return archive([("logits.npy", npy(np.zeros((2, 3)))), ("request.json", nested)])


def member_twice() -> bytes:
    """An archive holding `logits.npy` twice, with different values."""
    return archive([("logits.npy", npy(np.zeros((2, 3)))), ("logits.npy", npy(np.ones((2, 3))))])


def unterminated_escaped_quotes(count: int) -> bytes:
    """A /v1/grade/batch body whose string of `count` escaped quotes never ends."""
    return b'{"submissions":["' + b'\\"' * count


def escaped_items_key(count: int = 500_000) -> bytes:
    """A /v1/grade/batch body of `count` submissions under `items` spelt with an escape."""
    return b'{"problem_id": "x", "ite\\u006ds": [' + b",".join([b"{}"] * count) + b"]}"


def boolean_labels(count: int = 300_000) -> bytes:
    """A /v1/cross-entropy body of `count` rows, each label a boolean (each an error)."""
    return json.dumps({"logits": [[0.0, 1.0]] * count, "labels": [True] * count}).encode()


def deep_student_answer(depth: int) -> bytes:
    """A /v1/grade body whose submitted loss is a list nested `depth` deep."""
    deep = "[" * depth + "]" * depth
    return f'{{"problem": {json.dumps(PROBLEM)}, "submission": {{"loss": {deep}}}}}'.encode()
