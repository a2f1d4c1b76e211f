"""Measure an in-process fleet: resident memory per device, and how long N devices take to apply a signed
empty manifest published to each. Prints figures; asserts nothing.

    .venv/bin/python -m tests.simulators.measure_fleet [--devices 100] [--proxied]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import tempfile
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from edgewise.cloud.broker import BrokerManager, find_mosquitto, parse_broker
from edgewise.runtime.agent.signing import public_key_text
from edgewise.simulators import (
    DeviceSettings,
    FleetObserver,
    InProcessFleet,
    Stopwatch,
    device_ids,
    register_devices,
    rss_bytes,
    signed_manifest,
)
from edgewise.simulators._loop import LoopThread

from tests.support import free_port


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--devices", type=int, default=100)
    parser.add_argument("--proxied", action="store_true", help="each device behind its own LinkProxy")
    opts = parser.parse_args()
    if find_mosquitto() is None:
        raise SystemExit("mosquitto is not installed")
    key = Ed25519PrivateKey.generate()
    with tempfile.TemporaryDirectory(prefix="fleet-measure-") as tmp:
        work = Path(tmp)
        loop = LoopThread(name="broker")
        manager = BrokerManager(settings=parse_broker("mosquitto", host="127.0.0.1", port=free_port()), data_dir=work)
        loop.run(manager.start())
        try:
            measure(manager, key, work, opts.devices, opts.proxied)
        finally:
            loop.run(manager.stop())
            loop.close()


def measure(manager: BrokerManager, key: Ed25519PrivateKey, work: Path, count: int, proxied: bool) -> None:
    devices = register_devices(manager, device_ids(count))
    creds = manager.service_credentials
    with FleetObserver(port=manager.port, username=creds.username, password=creds.password) as observer:
        gc.collect()
        before = rss_bytes()
        clock = Stopwatch()
        fleet = InProcessFleet(
            broker_port=manager.port,
            devices=devices,
            workspace_key=public_key_text(key),
            work_dir=work / "fleet",
            settings=DeviceSettings(sandbox="none", keepalive=30.0),
            proxied=proxied,
        )
        with fleet:
            ids = fleet.device_ids
            observer.wait_status(ids, "online", timeout=300)
            online = clock.elapsed()
            time.sleep(3.0)  # let start-up reports and first telemetry settle before reading memory
            gc.collect()
            after = rss_bytes()

            manifests = {d: signed_manifest(key, device_id=d, version=1) for d in ids}
            sent = observer.publish_desired(manifests)
            observer.wait_applied(ids, 1, timeout=300)
            latencies = sorted(observer.applied_at[(d, 1)] - sent for d in ids)
            published = time.monotonic() - sent

    print(f"in-process fleet of {count} devices{' behind link proxies' if proxied else ''}:")
    print(f"  all online after          {online:7.2f} s")
    print(f"  resident memory           {before / 2**20:7.1f} MiB before, {after / 2**20:7.1f} MiB with the fleet")
    print(f"  per device                {(after - before) / count / 2**20:7.2f} MiB")
    print(
        f"  signed empty manifest v1: median {statistics.median(latencies):.3f} s, "
        f"p90 {latencies[int(0.9 * (len(latencies) - 1))]:.3f} s, all {latencies[-1]:.3f} s "
        f"(from the first publish; measured {published:.2f} s to the last report)"
    )


if __name__ == "__main__":
    main()
