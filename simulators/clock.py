"""Waiting for a fleet to reach a condition, with a deadline and a message that says what never happened.

Fleet tests wait on things that take a broker round trip or a reconnect back-off; a fixed sleep is either too
short on a busy machine or wastes time on an idle one, so everything polls a predicate instead.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(predicate: Callable[[], T | None], *, timeout: float, what: str, interval: float = 0.05) -> T:
    """Poll `predicate` until it returns something truthy and return that; TimeoutError naming `what` if not."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


async def wait_until_async(
    predicate: Callable[[], T | None], *, timeout: float, what: str, interval: float = 0.05
) -> T:
    """`wait_until` for code on an event loop: sleeps without blocking the loop."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")
        await asyncio.sleep(interval)


class Stopwatch:
    """Seconds since it was made, on the monotonic clock (immune to wall-clock jumps)."""

    def __init__(self) -> None:
        self.started = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.started
