"""Telemetry that survives a broker outage: every record arrives once, in sequence, after the broker returns."""

from __future__ import annotations

import time

import pytest

from tests.runtime.agent.conftest import Broker
from tests.runtime.agent.e2e.images import ImageFactory
from tests.runtime.agent.e2e.load import ScoringLoad
from tests.runtime.agent.e2e.rig import MODULE, DeviceRig

pytestmark = pytest.mark.slow

TELEMETRY = {"intervalSecs": 1, "timeToLiveSecs": 3600, "maxBytes": 16 * 1024 * 1024, "sampleRate": 1.0}


def test_offline_telemetry_arrives_once_and_in_sequence(rig: DeviceRig, broker: Broker, images: ImageFactory) -> None:
    v1 = images.image(1)
    rig.deploy(v1, telemetry=TELEMETRY)
    rig.wait_serving(v1)
    telemetry = rig.observer.telemetry
    with ScoringLoad(port=rig.http_port(), fresh_clients=1, keepalive_clients=0, pause=0.1) as load:
        rig.observer.wait(
            lambda: {"health", "scoring", "sample"} <= telemetry.kinds(),
            timeout=30,
            what="health, scoring and sample records",
        )
        down_at = time.time()
        broker.stop()
        time.sleep(4)  # telemetry is produced (interval 1 s) while the device cannot send it
        up_at = time.time()
        broker.start()
        rig.observer.wait(
            lambda: any(r["ts"] > up_at + 1 for r in telemetry.records()),
            timeout=40,
            what="telemetry produced after the broker came back",
        )
    records = telemetry.records()
    assert telemetry.undecodable == []
    assert min(telemetry.by_seq) == 1
    assert telemetry.gaps() == [], f"missing seqs {telemetry.gaps()[:20]} of 1..{telemetry.highest()}"
    assert telemetry.duplicates() == {}, f"seqs received more than once: {telemetry.duplicates()}"
    offline = [r for r in records if down_at < r["ts"] < up_at]
    assert {r["kind"] for r in offline} >= {"health"}, "nothing was spooled during the outage"
    assert {"health", "scoring", "sample"} <= telemetry.kinds()
    assert all(r["module"] == MODULE for r in records if r["kind"] in ("scoring", "sample"))
    assert all(m["deviceId"] == rig.device_id for m in telemetry.messages)
    assert load.successes > 0 and load.failures == [], load.summary()
