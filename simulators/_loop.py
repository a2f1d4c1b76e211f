"""An event loop on a thread of its own, so synchronous tests and scripts can drive asyncio parts of a fleet."""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


class LoopThread:
    """Runs one event loop until `close`; `run` submits a coroutine from any other thread and waits for it.

    `workers` sizes the loop's default executor: every agent on the loop hands its blocking MQTT connects and
    teardowns to it, and a real device would have a whole executor to itself.
    """

    def __init__(self, *, name: str, workers: int | None = None, cpus: frozenset[int] | None = None) -> None:
        self.loop = asyncio.new_event_loop()
        self._cpus = cpus  # the loop's thread, and the threads it starts, run on these (None: where they may)
        if workers is not None:
            self.loop.set_default_executor(ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name))
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()

    def _main(self) -> None:
        if self._cpus is not None:
            with contextlib.suppress(OSError):
                os.sched_setaffinity(0, self._cpus)
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    @property
    def native_id(self) -> int | None:
        """The loop thread's id in the kernel (for its CPU affinity, say)."""
        return self._thread.native_id

    def run(self, coroutine: Coroutine[Any, Any, T], *, timeout: float | None = None) -> T:
        """Run `coroutine` on the loop and return its result (its exception is raised here)."""
        if self.in_loop():
            coroutine.close()
            raise RuntimeError("LoopThread.run was called from its own loop; await the coroutine instead")
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def in_loop(self) -> bool:
        try:
            return asyncio.get_running_loop() is self.loop
        except RuntimeError:
            return False

    def close(self) -> None:
        """Cancel what still runs on the loop, stop it and join its thread. Safe to call twice."""
        if self.loop.is_closed():
            return

        async def cancel_all() -> None:
            current = asyncio.current_task()
            tasks = [task for task in asyncio.all_tasks() if task is not current]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.loop.shutdown_default_executor()

        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(cancel_all(), self.loop).result(60)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(30)
        self.loop.close()
