"""Zero-downtime handover: a client hammers the public port while a module is replaced, and never fails."""

from __future__ import annotations

import asyncio
import http.client
import json
import threading
from pathlib import Path

import pytest
from edgewise.runtime.agent.drivers import PlainSandbox, Sandbox
from edgewise.runtime.agent.errors import HealthCheckError
from edgewise.runtime.agent.handover import enable_request_migration, replace, start_verified
from edgewise.runtime.agent.health import admin_request
from edgewise.runtime.agent.supervisor import Supervisor

from tests.runtime.agent.modules.conftest import LaunchFactory, Tracker
from tests.support import HOST, wait_until

BODY = json.dumps({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]})


class Hammer:
    """Inference requests back to back, each on a new connection, counting answers and failures."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.ok = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Hammer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.is_set():
            connection = http.client.HTTPConnection(HOST, self.port, timeout=30)
            try:
                connection.request(
                    "POST", "/v2/models/iris/infer", body=BODY,
                    headers={"Content-Type": "application/json", "Connection": "close"},
                )  # fmt: skip
                response = connection.getresponse()
                body = response.read()
                if response.status == 200:
                    self.ok += 1
                else:
                    self.failures.append(f"{response.status}: {body[:200]!r}")
            except (OSError, http.client.HTTPException) as exc:
                self.failures.append(repr(exc))
            finally:
                connection.close()
            self._stop.wait(0.002)

    def wait_for(self, count: int) -> None:
        target = self.ok + count
        wait_until(lambda: self.ok >= target or len(self.failures) > 0, timeout=30, what=f"{count} more answers")


def served_by(admin_dir: Path) -> int:
    status, body = admin_request(admin_dir, "GET", "/v2/models/stats")
    assert status == 200
    return sum(s["inference_count"] for s in json.loads(body)["model_stats"])


def test_defer_listen_keeps_the_public_port_closed_until_verified(make_launch: LaunchFactory, tracker: Tracker) -> None:
    supervisor = Supervisor(sandbox=PlainSandbox(), stop_grace=10.0)
    launch = make_launch()
    proc = tracker.add(supervisor, asyncio.run(start_verified(supervisor=supervisor, launch=launch)))
    status, body = admin_request(proc.admin_dir, "GET", "/v2/admin/state")
    state = json.loads(body)
    assert status == 200 and state["listening"] and state["http_port"] == launch.settings.http_port
    assert "--defer-listen" in Path(f"/proc/{proc.pid}/cmdline").read_bytes().decode().split("\0")


def test_replace_under_load_loses_no_request(sandbox: Sandbox, make_launch: LaunchFactory, tracker: Tracker) -> None:
    enable_request_migration()
    supervisor = Supervisor(sandbox=sandbox, stop_grace=10.0)
    first = make_launch(1)
    old = tracker.add(supervisor, asyncio.run(start_verified(supervisor=supervisor, launch=first)))
    with Hammer(first.settings.http_port) as hammer:
        hammer.wait_for(20)
        second = make_launch(2)
        new = tracker.add(supervisor, asyncio.run(replace(supervisor=supervisor, old=old, launch=second)))
        assert supervisor.exit_status(old)[0]
        hammer.wait_for(50)
    assert hammer.failures == []
    assert served_by(second.admin_dir) > 0  # the new version took the traffic over
    assert supervisor.exit_status(new) == (False, None)


def test_broken_new_version_leaves_the_old_one_serving(
    sandbox: Sandbox, make_launch: LaunchFactory, tracker: Tracker
) -> None:
    enable_request_migration()
    supervisor = Supervisor(sandbox=sandbox, stop_grace=10.0)
    first = make_launch(1)
    old = tracker.add(supervisor, asyncio.run(start_verified(supervisor=supervisor, launch=first)))
    with Hammer(first.settings.http_port) as hammer:
        hammer.wait_for(20)
        broken = make_launch(2, corrupt=True)
        with pytest.raises(HealthCheckError, match="model 'iris' did not load") as failure:
            asyncio.run(replace(supervisor=supervisor, old=old, launch=broken))
        assert "| " in str(failure.value)  # the end of the module's log comes with the reason
        hammer.wait_for(20)
    assert hammer.failures == []
    assert supervisor.exit_status(old) == (False, None)
    assert not (broken.admin_dir / "http.sock").exists()  # the broken version was stopped
    before = served_by(first.admin_dir)
    assert before >= 40
