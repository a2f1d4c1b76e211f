"""Start slots: how many modules may be starting at once in one process (see `StartSlots`)."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import threading
from collections.abc import AsyncIterator

# the slot pools whose slot the running task holds: a nested request for the same pool is already served
_held: contextvars.ContextVar[frozenset[StartSlots]] = contextvars.ContextVar("start_slots_held", default=frozenset())


class StartSlots:
    """At most `size` modules starting at a time, across the threads and event loops of one process.

    Starting modules compete for the CPU: started all at once they share it and all become ready late; taken
    in turns, the first are ready early and the last no later. A start holds its slot until its module is
    ready, or for `hold` seconds at most, so that a slow module does not hold the others back.
    """

    def __init__(self, *, size: int, hold: float) -> None:
        self.size = size
        self.hold = hold
        self._free = size
        self._lock = threading.Lock()
        self._waiters: collections.deque[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = collections.deque()

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold a slot for the block; a block inside one that holds a slot of these already just runs."""
        if self in _held.get():
            yield
            return
        await self._acquire()
        token = _held.set(_held.get() | {self})
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self._release()

        timer = asyncio.get_running_loop().call_later(self.hold, release)
        try:
            yield
        finally:
            _held.reset(token)
            timer.cancel()
            release()

    async def _acquire(self) -> None:
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._free > 0 and not self._waiters:
                self._free -= 1
                return
            waiter: asyncio.Future[None] = loop.create_future()
            self._waiters.append((loop, waiter))
        try:
            await waiter
        except asyncio.CancelledError:
            with self._lock:
                if (loop, waiter) in self._waiters:
                    self._waiters.remove((loop, waiter))
                elif waiter.done() and not waiter.cancelled():
                    self._release_locked()  # handed a slot just as it was cancelled: pass it on
            raise

    def _release(self) -> None:
        with self._lock:
            self._release_locked()

    def _release_locked(self) -> None:
        while self._waiters:
            loop, waiter = self._waiters.popleft()
            if loop.is_closed():
                continue
            loop.call_soon_threadsafe(self._hand_over, waiter)
            return
        self._free += 1

    def _hand_over(self, waiter: asyncio.Future[None]) -> None:
        if waiter.cancelled():
            self._release()
        else:
            waiter.set_result(None)
