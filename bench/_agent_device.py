"""The device side of the agent benchmark: idle memory of a real `edgewise-agent`, and the time from a
manifest arriving to the new version answering on the module's public port with its image already cached.

Baseline for the deployment time: a plain cold start of the same scoring server on the same unpacked model
(process start until its HTTP port answers an inference), measured in the same run. The agent's figure
includes that start plus its own work: verifying the manifest, starting the new version beside the old one,
its health check and warm-up, opening the public ports and stopping the old version.
"""

from __future__ import annotations

import asyncio
import secrets
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from edgewise.cloud.broker import BrokerManager, parse_broker
from edgewise.runtime.agent.signing import generate_private_key, public_key_text, sign_document

from _harness import free_ports, memory_mb

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.cloud.registry.support import DockerRegistry  # noqa: E402
from tests.runtime.agent.e2e.images import ImageFactory, PushedImage  # noqa: E402
from tests.runtime.agent.e2e.load import try_infer  # noqa: E402
from tests.runtime.agent.e2e.rig import DeviceRig  # noqa: E402

HOST = "127.0.0.1"


class Bench:
    """A real Mosquitto, a real registry with two model images, and one device rig with its agent."""

    def __init__(self, work: Path) -> None:
        self.work = work
        mqtt_port = free_ports(1)[0]
        self.broker = BrokerManager(
            settings=parse_broker("mosquitto", host=HOST, port=mqtt_port), data_dir=work / "ws"
        )
        asyncio.run(self.broker.start())
        self.registry = DockerRegistry(root=work / "registry", auth=False).start()
        self.images = ImageFactory(
            registry_host=self.registry.host, registry_storage=self.registry.storage, work_dir=work / "images"
        )
        key = generate_private_key()
        device = f"bench-{secrets.token_hex(3)}"
        secret = secrets.token_urlsafe(16)
        self.broker.add_device(device, secret)
        creds = self.broker.service_credentials
        self.rig = DeviceRig(
            device_id=device,
            secret=secret,
            broker_port=self.broker.port,
            service_username=creds.username,
            service_password=creds.password,
            workspace_key=public_key_text(key),
            sign=lambda doc: sign_document(doc, key),
            images=self.images,
            work_dir=work / "device",
        )

    def close(self) -> None:
        try:
            self.rig.close()
        finally:
            self.registry.stop()
            asyncio.run(self.broker.stop())


def idle_memory(bench: Bench, *, settle: float, samples: int) -> dict[str, Any]:
    """RSS of the agent with an empty manifest applied, sampled once a second after it settled."""
    rig = bench.rig
    version = rig.publish({})
    rig.observer.wait_reported(
        lambda s: s.get("lastDesiredVersion") == version, timeout=60, what="empty manifest"
    )
    time.sleep(settle)
    pid = rig.agent.pid
    assert pid is not None
    readings = []
    for _ in range(samples):
        readings.append(memory_mb(pid))
        time.sleep(1.0)
    rss = [r["rss_mb"] for r in readings]
    return {
        "rss_mb_median": statistics.median(rss),
        "rss_mb_max": max(rss),
        "pss_mb_median": statistics.median(r["pss_mb"] for r in readings),
        "processes": readings[-1]["processes"],
        "target_rss_mb": 40,
        "reference_iot_edge_agent_ask_mb": 100,
        "meets_target": max(rss) <= 40,
    }


def _answering(port: int, image: PushedImage, deadline: float) -> float | None:
    while time.monotonic() < deadline:
        answer = try_infer(port)
        if answer is not None and answer.version == str(image.model_version):
            return time.monotonic()
        time.sleep(0.005)
    return None


def deployment_times(bench: Bench, *, rounds: int) -> dict[str, Any]:
    """Alternate between two cached images; time each manifest until the new version answers."""
    rig = bench.rig
    first, second = bench.images.image(1), bench.images.image(2)
    for image in (first, second):  # pulls and unpacks both: every timed round has its image cached
        rig.deploy(image, timeout=120)
        rig.wait_serving(image)
    port = rig.http_port()
    serving, applied = [], []
    for index in range(rounds):
        image = first if index % 2 == 0 else second
        start = time.monotonic()
        version = rig.publish({"scale": rig.entry(image)})
        answered = _answering(port, image, start + 60)
        rig.wait_running(image, version=version, timeout=60)
        done = time.monotonic()
        if answered is None:
            raise RuntimeError(f"round {index}: version {image.model_version} never answered")
        serving.append(answered - start)
        applied.append(done - start)
    return {
        "rounds": rounds,
        "serving_s_median": round(statistics.median(serving), 3),
        "serving_s_max": round(max(serving), 3),
        "reported_applied_s_median": round(statistics.median(applied), 3),
        "target_s": 2.0,
        "meets_target": statistics.median(serving) <= 2.0,
    }


def cold_start_baseline(bench: Bench, *, rounds: int) -> dict[str, Any]:
    """A plain `edgewise-score` on the agent's unpacked image of version 1, until an inference answers."""
    rootfs = next((bench.rig.agent.state_dir / "images").rglob("var/lib/edgewise/models"), None)
    if rootfs is None:
        raise RuntimeError("no unpacked image found in the agent's state directory")
    image = bench.images.image(1)
    score = str(Path(sys.executable).parent / "edgewise-score")
    times = []
    for _ in range(rounds):
        http_port, grpc_port = free_ports(2)
        start = time.monotonic()
        proc = subprocess.Popen(
            [
                score,
                "--model-repository",
                str(rootfs),
                "--host",
                HOST,
                "--http-port",
                str(http_port),
                "--grpc-port",
                str(grpc_port),
                "--repository-poll-secs",
                "0",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            answered = _answering(http_port, image, start + 60)
        finally:
            proc.terminate()
            proc.wait(20)
        if answered is None:
            raise RuntimeError("the plain scoring server did not answer")
        times.append(answered - start)
    return {"rounds": rounds, "serving_s_median": round(statistics.median(times), 3)}
