"""Direct methods against a real reconciler over a real state directory: arguments, answers, log tails."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from edgewise.runtime.agent.drivers import choose_sandbox
from edgewise.runtime.agent.executor import Executor
from edgewise.runtime.agent.images import ImageStore
from edgewise.runtime.agent.methods import Answer, Methods, tail_lines
from edgewise.runtime.agent.reconciler import Reconciler
from edgewise.runtime.agent.state import ModuleRecord, StateDir
from edgewise.runtime.agent.supervisor import Supervisor


def methods_for(root: Path) -> Methods:
    state = StateDir(root=root)
    store = ImageStore(root=state.images_dir, budget_bytes=10**8)
    supervisor = Supervisor(sandbox=choose_sandbox("none"), stop_grace=1.0)
    reconciler = Reconciler(
        state=state,
        executor=Executor(state=state, store=store, supervisor=supervisor),
        supervisor=supervisor,
        store=store,
        device_id="cam-7",
        public_key=Ed25519PrivateKey.generate().public_key(),
        agent_info={},
    )
    reconciler.restore()
    return Methods(control=reconciler, state=state, clock=lambda: 1234.5)


def call(methods: Methods, name: str, request: Any) -> Answer | None:
    payload = request if isinstance(request, bytes) else json.dumps(request).encode()
    return asyncio.run(methods.handle(name, payload))


def test_ping(tmp_path: Path) -> None:
    answer = call(methods_for(tmp_path), "ping", {"id": "r1"})
    assert answer is not None
    assert json.loads(answer.payload()) == {"id": "r1", "status": 200, "result": {"pong": True, "time": 1234.5}}


def test_unknown_method_is_404(tmp_path: Path) -> None:
    answer = call(methods_for(tmp_path), "reboot", {"id": "r2", "args": {}})
    assert answer is not None and answer.status == 404 and "unknown method" in (answer.error or "")
    assert "result" not in json.loads(answer.payload())


@pytest.mark.parametrize(
    ("name", "args", "status"),
    [
        ("restart", {}, 400),
        ("restart", {"module": 5}, 400),
        ("restart", {"module": "nope"}, 404),
        ("logs", {"module": "nope"}, 404),
        ("logs", {"module": "iris", "lines": 0}, 400),
        ("logs", {"module": "iris", "lines": 1001}, 400),
        ("logs", {"module": "iris", "lines": "10"}, 400),
        ("logs", {"module": "iris", "lines": True}, 400),
        ("ping", [], 400),
    ],
)
def test_bad_arguments(tmp_path: Path, name: str, args: Any, status: int) -> None:
    StateDir(root=tmp_path).save_record(ModuleRecord(name="iris"))
    answer = call(methods_for(tmp_path), name, {"id": "r3", "args": args})
    assert answer is not None and answer.status == status, answer


@pytest.mark.parametrize("payload", [b"not json", b"[]", b'{"args": {}}', b'{"id": "a/b"}', b'{"id": ""}'])
def test_requests_without_a_usable_id_get_no_answer(tmp_path: Path, payload: bytes) -> None:
    assert call(methods_for(tmp_path), "ping", payload) is None


def test_logs_returns_the_last_lines(tmp_path: Path) -> None:
    state = StateDir(root=tmp_path)
    state.save_record(ModuleRecord(name="iris"))
    state.log_path("iris").write_text("".join(f"line {i}\n" for i in range(1, 251)))
    methods = methods_for(tmp_path)
    default = call(methods, "logs", {"id": "r4", "args": {"module": "iris"}})
    assert default is not None and default.result is not None
    assert default.result["lines"] == [f"line {i}" for i in range(151, 251)]
    three = call(methods, "logs", {"id": "r5", "args": {"module": "iris", "lines": 3}})
    assert three is not None and three.result is not None
    assert three.result["lines"] == ["line 248", "line 249", "line 250"]


def test_tail_of_a_large_or_missing_file(tmp_path: Path) -> None:
    assert tail_lines(tmp_path / "absent", 5) == []
    big = tmp_path / "big.log"
    big.write_text("".join(f"{i:08d} " + "x" * 200 + "\n" for i in range(5000)))
    lines = tail_lines(big, 1000)
    assert len(lines) == 1000 and lines[0].startswith("00004000") and lines[-1].startswith("00004999")
