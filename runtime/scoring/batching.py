"""Schedulers between the dataplane and a backend: straight through, or dynamic batching.

The dynamic batcher never makes a lone request wait: a request joins the queue and the queue is drained
on the next turn of the event loop, so requests that arrived together (concurrent clients) are merged
into one backend call, while one request in flight costs a single loop turn. While a slow model's batch
runs on the executor, new requests queue up and form the next batch. `max_queue_delay_us` lets a batch
wait longer for company, as Triton's option of the same name does.
"""

from __future__ import annotations

import asyncio
import functools
import time
from dataclasses import dataclass, field

import numpy as np
from edgewise.runtime.scoring.backends.base import Backend
from edgewise.runtime.scoring.errors import InferenceFailedError, ScoringError
from edgewise.runtime.scoring.stats import ModelStats
from edgewise.runtime.scoring.types import Parameters

Tensors = dict[str, np.ndarray]

# Batches of models slower than this (on average) run on the executor, so that the event loop keeps
# decoding requests meanwhile; faster models run inline, where a thread hop would cost more than they do.
OFFLOAD_NS = 1_000_000


class Scheduler:
    """Runs a backend for one model version.

    `returns_parameters` says which of `infer` and `infer_with_parameters` the dataplane calls, so that backends
    without response parameters keep a path that allocates nothing for them.
    """

    def __init__(self, backend: Backend, stats: ModelStats) -> None:
        self.backend = backend
        self.stats = stats
        self.returns_parameters = backend.returns_parameters

    async def infer(self, inputs: Tensors, outputs: list[str], batch: int) -> Tensors:
        start = time.perf_counter_ns()
        result = self.backend.predict(inputs, outputs)
        infer_ns = time.perf_counter_ns() - start
        self.stats.record_execution(max(batch, 1), 0, infer_ns, 0)
        return result

    async def infer_with_parameters(
        self, inputs: Tensors, outputs: list[str], batch: int
    ) -> tuple[Tensors, Parameters]:
        start = time.perf_counter_ns()
        result, parameters = self.backend.predict_with_parameters(inputs, outputs)
        infer_ns = time.perf_counter_ns() - start
        self.stats.record_execution(max(batch, 1), 0, infer_ns, 0)
        self.stats.record_parameters(parameters)
        return result, parameters


@dataclass(slots=True, eq=False)
class _Pending:
    inputs: Tensors
    outputs: list[str]
    batch: int
    key: tuple[object, ...]
    future: asyncio.Future[Tensors]
    enqueued_ns: int = field(default_factory=time.perf_counter_ns)


@dataclass(slots=True)
class _Outcome:
    parts: list[Tensors] | None
    error: ScoringError | None
    times: tuple[int, int, int]  # ns spent merging inputs, in the backend, splitting outputs


def _batch_key(inputs: Tensors, outputs: list[str]) -> tuple[object, ...]:
    """Requests merge only when every input agrees in dtype and in all but the batch dimension."""
    return (
        tuple(sorted((n, a.dtype.str, a.shape[1:]) for n, a in inputs.items())),
        tuple(outputs),
    )


class DynamicBatcher(Scheduler):
    """Merges queued requests into batches; slow models' batches run on the loop's executor.

    One batch per model runs at a time (`_busy`), which keeps a backend's calls serial. A batch has no
    per-request response parameters, so the registry never batches a backend that returns them.
    """

    def __init__(
        self, backend: Backend, stats: ModelStats, *, max_batch_size: int, max_queue_delay_us: int = 0
    ) -> None:
        super().__init__(backend, stats)
        self.returns_parameters = False
        self.max_batch_size = max_batch_size
        self.max_queue_delay_ns = max_queue_delay_us * 1000
        self._queue: list[_Pending] = []
        self._scheduled = False
        self._busy = False
        self._timer: asyncio.TimerHandle | None = None
        self._infer_ns_avg = 0.0  # moving average of backend time per execution

    async def infer(self, inputs: Tensors, outputs: list[str], batch: int) -> Tensors:
        loop = asyncio.get_running_loop()
        item = _Pending(inputs, outputs, batch, _batch_key(inputs, outputs), loop.create_future())
        self._queue.append(item)
        if self._scheduled or self._busy:
            return await item.future
        self._scheduled = True
        if self.max_queue_delay_ns or self._infer_ns_avg >= OFFLOAD_NS:
            loop.call_soon(self._drain)
            return await item.future
        # Fast path: yield one loop turn so that requests which arrived together can join, then drain
        # inline from this task, which saves the wake-up a separate drain callback would cost.
        try:
            await asyncio.sleep(0)
        except asyncio.CancelledError:
            loop.call_soon(self._drain)  # the others still need their batch
            raise
        self._drain()
        return await item.future

    def _drain(self) -> None:
        self._scheduled = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._queue and not self._busy:
            group, size = self._take_group()
            waited = time.perf_counter_ns() - self._queue[0].enqueued_ns
            if size < self.max_batch_size and waited < self.max_queue_delay_ns and len(group) == len(self._queue):
                # Everything queued fits in one batch with room to spare: wait for company, within the delay.
                loop = asyncio.get_running_loop()
                self._timer = loop.call_later((self.max_queue_delay_ns - waited) / 1e9, self._drain)
                return
            taken = {id(item) for item in group}
            self._queue = [item for item in self._queue if id(item) not in taken]
            now = time.perf_counter_ns()
            for item in group:
                self.stats.record_queue(now - item.enqueued_ns)
            if self._infer_ns_avg < OFFLOAD_NS:
                # A fast model runs inline: a thread hop would cost more than the model.
                self._finish(group, size, self._compute(group, size))
            else:
                self._busy = True
                future = asyncio.get_running_loop().run_in_executor(None, self._compute, group, size)
                future.add_done_callback(functools.partial(self._finish_async, group, size))

    def _take_group(self) -> tuple[list[_Pending], int]:
        first = self._queue[0]
        group = [first]
        size = first.batch
        for item in self._queue[1:]:
            if item.key == first.key and size + item.batch <= self.max_batch_size:
                group.append(item)
                size += item.batch
        return group, size

    def _compute(self, group: list[_Pending], size: int) -> _Outcome:
        """Merge, run and split; safe to call off the loop thread."""
        try:
            start = time.perf_counter_ns()
            if len(group) == 1:
                merged = group[0].inputs
            else:
                merged = {name: np.concatenate([g.inputs[name] for g in group]) for name in group[0].inputs}
            mid = time.perf_counter_ns()
            result = self.backend.predict(merged, group[0].outputs)
            end = time.perf_counter_ns()
            parts = self._split(result, group, size)
            return _Outcome(parts, None, (mid - start, end - mid, time.perf_counter_ns() - end))
        except ScoringError as exc:
            return _Outcome(None, exc, (0, 0, 0))
        except Exception as exc:  # a backend bug must fail the requests, not the server
            return _Outcome(None, InferenceFailedError(f"inference failed: {exc}"), (0, 0, 0))

    def _finish_async(self, group: list[_Pending], size: int, future: asyncio.Future[_Outcome]) -> None:
        self._busy = False
        self._finish(group, size, future.result())
        if self._queue and not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._drain)

    def _finish(self, group: list[_Pending], size: int, outcome: _Outcome) -> None:
        if outcome.error is not None:
            for item in group:
                if not item.future.done():
                    item.future.set_exception(outcome.error)
            return
        assert outcome.parts is not None
        self.stats.record_execution(size, *outcome.times)
        self._infer_ns_avg += (outcome.times[1] - self._infer_ns_avg) * 0.1
        for item, part in zip(group, outcome.parts, strict=True):
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
