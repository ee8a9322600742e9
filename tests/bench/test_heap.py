"""The benchmark's instruments: floors run in a warm heap, and a reply is read in place."""

import io

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.api.encoding import encode_npz
from bench import case7_llm_kernel, cases
from bench.heap import in_warm_heap, keep_freed_memory

FLOORS = [
    cases.floor,
    cases.npz_floor,
    cases.binary_floor,
    cases.candidate_floor,
    cases.hessian_floor,
    case7_llm_kernel.formula_floor,
    case7_llm_kernel.numerics_in_process,
    case7_llm_kernel.torch_autograd,
]


@pytest.mark.parametrize("floor", FLOORS, ids=lambda floor: floor.__qualname__)
def test_every_in_process_floor_runs_in_the_warm_heap(floor: object) -> None:
    assert getattr(floor, "__wrapped__", None) is not None


def test_a_floor_in_the_warm_heap_returns_and_raises_as_itself() -> None:
    def floor(size: int, *, fill: float) -> np.ndarray:
        if size < 0:
            raise ValueError("negative size")
        return np.full(size, fill)

    warm = in_warm_heap(floor)
    assert warm.__name__ == "floor"
    np.testing.assert_array_equal(warm(5_000_000, fill=2.0), np.full(5_000_000, 2.0))
    with pytest.raises(ValueError, match="negative size"):
        warm(-1, fill=0.0)
    assert isinstance(keep_freed_memory(), bool)


@settings(max_examples=50, deadline=None)
@given(
    data=st.binary(max_size=200),
    steps=st.lists(
        st.tuples(st.sampled_from(["read", "seek", "seek_end", "seek_cur"]), st.integers(-50, 250)),
        max_size=12,
    ),
)
def test_a_buffer_file_reads_and_seeks_as_bytes_io(
    data: bytes, steps: list[tuple[str, int]]
) -> None:
    """BufferFile over a bytearray's view answers every read, seek and tell as io.BytesIO over
    the same bytes."""
    mine, theirs = cases.BufferFile(memoryview(bytearray(data))), io.BytesIO(data)
    for action, value in steps:
        if action == "read":
            assert mine.read(value) == theirs.read(value)
        else:
            whence = {"seek": io.SEEK_SET, "seek_end": io.SEEK_END, "seek_cur": io.SEEK_CUR}
            offset = abs(value) if action == "seek" else value
            if theirs.tell() + offset < 0 and action == "seek_cur":
                continue
            if len(data) + offset < 0 and action == "seek_end":
                continue
            assert mine.seek(offset, whence[action]) == theirs.seek(offset, whence[action])
        assert mine.tell() == theirs.tell()


def test_an_npz_reply_read_in_place_is_the_reply_read_from_bytes() -> None:
    arrays = {"hessian": np.arange(24.0).reshape(2, 3, 4), "losses": np.array([0.5, 1.5])}
    body = encode_npz({"reduction": "mean", **arrays})
    in_place, from_bytes = cases.read_npz(memoryview(bytearray(body))), cases.read_npz(body)
    assert in_place.keys() == from_bytes.keys() == {"reduction", "hessian", "losses"}
    for name, array in arrays.items():
        np.testing.assert_array_equal(in_place[name], array, strict=True)
