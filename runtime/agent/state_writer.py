"""Durable writes of a state directory, off the event loop: in order, with the saves that pile up coalesced.

The agent saves a module record or the manifest several times per deployment, each with two fsyncs; on the
event loop they would stall every other task of the agent (and, in a simulated fleet, of the agents that share
its loop). Here each save is queued under a key (its file) and a worker thread writes the queue in order. While
it writes, new saves pile up: a second save under a key replaces the first and moves to the end of the queue,
so the latest state wins and nothing queued before a save reaches the disk after it. A caller that needs its
saves on disk before it goes on (before it starts or stops a process, before it reports) awaits `flushed()`.

The directories waiting for a worker take turns in the order they asked, except that one somebody waits on goes
first: in a simulated fleet a hundred manifests arrive together, and the agent about to start a module should
not wait for the ninety-nine saves nobody needs yet.

One writer serves one state directory however many `StateDir` objects point at it, so an agent started again
in the same process never overtakes the saves of the one before it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

Operation = Callable[[], None]

# Shared by every state directory of the process: one drain per directory runs at a time, so a device's agent
# uses one thread, and a simulated fleet at most this many for all its agents. Two keep the disk busy (a write is
# mostly waiting for fsync); more only add threads contending for the interpreter with the agents' event loops,
# while the saves somebody waits on go first anyway (see `_Turns`).
_WORKERS = 2
_pool = ThreadPoolExecutor(max_workers=_WORKERS, thread_name_prefix="edgewise-state")
_writers: weakref.WeakValueDictionary[str, StateWriter] = weakref.WeakValueDictionary()
_writers_lock = threading.Lock()


class _Turns:
    """Writers waiting for a worker thread: the first one somebody waits on, else the first that asked."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: dict[StateWriter, None] = {}  # in the order they asked
        self._urgent: dict[StateWriter, None] = {}

    def ask(self, writer: StateWriter) -> None:
        """Queue one drain of `writer` (each ask is matched by one `run_next` on a worker)."""
        with self._lock:
            self._waiting[writer] = None
        try:
            _pool.submit(self.run_next)
        except RuntimeError:  # the interpreter is shutting down: write here rather than lose the save
            self.run_next()

    def hurry(self, writer: StateWriter) -> None:
        """Someone waits on `writer`: if its drain has not begun, it goes before the others not waited on."""
        with self._lock:
            if writer in self._waiting:
                self._urgent[writer] = None

    def run_next(self) -> None:
        with self._lock:
            if self._urgent:
                writer = next(iter(self._urgent))
                del self._urgent[writer]
            else:
                writer = next(iter(self._waiting))
            del self._waiting[writer]
        writer._drain()


_turns = _Turns()


def writer_for(root: Path) -> StateWriter:
    """The writer of the state directory `root` (the same one for every path that resolves to it)."""
    key = str(root.resolve())
    with _writers_lock:
        writer = _writers.get(key)
        if writer is None:
            writer = _writers[key] = StateWriter(name=key)
        return writer


@dataclass(frozen=True)
class _Waiter:
    target: int
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[None]


class StateWriter:
    """Runs queued operations on a worker thread, in queue order; `flushed`/`wait` wait for them."""

    def __init__(self, *, name: str) -> None:
        self.name = name
        self._lock = threading.Lock()
        self._written_cond = threading.Condition(self._lock)
        self._pending: dict[str, Operation] = {}
        self._queued = 0  # operations queued so far
        self._written = 0  # every operation up to this count is done (or replaced by a later one that is)
        self._draining = False
        self._failure: Exception | None = None  # the first failed operation since a waiter last heard of one
        self._waiters: list[_Waiter] = []
        # What operations keep from one run to the next (they run one at a time, on a worker): the slot files
        # already read, so that a save does not read both slots again to learn which one to overwrite.
        self.kept: dict[str, Any] = {}

    def queue(self, key: str, operation: Operation) -> None:
        """Run `operation` after everything queued before it; it replaces an operation still waiting under `key`."""
        with self._lock:
            self._pending.pop(key, None)
            self._pending[key] = operation
            self._queued += 1
            if self._draining:
                return
            self._draining = True
        _turns.ask(self)

    async def flushed(self) -> None:
        """Return once everything queued before this call is on disk; raise the first failure since the last
        wait (the failed file keeps its previous content)."""
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._written >= self._queued:
                failure, self._failure = self._failure, None
                if failure is not None:
                    raise failure
                return
            waiter = _Waiter(target=self._queued, loop=loop, future=loop.create_future())
            self._waiters.append(waiter)
        _turns.hurry(self)
        await waiter.future

    def wait(self, *, check: bool = True) -> None:
        """Block until everything queued before this call is done; with `check`, raise as `flushed` does."""
        with self._lock:
            target = self._queued
            if self._written < target:
                _turns.hurry(self)
            while self._written < target:
                self._written_cond.wait()
            if check:
                failure, self._failure = self._failure, None
                if failure is not None:
                    raise failure

    def _drain(self) -> None:
        while True:
            with self._lock:
                if not self._pending:
                    self._draining = False
                    return
                batch, self._pending = list(self._pending.values()), {}
                upto = self._queued
            failure: Exception | None = None
            for operation in batch:
                try:
                    operation()
                except Exception as exc:  # one failed file must not stop the others or the writer
                    log.warning("could not save agent state under %s: %s", self.name, exc)
                    failure = failure or exc
            self._finish(upto, failure)

    def _finish(self, upto: int, failure: Exception | None) -> None:
        with self._lock:
            self._written = upto
            if self._failure is None:
                self._failure = failure
            ready = [w for w in self._waiters if w.target <= upto]
            self._waiters = [w for w in self._waiters if w.target > upto]
            delivered = self._failure if ready else None
            if ready:
                self._failure = None
            self._written_cond.notify_all()
        for waiter in ready:
            with contextlib.suppress(RuntimeError):  # the waiter's loop is closed: nobody is waiting any more
                waiter.loop.call_soon_threadsafe(_settle, waiter.future, delivered)


def _settle(future: asyncio.Future[None], failure: Exception | None) -> None:
    if future.done():  # the waiting task was cancelled
        return
    if failure is None:
        future.set_result(None)
    else:
        future.set_exception(failure)
