"""Schedulers between the dataplane and a backend: straight through, or dynamic batching.

The dynamic batcher never makes a lone request wait: a request joins the queue and the queue is drained
on the next turn of the event loop, so requests that arrived together (concurrent clients) are merged
into one backend call, while one request in flight costs a single loop turn. `max_queue_delay_us` lets a
batch wait longer for company, as Triton's option of the same name does.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import numpy as np
from edgewise.runtime.scoring.backends.base import Backend
from edgewise.runtime.scoring.errors import InferenceFailedError, ScoringError
from edgewise.runtime.scoring.stats import ModelStats

Tensors = dict[str, np.ndarray]


class Scheduler:
    """Runs a backend for one model version."""

    def __init__(self, backend: Backend, stats: ModelStats) -> None:
        self.backend = backend
        self.stats = stats

    async def infer(self, inputs: Tensors, outputs: list[str], batch: int) -> Tensors:
        start = time.perf_counter_ns()
        result = self.backend.predict(inputs, outputs)
        infer_ns = time.perf_counter_ns() - start
        self.stats.record_execution(max(batch, 1), 0, infer_ns, 0)
        return result


@dataclass(slots=True, eq=False)
class _Pending:
    inputs: Tensors
    outputs: list[str]
    batch: int
    key: tuple[object, ...]
    future: asyncio.Future[Tensors]
    enqueued_ns: int = field(default_factory=time.perf_counter_ns)


def _batch_key(inputs: Tensors, outputs: list[str]) -> tuple[object, ...]:
    """Requests merge only when every input agrees in dtype and in all but the batch dimension."""
    return (
        tuple(sorted((n, a.dtype.str, a.shape[1:]) for n, a in inputs.items())),
        tuple(outputs),
    )


class DynamicBatcher(Scheduler):
    def __init__(
        self, backend: Backend, stats: ModelStats, *, max_batch_size: int, max_queue_delay_us: int = 0
    ) -> None:
        super().__init__(backend, stats)
        self.max_batch_size = max_batch_size
        self.max_queue_delay_ns = max_queue_delay_us * 1000
        self._queue: list[_Pending] = []
        self._scheduled = False
        self._timer: asyncio.TimerHandle | None = None

    async def infer(self, inputs: Tensors, outputs: list[str], batch: int) -> Tensors:
        loop = asyncio.get_running_loop()
        item = _Pending(inputs, outputs, batch, _batch_key(inputs, outputs), loop.create_future())
        self._queue.append(item)
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._drain)
        return await item.future

    def _drain(self) -> None:
        self._scheduled = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._queue:
            group, size = self._take_group()
            waited = time.perf_counter_ns() - self._queue[0].enqueued_ns
            if size < self.max_batch_size and waited < self.max_queue_delay_ns and len(group) == len(
                self._queue
            ):
                # Everything queued fits in one batch with room to spare: wait for company, within the delay.
                loop = asyncio.get_running_loop()
                self._timer = loop.call_later((self.max_queue_delay_ns - waited) / 1e9, self._drain)
                return
            for item in group:
                self._queue.remove(item)
            self._execute(group, size)

    def _take_group(self) -> tuple[list[_Pending], int]:
        first = self._queue[0]
        group = [first]
        size = first.batch
        for item in self._queue[1:]:
            if item.key == first.key and size + item.batch <= self.max_batch_size:
                group.append(item)
                size += item.batch
        return group, size

    def _execute(self, group: list[_Pending], size: int) -> None:
        now = time.perf_counter_ns()
        for item in group:
            self.stats.record_queue(now - item.enqueued_ns)
        try:
            if len(group) == 1:
                merged, input_ns = group[0].inputs, 0
            else:
                merged = {name: np.concatenate([g.inputs[name] for g in group]) for name in group[0].inputs}
                input_ns = time.perf_counter_ns() - now
            start = time.perf_counter_ns()
            result = self.backend.predict(merged, group[0].outputs)
            infer_ns = time.perf_counter_ns() - start
            start = time.perf_counter_ns()
            parts = self._split(result, group, size)
            output_ns = time.perf_counter_ns() - start
        except ScoringError as exc:
            for item in group:
                if not item.future.done():
                    item.future.set_exception(exc)
            return
        except Exception as exc:  # a backend bug must fail the requests, not the loop
            error = InferenceFailedError(f"inference failed: {exc}")
            for item in group:
                if not item.future.done():
                    item.future.set_exception(error)
            return
        self.stats.record_execution(size, input_ns, infer_ns, output_ns)
        for item, part in zip(group, parts, strict=True):
            if not item.future.done():  # the caller may have gone away
                item.future.set_result(part)

    @staticmethod
    def _split(result: Tensors, group: list[_Pending], size: int) -> list[Tensors]:
        if len(group) == 1:
            return [result]
        for name, array in result.items():
            if array.ndim == 0 or array.shape[0] != size:
                raise InferenceFailedError(
                    f"output {name!r} has shape {array.shape}, which does not keep the batch dimension "
                    f"of {size}; set max_batch_size to 0 for this model"
                )
        parts: list[Tensors] = []
        offset = 0
        for item in group:
            parts.append({name: array[offset : offset + item.batch] for name, array in result.items()})
            offset += item.batch
        return parts
