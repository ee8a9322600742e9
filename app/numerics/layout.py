"""Where the class axis of an array of logits sits, and how the array maps to rows of classes.

Every computation of the service works on rows: R positions of C classes, shape (R, C). An
array as a caller sends it has its class axis somewhere else, as in PyTorch:

    (N, C)                  N samples                     rows: the samples
    (N, C, d1, …, dk)       K-dimensional inputs          rows: every (n, d1, …, dk), in C order
    (C,)                    one sample, no batch axis     one row

and softmax may take any axis (`dim`). A `Layout` moves the class axis last and flattens the
positions (`to_rows`), puts results back in the caller's shapes (`per_class`, `per_position`,
`per_class_pair`), and names the caller's position of a row's entry (`position`), so that every
message points where the caller looks.
"""

import math
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property
from typing import TypeVar, cast

import numpy as np
from numpy.typing import NDArray

BLOCK_ENTRIES = 1 << 17
"""Work over a whole array of rows goes through blocks of consecutive rows of about this many
entries (1 MiB of float64): a large request holds its temporaries for one block a core, not for
the whole array. Smaller blocks keep each temporary in a core's cache but make each numpy call
so short that the threads spend their time handing the GIL to each other: on two cores, an
N = 256, C = 32,000 loss and gradient takes 190 ms with blocks of 2^15 entries (and as long on
one thread), 130 ms with 2^17 (issue 25, `make bench` case 7)."""


def row_blocks(rows: int, row_size: int) -> Iterator[slice]:
    """Blocks of consecutive rows holding about BLOCK_ENTRIES entries (at least one row)."""
    step = max(1, BLOCK_ENTRIES // max(1, row_size))
    for start in range(0, rows, step):
        yield slice(start, min(rows, start + step))


BLOCK_WORKERS = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
"""Threads that work through the blocks of one array of rows at once: the cores this process
may run on. numpy releases the GIL inside its loops, so blocks on different threads run on
different cores."""
BLOCK_HELPERS = ThreadPoolExecutor(max(1, BLOCK_WORKERS - 1), thread_name_prefix="row-blocks")
"""The threads that help a caller through its blocks (started on first use)."""
Item = TypeVar("Item")
_NONE_LEFT = object()


def for_each_row_block(work: Callable[[slice], None], rows: int, row_size: int) -> None:
    """Call `work` on every block of `row_blocks(rows, row_size)`, up to BLOCK_WORKERS blocks
    at a time (`for_each_on_every_core`). `work` must write only its own rows (blocks are
    disjoint), so what each block computes does not depend on which thread computed it, or
    when."""
    for_each_on_every_core(work, list(row_blocks(rows, row_size)))


def for_each_on_every_core(work: Callable[[Item], None], items: Sequence[Item]) -> None:
    """Call `work` on every one of `items`, up to BLOCK_WORKERS at a time: the calling thread
    and BLOCK_WORKERS − 1 helpers each take the next item not yet taken until none is left.

    The caller works through the items whatever the helpers do, so one request never waits
    behind another's: a helper still queued when the caller is done is cancelled. The first
    exception raised by `work` stops every thread from taking another item, and is raised here
    once the items under way have finished.
    """
    untaken = iter(items)
    taking = threading.Lock()
    failed = threading.Event()

    def take_items() -> None:
        while not failed.is_set():
            with taking:
                item = next(untaken, _NONE_LEFT)
            if item is _NONE_LEFT:
                return
            try:
                work(cast(Item, item))
            except BaseException:
                failed.set()
                raise

    helpers = [BLOCK_HELPERS.submit(take_items) for _ in range(min(len(items), BLOCK_WORKERS) - 1)]
    try:
        take_items()
    finally:
        started = [helper for helper in helpers if not helper.cancel()]
        for helper in started:  # the items under way finish before anything is raised
            helper.exception()
    for helper in started:
        helper.result()


@dataclass(frozen=True)
class Layout:
    """The shape of an array of logits and the axis of its classes."""

    shape: tuple[int, ...]
    axis: int
    """The class axis, 0 ≤ axis < len(shape)."""

    @classmethod
    def of(cls, shape: tuple[int, ...], axis: int | None = None) -> "Layout":
        """The layout of logits of `shape` with classes on `axis` (negative counts from the end;
        default: 1, or 0 for one axis, as `F.cross_entropy` and `F.softmax` on a batch)."""
        if axis is None:
            axis = 1 if len(shape) > 1 else 0
        if not -len(shape) <= axis < len(shape):
            raise ValueError(f"axis {axis} is out of range for {len(shape)} axes")
        return cls(tuple(shape), axis % len(shape))

    @property
    def classes(self) -> int:
        """C."""
        return self.shape[self.axis]

    @cached_property
    def positions(self) -> tuple[int, ...]:
        """The shape without the class axis: (N, d1, …, dk), (N,) or ()."""
        return self.shape[: self.axis] + self.shape[self.axis + 1 :]

    @cached_property
    def rows(self) -> int:
        """R, the number of positions."""
        return math.prod(self.positions)

    @cached_property
    def is_matrix(self) -> bool:
        """True for (N, C) with classes on axis 1: rows are the array's own rows (every
        conversion is the identity)."""
        return len(self.shape) == 2 and self.axis == 1

    def to_rows(self, array: NDArray[np.generic]) -> NDArray[np.generic]:
        """An array of this shape as (R, C), class axis last (a view when it already is)."""
        if self.is_matrix:
            return array
        moved = np.moveaxis(array, self.axis, -1)
        return np.ascontiguousarray(moved).reshape(self.rows, self.classes)

    def per_class(self, rows: NDArray[np.generic]) -> NDArray[np.generic]:
        """(R, C) results in the logits' own shape."""
        if self.is_matrix:
            return rows
        shaped = rows.reshape(*self.positions, self.classes)
        return np.moveaxis(shaped, -1, self.axis)

    def per_position(self, values: NDArray[np.generic]) -> NDArray[np.generic]:
        """(R,) results in the shape of the positions ((N, d1, …, dk), or () for one)."""
        if self.is_matrix:
            return values
        return values.reshape(self.positions)

    def per_class_pair(self, blocks: NDArray[np.generic]) -> NDArray[np.generic]:
        """(R, C, C) blocks as (*positions, C, C): one C × C block per position."""
        if self.is_matrix:
            return blocks
        return blocks.reshape(*self.positions, self.classes, self.classes)

    def position(self, row: int) -> tuple[int, ...]:
        """The index of row `row` among the positions."""
        return (
            tuple(int(i) for i in np.unravel_index(row, self.positions)) if self.positions else ()
        )

    def entry(self, row: int, column: int) -> tuple[int, ...]:
        """The index, in the logits' own shape, of entry (row, column) of the rows."""
        position = self.position(row)
        return (*position[: self.axis], column, *position[self.axis :])

    def output_index(self, index: tuple[int, ...], kind: str) -> tuple[int, ...]:
        """The caller's index of an entry of a rows-shaped result: `kind` "class" for (R, C)
        results, "pair" for (R, C, C) blocks, "position" for (R,)."""
        if kind == "class":
            return self.entry(index[0], index[1])
        return (*self.position(index[0]), *index[1:])
