"""Liveness, readiness and the warm-up inference, over a module's private admin sockets.

The admin sockets (`http.sock`, `grpc.sock` in the module's admin folder) reach exactly one generation of a
module, even while two generations share the public ports during a handover. A version counts as healthy when
it answers live and ready on both protocols, every model in its repository has a version that loaded, and (with
warm-up) each model answers one inference with zero-filled inputs: a model that loads but cannot run is caught
before it takes traffic. The server runs that inference itself as it loads a model whose config keeps its
warm-up on (the default), and says so; the agent sends it only for the others.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from edgewise.runtime.agent import grpc_health, unixhttp
from edgewise.runtime.agent.errors import HealthCheckError

_POLL_FIRST = 0.01  # seconds before the second probe of a starting module; doubled up to _POLL
# seconds between looks for a starting module's admin socket during its first _POLL_LISTEN_FOR seconds (then
# _POLL): a look is one stat, and each millisecond waited after the socket appears holds the start slot
_POLL_LISTEN = 0.003
_POLL_LISTEN_FOR = 1.0
_POLL = 0.1  # seconds between probes while waiting for a module
_READY_WAIT = 10.0  # seconds one admin request may wait for a live module to become ready


@dataclass(frozen=True, kw_only=True)
class Probe:
    live: bool
    ready: bool
    detail: str


def admin_request(
    admin_dir: Path, method: str, path: str, *, body: Any = None, timeout: float = 5.0
) -> tuple[int, bytes]:
    """One HTTP request to the module's admin socket (blocking); (status, body). OSError when unreachable."""
    return unixhttp.request(admin_dir / "http.sock", method, path, body=body, timeout=timeout)


async def admin_call(
    admin_dir: Path, method: str, path: str, *, body: Any = None, timeout: float = 5.0
) -> tuple[int, bytes]:
    """`admin_request` on the event loop (no thread). OSError when unreachable, TimeoutError after `timeout`."""
    return await unixhttp.request_async(admin_dir / "http.sock", method, path, body=body, timeout=timeout)


async def _grpc_serving(admin_dir: Path, timeout: float) -> tuple[bool, str]:
    return await grpc_health.check(admin_dir / "grpc.sock", timeout=timeout)


async def _http_health(admin_dir: Path, timeout: float) -> tuple[int, int]:
    """(ready status, live status); a server that answers ready is live, so live is asked only otherwise."""
    ready_status, _ = await admin_call(admin_dir, "GET", "/v2/health/ready", timeout=timeout)
    if ready_status == 200:
        return ready_status, 200
    live_status, _ = await admin_call(admin_dir, "GET", "/v2/health/live", timeout=timeout)
    return ready_status, live_status


async def probe(admin_dir: Path, *, timeout: float = 2.0) -> Probe:
    """Live and ready over the admin HTTP socket, and the gRPC health service over the admin gRPC socket."""
    try:
        ready_status, live_status = await _http_health(admin_dir, timeout)
    except OSError as exc:
        return Probe(live=False, ready=False, detail=f"{admin_dir / 'http.sock'}: {exc.strerror or exc}")
    live = live_status == 200
    if not live:
        return Probe(live=False, ready=False, detail=f"HTTP live answered {live_status}")
    serving, grpc_detail = await _grpc_serving(admin_dir, timeout)
    ready = ready_status == 200 and serving
    if ready:
        return Probe(live=True, ready=True, detail="ready")
    http_detail = "HTTP ready" if ready_status == 200 else f"HTTP ready answered {ready_status}"
    return Probe(live=True, ready=False, detail=f"not ready: {http_detail}, {grpc_detail}")


async def wait_healthy(admin_dir: Path, *, timeout: float, warmup: bool, alive: Callable[[], bool]) -> None:
    """Return once the module is live, ready, every model loaded and (with `warmup`) answered; else raise.

    HealthCheckError says why: the process exited, the deadline passed (with the last probe's answer), a model
    failed to load, or the warm-up inference of a model failed. The caller may add the module's log tail.
    A start costs three requests: the admin state held until ready (with the model index), the gRPC health
    check, and (by the caller) the listen request. The warm-up inference is sent only for models the server
    did not run once itself before calling them ready (their config turns its warm-up off).
    """
    deadline = time.monotonic() + timeout
    http_socket = admin_dir / "http.sock"
    listen_by = time.monotonic() + _POLL_LISTEN_FOR
    last = "no answer yet"
    pause = _POLL_FIRST
    warm: set[str] = set()  # models the server ran once itself before it called them ready
    while True:
        if not alive():
            raise HealthCheckError(f"the module exited before it became healthy (last probe: {last})")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise HealthCheckError(f"the module was not healthy within {timeout:g}s: {last}")
        if not http_socket.exists():  # not bound yet: one stat per look, rather than a failed connect
            last = f"{http_socket} does not exist yet"
            await asyncio.sleep(_listen_pause(listen_by))
            continue
        hold = min(_READY_WAIT, remaining)
        asked = time.monotonic()
        try:
            state = await _admin_state(admin_dir, hold)
        except (FileNotFoundError, ConnectionRefusedError) as exc:  # bound a moment ago, not listening yet
            last = f"{http_socket}: {exc.strerror or exc}"
            await asyncio.sleep(_listen_pause(listen_by))
            continue
        except OSError as exc:
            last = f"{http_socket}: {exc.strerror or exc}"
        else:
            if state["ready"]:
                models = _ready_models(state["models"])
                warm = _warmed_up(state["models"])
                if models is None:
                    last = "a model is still loading"
                else:
                    serving, detail = await _grpc_serving(admin_dir, max(0.1, min(2.0, deadline - time.monotonic())))
                    if serving:
                        break
                    last = f"not ready: {detail}"
            else:
                last = "not ready: the server is stopping" if state.get("stopping") else "not ready yet"
                if time.monotonic() - asked >= hold / 2:
                    continue  # the server held the request as long as it could: ask again at once
        await asyncio.sleep(pause)
        pause = min(_POLL, pause * 2)
    if warmup:
        for name in [m for m in models if m not in warm]:
            if not alive():
                raise HealthCheckError("the module exited during its warm-up inference")
            await _warm_up(admin_dir, name, timeout=max(1.0, deadline - time.monotonic()))


