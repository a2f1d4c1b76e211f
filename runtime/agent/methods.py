"""Direct methods: a request on `commands/{name}` gets one answer on `responses/{id}`.

Request: `{"id": "...", "args": {...}}`. Answer: `{"id", "status": 200, "result": {...}}` or
`{"id", "status": 4xx/5xx, "error": "..."}`. Unknown methods and unknown modules answer 404, bad
arguments 400; a request without a usable id cannot be answered and is only logged.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from edgewise.runtime.agent.state import ModuleRecord, StateDir

log = logging.getLogger(__name__)

DEFAULT_LOG_LINES = 100
MAX_LOG_LINES = 1000
_TAIL_BLOCK = 64 * 1024
_TAIL_LIMIT = 4 * 1024 * 1024  # never read more than this much of a log to find its last lines
_BAD_ID_CHARS = set("/+#\0")


class ModuleControl(Protocol):
    """What the methods need from the reconciler."""

    def knows(self, module: str) -> bool: ...

    async def restart_module(self, module: str) -> ModuleRecord | None: ...


@dataclass(frozen=True, kw_only=True)
class Answer:
    request_id: str
    status: int
    result: Mapping[str, Any] | None = None
    error: str | None = None

    def payload(self) -> bytes:
        body: dict[str, Any] = {"id": self.request_id, "status": self.status}
        if self.error is None:
            body["result"] = dict(self.result or {})
        else:
            body["error"] = self.error
        return json.dumps(body, separators=(",", ":")).encode()


class _Refusal(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Methods:
    """Dispatches `ping`, `restart` and `logs`."""

    def __init__(self, *, control: ModuleControl, state: StateDir, clock: Callable[[], float] = time.time) -> None:
        self._control = control
        self._state = state
        self._clock = clock

    async def handle(self, name: str, payload: bytes) -> Answer | None:
        """The answer to one request, or None when it carries no id to answer to."""
        try:
            request = json.loads(payload)
        except (ValueError, UnicodeDecodeError):
            log.warning("direct method %s: the request is not JSON; cannot answer it", name)
            return None
        request_id = request.get("id") if isinstance(request, dict) else None
        if not isinstance(request_id, str) or not request_id or _BAD_ID_CHARS & set(request_id):
            log.warning("direct method %s: the request has no usable 'id'; cannot answer it", name)
            return None
        args = request.get("args", {})
        if args is None:
            args = {}
        try:
            if not isinstance(args, dict):
                raise _Refusal(400, "'args' must be an object")
            result = await self._dispatch(name, args)
        except _Refusal as refusal:
            log.info("direct method %s (%s) answered %d: %s", name, request_id, refusal.status, refusal)
            return Answer(request_id=request_id, status=refusal.status, error=str(refusal))
        except Exception as exc:  # an answer is owed even when the agent trips over its own feet
            log.exception("direct method %s (%s) failed", name, request_id)
            return Answer(request_id=request_id, status=500, error=f"{type(exc).__name__}: {exc}")
        return Answer(request_id=request_id, status=200, result=result)

    async def _dispatch(self, name: str, args: Mapping[str, Any]) -> dict[str, Any]:
        if name == "ping":
            return {"pong": True, "time": self._clock()}
        if name == "restart":
            module = self._module(args)
            record = await self._control.restart_module(module)
            if record is None:
                raise _Refusal(404, f"module {module!r} is not deployed")
            return {
                "module": module,
                "runtimeStatus": record.status.value,
                "statusDescription": record.description,
                "pid": record.pid,
            }
        if name == "logs":
            module = self._module(args)
            lines = args.get("lines", DEFAULT_LOG_LINES)
            if not isinstance(lines, int) or isinstance(lines, bool) or not 1 <= lines <= MAX_LOG_LINES:
                raise _Refusal(400, f"'lines' must be an integer from 1 to {MAX_LOG_LINES}")
            return {"module": module, "lines": tail_lines(self._state.log_path(module), lines)}
        raise _Refusal(404, f"unknown method {name!r}; methods are ping, restart, logs")

    def _module(self, args: Mapping[str, Any]) -> str:
        module = args.get("module")
        if not isinstance(module, str) or not module:
            raise _Refusal(400, "'module' must name a module")
        if not self._control.knows(module):
            raise _Refusal(404, f"module {module!r} is not deployed on this device")
        return module


def tail_lines(path: Path, count: int) -> list[str]:
    """The last `count` lines of a text file (an absent file has none), read from the end."""
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed below; size needed before reading
    except FileNotFoundError:
        return []
    with handle:
        end = handle.seek(0, os.SEEK_END)
        position = end
        data = b""
        while position > 0 and data.count(b"\n") <= count and end - position < _TAIL_LIMIT:
            step = min(_TAIL_BLOCK, position)
            position -= step
            handle.seek(position)
            data = handle.read(step) + data
    lines = data.decode(errors="replace").splitlines()
    if position > 0 and lines:
        lines = lines[1:]  # the first line read is probably cut
    return lines[-count:]
