"""`MetricBuffer`: where a run's metric points wait, and the thread that ships them in batches.

Logging is on the training loop's hot path, so `add()` only appends a tuple under a lock; building the wire
form, I/O and retries all happen on one background thread, which also keeps the points in logging order.
Memory is bounded: a full buffer makes `add()` wait for the sender instead of dropping points. Points the
sender cannot deliver within `give_up_after` seconds are written to stderr with their count, never dropped
silently.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TextIO

import orjson
from edgewise.cloud.errors import ConflictError

# A point as the buffer keeps it: (name, value, step, timestamp) for a scalar, plus (kind, payload) otherwise.
Point = tuple[Any, ...]
Sender = Callable[[list[dict[str, Any]]], None]


class RetryableError(Exception):
    """Raised by a sender for failures worth retrying (the service is unreachable or restarting)."""


def wire(point: Point) -> dict[str, Any]:
    """The JSON form of a buffered point (`MetricPoint.to_dict()` without the defaults)."""
    if len(point) == 4:
        return {"name": point[0], "value": point[1], "step": point[2], "timestamp": point[3]}
    return {
        "name": point[0],
        "value": point[1],
        "step": point[2],
        "timestamp": point[3],
        "kind": point[4],
        "payload": point[5],
    }


class MetricBuffer:
    """Ordered, bounded, batched delivery of one run's metric points through `send`."""

    def __init__(
        self,
        *,
        send: Sender,
        interval: float = 0.2,
        batch_size: int = 5000,
        max_points: int = 200_000,
        give_up_after: float = 60.0,
        retry_delays: tuple[float, float] = (0.1, 5.0),
        stderr: TextIO | None = None,
        label: str = "run",
    ) -> None:
        if batch_size < 1 or max_points < batch_size:
            raise ValueError("need 1 <= batch_size <= max_points")
        self._send = send
        self._interval = interval
        self._batch_size = batch_size
        self._max_points = max_points
        self._give_up_after = give_up_after
        self._retry_delays = retry_delays
        self._stderr = stderr
        self._label = label
        # An RLock: a SIGTERM handler may flush while the main thread it interrupted holds the lock.
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._pending: list[Point] = []
        self._counts: dict[str, int] = {}
        self._added = 0  # points ever added
        self._handled = 0  # points delivered or reported lost
        self._flush_to = 0  # flush() wants `_handled` to reach this
        self._lost = 0
        self._closed = False
        self._thread: threading.Thread | None = None

    # -- the hot path ----------------------------------------------------------------------------------------

    def add(
        self, name: str, value: float | None, step: int | None, kind: str | None = None, payload: Any = None
    ) -> int:
        """Queue one point; a scalar without a step gets the count of earlier points of that name (returned)."""
        now = time.time()
        with self._lock:
            if self._closed:
                raise ConflictError(f"the {self._label} is complete; no more metrics can be logged to it")
            n = self._counts.get(name, 0)
            self._counts[name] = n + 1
            if kind is None:
                self._pending.append((name, value, n if step is None else step, now))
            else:
                self._pending.append((name, value, step, now, kind, payload))
            self._added += 1
            size = len(self._pending)
            if size == self._batch_size:
                self._start_or_wake()
            elif size >= self._max_points:
                self._wait_for_room()
            elif self._thread is None:
                self._start_or_wake()
        return n

    def _start_or_wake(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"edgewise-metrics-{self._label}", daemon=True)
            self._thread.start()
        self._cond.notify_all()

    def _wait_for_room(self) -> None:
        self._start_or_wake()
        while len(self._pending) >= self._max_points and not self._closed:
            self._cond.wait(1.0)

    # -- the caller's view -----------------------------------------------------------------------------------

    @property
    def lost(self) -> int:
        """How many points could not be delivered (they went to stderr)."""
        return self._lost

    @property
    def added(self) -> int:
        return self._added

    def flush(self, timeout: float | None = None) -> bool:
        """Block until every point added so far is delivered or reported lost; False on `timeout`."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            target = self._added
            if self._handled >= target:
                return True
            self._flush_to = max(self._flush_to, target)
            self._start_or_wake()
            while self._handled < target:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(left if left is not None else 1.0)
        return True

    def close(self, timeout: float | None = None) -> bool:
        """Deliver what is left and stop the thread; later `add()` calls raise. False on `timeout`."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            thread = self._thread
        if thread is None or thread is threading.current_thread():
            return True
        thread.join(timeout)
        return not thread.is_alive()

    # -- the sender thread -----------------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._ready():
                    self._cond.wait(self._interval)
                    if self._pending:
                        break  # the interval passed: ship what there is
                batch = self._take()
                self._cond.notify_all()  # room for writers waiting on a full buffer
                if not batch and self._closed:
                    self._cond.notify_all()
                    return
            if batch:
                self._deliver(batch)
                with self._cond:
                    self._handled += len(batch)
                    self._cond.notify_all()

    def _ready(self) -> bool:
        return (
            self._closed
            or len(self._pending) >= self._batch_size
            or (self._flush_to > self._handled and bool(self._pending))
        )

    def _take(self) -> list[Point]:
        if len(self._pending) <= self._batch_size:
            batch, self._pending = self._pending, []
        else:
            batch = self._pending[: self._batch_size]
            del self._pending[: self._batch_size]
        return batch

    def _deliver(self, batch: list[Point]) -> None:
        body = [wire(p) for p in batch]
        started = time.monotonic()
        delay, max_delay = self._retry_delays
        while True:
            try:
                self._send(body)
                return
            except RetryableError as exc:
                if time.monotonic() - started + delay > self._give_up_after:
                    self._report_lost(body, f"the workspace stayed unreachable for {self._give_up_after:.0f}s: {exc}")
                    return
                time.sleep(delay)
                delay = min(delay * 2, max_delay)
            except Exception as exc:
                self._report_lost(body, str(exc) or type(exc).__name__)
                return

    def _report_lost(self, body: list[dict[str, Any]], why: str) -> None:
        self._lost += len(body)
        out = self._stderr or sys.stderr
        try:
            out.write(
                f"edgewise: WARNING: {len(body)} metric point(s) of {self._label} could not be sent ({why}); "
                "here they are, one JSON object per line:\n"
            )
            for point in body:
                out.write(orjson.dumps(point).decode() + "\n")
            out.flush()
        except (OSError, ValueError):
            pass  # stderr itself is gone; nothing else can hold them
