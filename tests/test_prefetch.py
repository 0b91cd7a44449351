"""sspl.data.prefetch: an iterator advanced in a background thread (the video decoding of sspl.localize)."""

from __future__ import annotations

import threading

import pytest

from sspl.data.prefetch import prefetch


def _alive(name: str) -> bool:
    return any(t.name == name for t in threading.enumerate())


def test_items_arrive_in_order_and_the_thread_ends():
    assert list(prefetch(iter(range(50)), 2, name="test-prefetch-order")) == list(range(50))
    assert not _alive("test-prefetch-order")


def test_at_most_depth_items_are_made_ahead_of_the_consumer():
    made = []
    ahead = []

    def items():
        for k in range(20):
            made.append(k)
            yield k

    for k in prefetch(items(), 3, name="test-prefetch-depth"):
        ahead.append(len(made) - (k + 1))
    # depth items queued, one more in the producer's hand waiting for a free slot
    assert max(ahead) <= 3 + 1


def test_an_error_in_the_items_is_raised_in_the_consumer_after_the_items_before_it():
    def items():
        yield 1
        yield 2
        raise OSError("disk gone")

    got = []
    with pytest.raises(OSError, match="disk gone"):
        for item in prefetch(items(), 2, name="test-prefetch-error"):
            got.append(item)
    assert got == [1, 2]
    assert not _alive("test-prefetch-error")


def test_a_consumer_stopping_early_stops_the_thread_and_closes_the_items():
    closed = threading.Event()

    def items():
        try:
            yield from range(10_000)
        finally:
            closed.set()

    stream = prefetch(items(), 2, name="test-prefetch-stop")
    assert next(stream) == 0
    stream.close()
    assert closed.is_set()
    assert not _alive("test-prefetch-stop")
