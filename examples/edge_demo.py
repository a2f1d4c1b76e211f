"""The edge half of the demo: a local device runs `edgewise-agent`, and the image built in the workspace is
deployed to it as a module, pulled by digest from the workspace's own registry, and scored over REST and gRPC.

The device's credentials come from `edgewise device add`. The manifest is signed with the workspace's key and
published on the device's `desired` topic here, as the deployment controller does for `edgewise deploy create`.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import paho.mqtt.client as paho
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from edgewise.runtime.agent.signing import load_private_key, sign_document
from paho.mqtt.enums import CallbackAPIVersion

ROOT = Path(__file__).resolve().parent.parent
AGENT = str(Path(sys.executable).with_name("edgewise-agent"))
DEVICE = "demo-device"
MODULE = "digits"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServiceLink:
    """The workspace's side of one device's topics, on the service account: publish desired, watch reported."""

    def __init__(self, *, data: Path, broker: str, device: str) -> None:
        self.root = f"edgewise/v1/devices/{device}"
        self.reported: dict[str, Any] = {}
        self.status = ""
        self._changed = threading.Condition()
        url = urlsplit(broker)
        self.client = paho.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id="edgewise-demo")
        password = (data / "broker" / "service-password").read_text().strip()
        self.client.username_pw_set("edgewise-service", password)
        self.client.on_message = self._on_message
        self.client.connect(url.hostname or "127.0.0.1", url.port or 1883)
        self.client.subscribe(f"{self.root}/reported", qos=1)
        self.client.subscribe(f"{self.root}/status", qos=1)
        self.client.loop_start()

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        with self._changed:
            if message.topic.endswith("/reported"):
                self.reported = json.loads(message.payload)
            else:
                self.status = message.payload.decode()
            self._changed.notify_all()

    def publish_desired(self, document: dict[str, Any]) -> None:
        info = self.client.publish(f"{self.root}/desired", json.dumps(document), qos=1, retain=True)
        info.wait_for_publish(10)

    def wait(self, what: str, predicate: Callable[[dict[str, Any]], bool], timeout: float = 90.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        with self._changed:
            while not predicate(self.reported):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise SystemExit(f"the device did not report {what}; last report:\n{self.reported}")
                self._changed.wait(left)
            return self.reported

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def _manifest(version: int, modules: dict[str, Any]) -> dict[str, Any]:
    return {
        "schemaVersion": "1",
        "deviceId": DEVICE,
        "version": version,
        "issuedAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "modules": modules,
        "telemetry": {"intervalSecs": 5, "timeToLiveSecs": 3600, "maxBytes": 8 * 1024 * 1024, "sampleRate": 0.1},
    }


def _score(http_port: int, grpc_port: int) -> None:
    from sklearn.datasets import load_digits

    digits = load_digits()
    samples = (digits.data[:8] / 16.0).astype(np.float32)
    rest = httpclient.InferenceServerClient(f"127.0.0.1:{http_port}")
    tensor = httpclient.InferInput("input", list(samples.shape), "FP32")
    tensor.set_data_from_numpy(samples, binary_data=False)
    labels = rest.infer("digits-logreg", [tensor]).as_numpy("label")
    print("device REST  digits-logreg:", labels.tolist(), "expected", digits.target[:8].tolist())
    grpc = grpcclient.InferenceServerClient(f"127.0.0.1:{grpc_port}")
    tensor = grpcclient.InferInput("input", list(samples.shape), "FP32")
    tensor.set_data_from_numpy(samples)
    print("device gRPC  digits-logreg:", grpc.infer("digits-logreg", [tensor]).as_numpy("label").tolist())


def deploy_to_local_device(
    env: dict[str, str], work: Path, edgewise: Callable[..., str], image: dict[str, Any], broker: str
) -> None:
    """Register a device, start its agent, deploy `image` to it, score it, then remove the module again."""
    data = Path(env["EDGEWISE_DATA"])
    added = json.loads(edgewise(env, "device", "add", DEVICE, "--tag", "site=lab", "--output", "json", capture=True))
    connection = added["connection_string"]
    print(f"connection string: {connection.split(';Secret=')[0]};Secret=***;...")
    state = work / "agent"
    log = work / "agent.log"
    metrics_port = _free_port()
    where = state.relative_to(ROOT)
    print(f"$ edgewise-agent --connection-string ... --state-dir {where} --metrics-port {metrics_port}")
    with log.open("wb") as out:
        agent = subprocess.Popen(
            [AGENT, "--connection-string", connection, "--state-dir", str(state), "--metrics-port", str(metrics_port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**env, "PYTHONUNBUFFERED": "1"},
        )
    link = ServiceLink(data=data, broker=broker, device=DEVICE)
    key = load_private_key((data / "keys" / "manifest-signing.key").read_bytes())
    registry = urlsplit(env["EDGEWISE_URL"]).netloc
    http_port, grpc_port = _free_port(), _free_port()
    module = {
        "type": "oci",
        "image": f"{registry}/{image['name']}@{image['manifest_digest']}",
        "status": "running",
        "restartPolicy": "always",
        "settings": {"httpPort": http_port, "grpcPort": grpc_port, "host": "127.0.0.1"},
    }
    try:
        print(f"publishing the signed manifest v1 for {DEVICE}: module {MODULE} = {module['image']}")
        link.publish_desired(sign_document(_manifest(1, {MODULE: module}), key))
        started = time.monotonic()
        reported = link.wait(
            "the module running",
            lambda r: r.get("lastDesiredVersion") == 1 and (r.get("modules") or {}).get(MODULE, {}).get("runtimeStatus")
            == "running",
        )
        entry = reported["modules"][MODULE]
        print(
            f"device {DEVICE} ({link.status}): {MODULE} {entry['runtimeStatus']} in {time.monotonic() - started:.1f}s, "
            f"sandbox {reported['agent']['sandbox']}, image {entry['imageDigest'][:19]}, "
            f"endpoints {json.dumps(entry['endpoints'])}"
        )
        _score(http_port, grpc_port)
        print("publishing manifest v2 without modules")
        link.publish_desired(sign_document(_manifest(2, {}), key))
        link.wait("the module removed", lambda r: r.get("lastDesiredVersion") == 2 and not r.get("modules"))
        print(f"device {DEVICE}: module removed, lastDesiredStatus {reported['lastDesiredStatus']}")
    finally:
        link.close()
        agent.terminate()
        agent.wait(timeout=30)
    print(f"agent stopped (log: {log.relative_to(ROOT)})")