def _listen_pause(listen_by: float) -> float:
    """Seconds until the next look for a starting module's admin socket."""
    return _POLL_LISTEN if time.monotonic() < listen_by else _POLL


async def _admin_state(admin_dir: Path, seconds: float) -> dict[str, Any]:
    """The module's admin state, held by the server until it is ready or `seconds` pass (a module that loads
    for a while is asked once, not every `_POLL`). OSError when it cannot be reached or read."""
    wait = max(0.0, seconds - 0.05)
    status, raw = await admin_call(admin_dir, "GET", f"/v2/admin/state?wait_ready={wait:.3f}", timeout=seconds + 2.0)
    if status != 200:
        raise OSError(f"the admin state answered {status}")
    try:
        state = json.loads(raw)
    except ValueError:
        raise OSError(f"the admin state is not JSON: {raw[:200]!r}") from None
    if not isinstance(state, dict) or not isinstance(state.get("models"), list):
        raise OSError("the admin state is not a JSON object with the model index")
    return state


def _warmed_up(index: list[Any]) -> set[str]:
    """The models whose ready version answered the server's own zero-input inference before it was ready: the
    agent's warm-up would ask the same again."""
    return {
        str(e.get("name"))
        for e in index
        if isinstance(e, dict) and e.get("state") == "READY" and e.get("warmedUp") is True
    }


def _ready_models(index: list[Any]) -> list[str] | None:
    """From a repository index: the models with a READY version; None while one is loading; raises if one failed."""
    states: dict[str, list[dict[str, Any]]] = {}
    for entry in index:
        if isinstance(entry, dict):
            states.setdefault(str(entry.get("name")), []).append(entry)
    ready: list[str] = []
    for name, entries in sorted(states.items()):
        if any(e.get("state") == "READY" for e in entries):
            ready.append(name)
        elif any(e.get("state") == "LOADING" for e in entries):
            return None
        else:
            reasons = "; ".join(str(e.get("reason") or "no reason given") for e in entries)
            raise HealthCheckError(f"model {name!r} did not load: {reasons}")
    return ready


async def _warm_up(admin_dir: Path, model: str, *, timeout: float) -> None:
    path = f"/v2/models/{quote(model, safe='')}"
    meta = await _get_json(admin_dir, "GET", path, timeout=timeout, what=f"metadata of model {model!r}")
    try:
        request = {"inputs": [_zero_tensor(spec) for spec in meta.get("inputs", [])]}
    except (TypeError, ValueError, AttributeError) as exc:
        raise HealthCheckError(f"warm-up of model {model!r}: unusable input metadata ({exc})") from None
    try:
        status, body = await admin_call(admin_dir, "POST", f"{path}/infer", body=request, timeout=timeout)
    except OSError as exc:
        raise HealthCheckError(f"warm-up inference of model {model!r} got no answer: {exc}") from None
    if status != 200:
        raise HealthCheckError(f"warm-up inference of model {model!r} failed with {status}: {_error_text(body)}")


def _zero_tensor(spec: dict[str, Any]) -> dict[str, Any]:
    """A zero-filled input (unknown dimensions as 1; empty strings for BYTES, false for BOOL)."""
    shape = [int(d) if int(d) >= 0 else 1 for d in spec["shape"]]
    datatype = str(spec["datatype"])
    zero: Any = "" if datatype == "BYTES" else False if datatype == "BOOL" else 0
    return {"name": spec["name"], "shape": shape, "datatype": datatype, "data": [zero] * math.prod(shape)}


async def _get_json(admin_dir: Path, method: str, path: str, *, timeout: float, what: str, body: Any = None) -> Any:
    try:
        status, raw = await admin_call(admin_dir, method, path, body=body, timeout=timeout)
    except OSError as exc:
        raise HealthCheckError(f"cannot read the {what}: {exc}") from None
    if status != 200:
        raise HealthCheckError(f"cannot read the {what}: {status} {_error_text(raw)}")
    try:
        return json.loads(raw)
    except ValueError:
        raise HealthCheckError(f"the {what} is not JSON: {raw[:200]!r}") from None


def _error_text(body: bytes) -> str:
    try:
        doc = json.loads(body)
    except ValueError:
        return body[:500].decode(errors="replace")
    if isinstance(doc, dict) and "error" in doc:
        return str(doc["error"])
    return body[:500].decode(errors="replace")
