"""`archive.read_npz` as the server reads a body: a stored member is a view of the body (no
copy), aligned for its dtype or else copied; the members of a large body are checked on every
core, and a bad archive is refused at its first bad member whichever thread found it. The
refusals themselves: `test_hostile_bodies.py`."""

import io
import zipfile
from typing import Any

import numpy as np
import pytest

from app.api import archive
from app.api.archive import PARALLEL_READ_BYTES, read_npz
from app.core.errors import RequestError
from app.numerics.layout import for_each_on_every_core
from tests.helpers import npy, npz_body

LIMIT = 1 << 30


def _root(array: np.ndarray) -> Any:
    """The object at the bottom of an array's chain of bases."""
    base: Any = array
    while isinstance(base, np.ndarray):
        base = base.base
    return base


def test_a_stored_member_is_a_read_only_view_of_the_body() -> None:
    logits = np.arange(24.0).reshape(4, 6)
    body = npz_body({"logits": logits}, {"labels": [0, 1, 2, 3]})
    fields, arrays = read_npz(body, LIMIT)
    assert fields == {"labels": [0, 1, 2, 3]}
    np.testing.assert_array_equal(arrays["logits"], logits)
    root = _root(arrays["logits"])
    assert isinstance(root, memoryview) and root.obj is body
    assert not arrays["logits"].flags.writeable


@pytest.mark.parametrize("shift", range(8))
def test_a_member_whose_data_is_not_aligned_is_copied_aligned(shift: int) -> None:
    """An extra field of `shift` bytes moves the member's data off its 8-byte alignment for
    most shifts; every one reads as the same aligned float64 array."""
    logits = np.linspace(-3.0, 3.0, 40).reshape(5, 8)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as written:
        member = zipfile.ZipInfo("logits.npy")
        member.extra = b"\xfe\xca" + shift.to_bytes(2, "little") + b"\0" * shift
        written.writestr(member, npy(logits))
    _, arrays = read_npz(buffer.getvalue(), LIMIT)
    assert arrays["logits"].flags.aligned
    np.testing.assert_array_equal(arrays["logits"], logits)


def _corrupt(body: bytes, names: list[str]) -> bytes:
    """`body` with the last byte of each named member's data flipped (its CRC-32 no longer
    matches)."""
    corrupted = bytearray(body)
    with zipfile.ZipFile(io.BytesIO(body)) as listing:
        for name in names:
            info = listing.getinfo(name)
            start = info.header_offset + 30 + len(info.filename) + len(info.extra)
            corrupted[start + info.compress_size - 1] ^= 0xFF
    return bytes(corrupted)


def test_a_large_body_is_checked_on_every_core_and_a_small_one_in_the_caller(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[int] = []

    def counting(work: Any, items: Any) -> None:
        calls.append(len(items))
        for_each_on_every_core(work, items)

    monkeypatch.setattr(archive, "for_each_on_every_core", counting)
    rows = PARALLEL_READ_BYTES // (8 * 64) + 1
    large = {"logits": np.ones((rows, 64)), "labels": np.zeros(rows, np.int64)}
    _, arrays = read_npz(npz_body(large), LIMIT)
    assert calls == [2]
    assert arrays["logits"].shape == (rows, 64)
    read_npz(npz_body({"logits": np.ones((2, 3))}), LIMIT)
    assert calls == [2]


def test_the_first_bad_member_in_the_archive_is_named_whichever_thread_finds_it() -> None:
    rows = PARALLEL_READ_BYTES // (8 * 64) + 1
    body = npz_body({"logits": np.ones((rows, 64)), "labels": np.zeros((rows, 64))})
    assert len(body) >= PARALLEL_READ_BYTES
    for bad in (["logits.npy", "labels.npy"], ["labels.npy"]):
        corrupted = _corrupt(body, bad)
        for _ in range(5):
            with pytest.raises(RequestError) as refused:
                read_npz(corrupted, LIMIT)
            assert refused.value.errors[0]["loc"] == ["body", bad[0]]
            assert "CRC-32" in refused.value.errors[0]["msg"]
