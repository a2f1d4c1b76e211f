"""Direct methods over MQTT: ping, logs, restart, and the answers to bad requests."""

from __future__ import annotations

import pytest

from tests.runtime.agent.e2e import procs
from tests.runtime.agent.e2e.checks import serving_pid
from tests.runtime.agent.e2e.images import ImageFactory
from tests.runtime.agent.e2e.rig import MODULE, DeviceRig, module_state

pytestmark = pytest.mark.slow


def test_direct_methods(rig: DeviceRig, images: ImageFactory) -> None:
    v1 = images.image(1)
    rig.deploy(v1)
    rig.wait_serving(v1)
    pid = serving_pid(rig)

    pong = rig.observer.call("ping")
    assert pong["status"] == 200, pong
    assert pong["result"]["pong"] is True and pong["result"]["time"], pong

    logs = rig.observer.call("logs", {"module": MODULE, "lines": 20})
    assert logs["status"] == 200, logs
    lines = logs["result"]["lines"]
    assert isinstance(lines, list) and 0 < len(lines) <= 20, logs
    assert all(isinstance(line, str) for line in lines)

    unknown = rig.observer.call("no-such-method")
    assert unknown["status"] == 404 and unknown.get("error"), unknown
    missing = rig.observer.call("logs", {"module": "no-such-module"})
    assert missing["status"] in (400, 404) and missing.get("error"), missing
    bad = rig.observer.call("restart", {})
    assert bad["status"] == 400 and bad.get("error"), bad

    restarted = rig.observer.call("restart", {"module": MODULE})
    assert restarted["status"] == 200, restarted
    state = rig.observer.wait_reported(
        lambda s: (
            module_state(s, MODULE).get("runtimeStatus") == "running"
            and module_state(s, MODULE).get("pid") not in (None, pid)
        ),
        timeout=45,
        what="the module restarted by the direct method",
    )
    assert rig.wait_serving(v1).factor == v1.factor
    assert serving_pid(rig) == module_state(state, MODULE)["pid"]
    assert not procs.alive(pid)
