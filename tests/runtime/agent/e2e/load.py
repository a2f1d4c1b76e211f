"""Scoring traffic against a module's public HTTP port (KServe v2 REST), counting what succeeded and who answered.

Two kinds of client: one that opens a new connection per request, and one that keeps a connection alive and
never retries: a stopping version must tell it `Connection: close` in an answer rather than close the
connection under its next request. Anything that does not end in a 200 with the expected answer is a failure.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections import Counter
from dataclasses import dataclass

from tests.runtime.agent.e2e.images import INPUT, MODEL_NAME, OUTPUT, WIDTH

HOST = "127.0.0.1"
_X = [1.0, 2.0, 3.0, 4.0]
_BODY = json.dumps({"inputs": [{"name": INPUT, "shape": [1, WIDTH], "datatype": "FP32", "data": _X}]}).encode()
_HEADERS = {"Content-Type": "application/json"}


class InferenceError(Exception):
    """A request that did not end in a correct answer."""


@dataclass(frozen=True)
class Answer:
    version: str  # the model_version the server said answered
    factor: float  # y / x, i.e. which model computed it
    at: float  # time.monotonic() when it arrived


def parse_answer(status: int, body: bytes) -> Answer:
    if status != 200:
        raise InferenceError(f"HTTP {status}: {body[:300]!r}")
    document = json.loads(body)
    outputs = {out["name"]: out for out in document.get("outputs", [])}
    if OUTPUT not in outputs:
        raise InferenceError(f"no output {OUTPUT!r} in {body[:300]!r}")
    data = [float(v) for v in outputs[OUTPUT]["data"]]
    factor = data[0] / _X[0]
    if any(abs(y - x * factor) > 1e-3 * max(1.0, abs(y)) for x, y in zip(_X, data, strict=True)):
        raise InferenceError(f"inconsistent answer {data} for {_X}")
    return Answer(version=str(document.get("model_version", "")), factor=factor, at=time.monotonic())


def infer_once(port: int, *, model: str = MODEL_NAME, timeout: float = 10.0) -> Answer:
    """One inference on a fresh connection; raises on any failure."""
    connection = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        connection.request("POST", f"/v2/models/{model}/infer", body=_BODY, headers=_HEADERS)
        response = connection.getresponse()
        return parse_answer(response.status, response.read())
    finally:
        connection.close()


def try_infer(port: int, *, model: str = MODEL_NAME) -> Answer | None:
    try:
        return infer_once(port, model=model, timeout=5.0)
    except (OSError, InferenceError, http.client.HTTPException, ValueError):
        return None


class ScoringLoad:
    """Background threads sending inferences to one port until `stop()`."""

    def __init__(
        self,
        *,
        port: int,
        model: str = MODEL_NAME,
        fresh_clients: int = 1,
        keepalive_clients: int = 1,
        pause: float = 0.005,
        timeout: float = 10.0,
    ) -> None:
        self.port = port
        self.model = model
        self.pause = pause
        self.timeout = timeout
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.answers: list[Answer] = []
        self.failures: list[str] = []
        self._threads = [
            threading.Thread(target=self._run_fresh, daemon=True, name=f"load-fresh-{i}") for i in range(fresh_clients)
        ] + [
            threading.Thread(target=self._run_keepalive, daemon=True, name=f"load-keepalive-{i}")
            for i in range(keepalive_clients)
        ]

    def __enter__(self) -> ScoringLoad:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> ScoringLoad:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(self.timeout + 5)

    # ---- results ----

    @property
    def successes(self) -> int:
        with self._lock:
            return len(self.answers)

    def versions(self, since: int = 0) -> Counter[str]:
        with self._lock:
            return Counter(answer.version for answer in self.answers[since:])

    def mark(self) -> int:
        """A position in the answers, for `versions(since=...)`."""
        with self._lock:
            return len(self.answers)

    def wait_answers(self, count: int, *, since: int = 0, version: str | None = None, timeout: float = 30.0) -> None:
        """Wait for `count` more answers after `since` (from `version`, if given)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.versions(since)
            if (got[version] if version is not None else sum(got.values())) >= count:
                return
            time.sleep(0.02)
        raise TimeoutError(
            f"expected {count} answers{f' from version {version}' if version else ''} within {timeout:g}s; "
            f"got {dict(self.versions(since))}; failures: {self.failures[-5:]}"
        )

    def summary(self) -> str:
        return (
            f"{self.successes} answers {dict(self.versions())}, {len(self.failures)} failures "
            f"{self.failures[:5]}"
        )

    # ---- clients ----

    def _record(self, answer: Answer | None, failure: str | None) -> None:
        with self._lock:
            if answer is not None:
                self.answers.append(answer)
            if failure is not None:
                self.failures.append(f"{time.strftime('%H:%M:%S')} {failure}")

    def _run_fresh(self) -> None:
        while not self._stop.is_set():
            try:
                self._record(infer_once(self.port, model=self.model, timeout=self.timeout), None)
            except (OSError, InferenceError, http.client.HTTPException, ValueError) as exc:
                self._record(None, f"fresh connection: {type(exc).__name__}: {exc}")
            self._stop.wait(self.pause)

    def _run_keepalive(self) -> None:
        connection: http.client.HTTPConnection | None = None
        path = f"/v2/models/{self.model}/infer"
        while not self._stop.is_set():
            if connection is None:
                connection = http.client.HTTPConnection(HOST, self.port, timeout=self.timeout)
            current = connection
            try:
                current.request("POST", path, body=_BODY, headers=_HEADERS)
                response = current.getresponse()
                body = response.read()
                self._record(parse_answer(response.status, body), None)
                if response.will_close:
                    current.close()
                    connection = None
            except (OSError, InferenceError, http.client.HTTPException, ValueError) as exc:
                current.close()
                connection = None
                self._record(None, f"keep-alive connection: {type(exc).__name__}: {exc}")
            self._stop.wait(self.pause)
        if connection is not None:
            connection.close()
