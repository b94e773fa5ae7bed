"""Reading ahead and writing behind: in order, bounded, and errors raised where they belong."""

import threading

import pytest

from lesionflow.io.background import AHEAD, QUEUED, WriteBehind, read_ahead
from lesionflow.pipeline.errors import LesionflowError


def test_read_ahead_yields_every_item_with_its_result_in_order_from_another_thread():
    threads = set()

    def read(item):
        threads.add(threading.current_thread().name)
        return item * 10

    assert list(read_ahead(range(7), read)) == [(i, i * 10) for i in range(7)]
    assert len(threads) == 1 and threading.current_thread().name not in threads


def test_read_ahead_reads_at_most_ahead_items_before_they_are_taken():
    started = []
    reading = read_ahead(range(10), started.append)
    next(reading)
    assert len(started) <= AHEAD + 1
    reading.close()


def test_a_read_error_is_raised_at_its_item_after_the_items_before_it():
    def read(item):
        if item == 3:
            raise LesionflowError("image 3.png is truncated")
        return item

    reading = read_ahead(range(6), read)
    assert [next(reading) for _ in range(3)] == [(0, 0), (1, 1), (2, 2)]
    with pytest.raises(LesionflowError, match="image 3.png is truncated"):
        next(reading)


def test_writes_happen_in_submission_order_and_are_all_done_when_the_block_ends():
    written = []
    with WriteBehind() as writer:
        for i in range(3 * QUEUED):
            writer.submit(written.append, i)
    assert written == list(range(3 * QUEUED))


def test_a_failed_write_is_raised_by_the_block():
    def write(value):
        if value == 2:
            raise OSError("No space left on device")

    with pytest.raises(OSError, match="No space left"), WriteBehind() as writer:
        for i in range(4):
            writer.submit(write, i)


def test_an_error_in_the_block_wins_over_pending_writes():
    with pytest.raises(ValueError, match="the network failed"), WriteBehind() as writer:
        writer.submit(lambda: None)
        raise ValueError("the network failed")
