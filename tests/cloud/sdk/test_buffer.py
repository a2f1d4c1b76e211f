"""MetricBuffer: order, steps, batching, backpressure, retries and reported losses, with a real in-process sink."""

from __future__ import annotations

import io
import threading
from typing import Any

import pytest
from edgewise.cloud.errors import ConflictError
from edgewise.cloud.sdk.buffer import MetricBuffer, RetryableError

from tests.support import wait_until


class Collector:
    """A sink that keeps every batch; it can be made to fail or to hold still."""

    def __init__(self, *, failures: int = 0) -> None:
        self.batches: list[list[dict[str, Any]]] = []
        self.failures = failures
        self.calls = 0
        self.entered = threading.Event()
        self.release = threading.Event()
        self.release.set()

    def __call__(self, points: list[dict[str, Any]]) -> None:
        self.calls += 1
        self.entered.set()
        self.release.wait()
        if self.failures:
            self.failures -= 1
            raise RetryableError("connection refused")
        self.batches.append(points)

    @property
    def points(self) -> list[dict[str, Any]]:
        return [p for batch in self.batches for p in batch]


def test_points_arrive_in_order_with_counted_steps() -> None:
    sink = Collector()
    buffer = MetricBuffer(send=sink, interval=0.05)
    for i in range(1000):
        buffer.add("loss", float(i), None)
        if i % 10 == 0:
            buffer.add("acc", i / 1000, 7)
    buffer.add("table", None, None, "table", {"a": [1, 2]})
    assert buffer.flush()
    loss = [p for p in sink.points if p["name"] == "loss"]
    assert [p["value"] for p in loss] == [float(i) for i in range(1000)]
    assert [p["step"] for p in loss] == list(range(1000))
    assert {p["step"] for p in sink.points if p["name"] == "acc"} == {7}
    (table,) = [p for p in sink.points if p["name"] == "table"]
    assert table["kind"] == "table" and table["payload"] == {"a": [1, 2]} and table["step"] is None
    timestamps = [p["timestamp"] for p in sink.points]
    assert timestamps == sorted(timestamps)
    assert buffer.lost == 0
    buffer.close()


def test_an_explicit_step_still_counts_toward_later_steps() -> None:
    sink = Collector()
    buffer = MetricBuffer(send=sink)
    assert buffer.add("x", 1.0, 100) == 0
    assert buffer.add("x", 2.0, None) == 1
    buffer.close()
    assert [p["step"] for p in sink.points] == [100, 1]


def test_a_full_batch_is_sent_without_waiting_for_the_interval_or_a_flush() -> None:
    sink = Collector()
    buffer = MetricBuffer(send=sink, interval=3600, batch_size=10, max_points=100)
    for i in range(25):
        buffer.add("m", float(i), None)
    wait_until(lambda: len(sink.points) >= 20, what="two full batches")
    assert [len(b) for b in sink.batches[:2]] == [10, 10]
    assert buffer.flush()
    assert len(sink.points) == 25
    buffer.close()


def test_a_full_buffer_makes_writers_wait_instead_of_dropping() -> None:
    sink = Collector()
    sink.release.clear()  # the sink holds its first batch until released
    buffer = MetricBuffer(send=sink, interval=0.01, batch_size=10, max_points=50)
    total = 500

    def writer() -> None:
        for i in range(total):
            buffer.add("m", float(i), None)

    thread = threading.Thread(target=writer)
    thread.start()
    assert sink.entered.wait(30)
    wait_until(lambda: buffer.added >= 60, what="the buffer to fill up behind the stuck sink")
    thread.join(0.2)
    assert thread.is_alive(), "the writer should be held back by the full buffer"
    assert buffer.added <= 50 + 10 + 1  # the cap plus the batch in flight
    sink.release.set()
    thread.join(30)
    assert not thread.is_alive()
    assert buffer.flush()
    assert [p["value"] for p in sink.points] == [float(i) for i in range(total)]
    buffer.close()


def test_unreachable_service_is_retried_until_it_answers() -> None:
    sink = Collector(failures=3)
    buffer = MetricBuffer(send=sink, retry_delays=(0.01, 0.05), give_up_after=60)
    for i in range(5):
        buffer.add("m", float(i), None)
    assert buffer.flush()
    assert sink.calls == 4
    assert [p["value"] for p in sink.points] == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert buffer.lost == 0
    buffer.close()


def test_points_that_cannot_be_delivered_go_to_stderr_with_their_count() -> None:
    sink = Collector(failures=10**9)
    err = io.StringIO()
    buffer = MetricBuffer(send=sink, retry_delays=(0.01, 0.02), give_up_after=0.2, stderr=err, label="run r1")
    for i in range(3):
        buffer.add("loss", float(i), None)
    assert buffer.flush()
    assert buffer.lost == 3
    text = err.getvalue()
    assert "3 metric point(s) of run r1 could not be sent" in text
    assert text.count('"name":"loss"') == 3
    buffer.close()


def test_a_rejected_batch_is_reported_not_retried() -> None:
    calls: list[int] = []

    def reject(points: list[dict[str, Any]]) -> None:
        calls.append(len(points))
        raise ValueError("bad point")

    err = io.StringIO()
    buffer = MetricBuffer(send=reject, stderr=err)
    buffer.add("x", 1.0, None)
    assert buffer.flush()
    assert calls == [1] and buffer.lost == 1 and "bad point" in err.getvalue()
    buffer.close()


def test_close_delivers_the_rest_and_refuses_more() -> None:
    sink = Collector()
    buffer = MetricBuffer(send=sink, interval=3600)
    for i in range(7):
        buffer.add("m", float(i), None)
    assert buffer.close()
    assert len(sink.points) == 7
    with pytest.raises(ConflictError, match="complete"):
        buffer.add("m", 1.0, None)
