"""`layout.for_each_row_block`: every block once, on up to BLOCK_WORKERS threads at a time, the
caller never waiting behind another request's blocks, the first failure raised (a passed
deadline among them). That each row is still the row computed whole: `test_gradcheck.py`, rows
computed by blocks."""

import threading
import time

import numpy as np
import pytest

from app.numerics import layout
from app.numerics.candidate import KEEP_WORST, compare_output, ulp
from app.numerics.cross_entropy import Reduction, index_targets
from app.numerics.deadline import Deadline, DeadlinePassed
from app.numerics.gradcheck import BY_BLOCKS, NumericOptions, analyse_cross_entropy
from app.numerics.layout import BLOCK_ENTRIES, for_each_row_block, row_blocks

ROW_SIZE = BLOCK_ENTRIES // 4  # four rows a block


def test_every_block_is_worked_once() -> None:
    done: list[slice] = []
    lock = threading.Lock()

    def work(part: slice) -> None:
        with lock:
            done.append(part)

    for_each_row_block(work, 103, ROW_SIZE)
    expected = list(row_blocks(103, ROW_SIZE))
    assert len(expected) == 26
    assert sorted(done, key=lambda part: part.start) == expected


def test_blocks_run_on_several_threads_at_once() -> None:
    """The first two blocks meet at a barrier, which only two threads at once can pass."""
    if layout.BLOCK_WORKERS < 2:
        pytest.skip("one core: the blocks run one after the other")
    barrier = threading.Barrier(2, timeout=60)
    threads: set[int] = set()

    def work(part: slice) -> None:
        threads.add(threading.get_ident())
        if part.start < 2 * 4:
            barrier.wait()

    for_each_row_block(work, 40, ROW_SIZE)
    assert len(threads) >= 2


def test_the_caller_does_its_own_blocks_when_every_helper_is_busy() -> None:
    """Helpers busy with another request: the caller works through every block itself and
    returns without waiting for them (its queued helper is cancelled)."""
    release = threading.Event()
    started = threading.Semaphore(0)

    def occupy() -> None:
        started.release()
        release.wait(60)

    busy = [layout.BLOCK_HELPERS.submit(occupy) for _ in range(max(1, layout.BLOCK_WORKERS - 1))]
    for _ in busy:
        assert started.acquire(timeout=60)
    threads: set[int] = set()
    try:
        for_each_row_block(lambda part: threads.add(threading.get_ident()), 40, ROW_SIZE)
    finally:
        release.set()
    assert threads == {threading.get_ident()}
    for future in busy:
        future.result(timeout=60)


def test_the_first_failure_is_raised_and_stops_the_rest() -> None:
    started: list[int] = []

    def work(part: slice) -> None:
        started.append(part.start)
        if part.start == 0:
            raise ValueError("block 0")
        time.sleep(0.001)

    with pytest.raises(ValueError, match="block 0"):
        for_each_row_block(work, 400, ROW_SIZE)
    assert 0 in started and len(started) < 100


@pytest.mark.parametrize("with_nan", [False, True])
def test_a_comparison_by_blocks_on_several_threads_is_the_plain_one(with_nan: bool) -> None:
    """`compare_output` over 75 blocks, failures scattered through them (and a NaN), rows all
    zero among them: counts, maxima (ulps at each row's scale, the output's for a zero row) and
    the KEEP_WORST worst entries, largest first, as plain numpy finds them."""
    rng = np.random.default_rng(3)
    expected = rng.normal(size=(300, ROW_SIZE))
    expected[::37] = 0.0  # rows all zero (ignored samples): their ulps at the output's scale
    got = expected * (1 + rng.uniform(-1e-9, 1e-9, expected.shape))
    got[::37] = 1e-12
    wrong = rng.choice(expected.size, 40, replace=False)
    got.flat[wrong] += rng.uniform(1e-3, 1.0, wrong.size)
    if with_nan:
        got.flat[wrong[7]] = np.nan
    atol, rtol = 1e-8, 1e-6
    check = compare_output(got, expected, atol=atol, rtol=rtol)
    difference = np.abs(got - expected)
    failing = ~(difference <= atol + rtol * np.abs(expected))
    assert check.checked == expected.size and check.mismatches == int(failing.sum()) == 40
    assert check.nonfinite == int(with_nan)
    if with_nan:
        assert check.max_abs_error is None and check.max_rel_error is None
    else:
        assert check.max_abs_error == difference.max()
        row_scale = np.abs(expected).max(axis=1)
        row_scale[row_scale == 0] = np.abs(expected).max()
        row_error = difference.max(axis=1)
        assert check.max_ulp_error == (row_error / ulp(row_scale, np.dtype(np.float64))).max()
    sizes = np.nan_to_num(difference.ravel(), nan=np.inf)
    worst = np.argsort(-sizes, kind="stable")[:KEEP_WORST]
    assert [entry.index for entry in check.worst] == [
        tuple(int(i) for i in np.unravel_index(flat, expected.shape)) for flat in worst
    ]


def test_a_loss_and_gradient_by_blocks_stop_at_a_passed_deadline() -> None:
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(64, ROW_SIZE))
    labels = rng.integers(0, ROW_SIZE, 64)
    targets = index_targets(
        labels,
        ROW_SIZE,
        weight=None,
        ignore_index=-100,
        label_smoothing=0.0,
        reduction=Reduction.MEAN,
        dtype=np.float64,
    )
    passed = NumericOptions(deadline=Deadline(time.monotonic() - 1))
    with pytest.raises(DeadlinePassed):
        analyse_cross_entropy(logits, targets, Reduction.MEAN, BY_BLOCKS, passed)
    report = analyse_cross_entropy(logits, targets, Reduction.MEAN, BY_BLOCKS, NumericOptions())
    assert report.gradient is not None and report.kept_softmax is None  # computed by blocks
