"""One device under test: an agent process, the workspace's observer of it, and signed manifests for it."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from tests.runtime.agent.e2e.harness import (
    FAST_FLAGS,
    HOST,
    AgentProcess,
    connection_string,
    manifest_document,
    module_entry,
    wait_for,
)
from tests.runtime.agent.e2e.images import ImageFactory, PushedImage
from tests.runtime.agent.e2e.load import Answer, try_infer
from tests.runtime.agent.e2e.observer import DeviceObserver

Document = dict[str, Any]
MODULE = "scale"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def module_state(state: Mapping[str, Any], module: str) -> dict[str, Any]:
    return dict((state.get("modules") or {}).get(module) or {})


def status_code(state: Mapping[str, Any]) -> int | None:
    status = state.get("lastDesiredStatus") or {}
    code = status.get("code")
    return int(code) if code is not None else None


def is_running(state: Mapping[str, Any], module: str, digest: str, version: int, code: int = 200) -> bool:
    """Whether `state` says manifest `version` is applied with `code` and `module` runs image `digest`."""
    entry = module_state(state, module)
    return (
        state.get("lastDesiredVersion") == version
        and status_code(state) == code
        and entry.get("runtimeStatus") == "running"
        and entry.get("imageDigest") == digest
    )


class DeviceRig:
    """Everything a test needs to drive one device end to end."""

    def __init__(
        self,
        *,
        device_id: str,
        secret: str,
        broker_port: int,
        service_username: str,
        service_password: str,
        workspace_key: str,
        sign: Callable[[Document], Document],
        images: ImageFactory,
        work_dir: Path,
        agent_flags: Sequence[str] = FAST_FLAGS,
    ) -> None:
        self.device_id = device_id
        self.sign = sign
        self.images = images
        self.work_dir = work_dir
        self.observer = DeviceObserver(
            port=broker_port, username=service_username, password=service_password, device_id=device_id
        )
        self.agent = AgentProcess(
            connection=connection_string(
                broker_port=broker_port,
                device_id=device_id,
                secret=secret,
                workspace_key=workspace_key,
                registry=f"http://{images.registry_host}",
            ),
            state_dir=work_dir / "state",
            log_path=work_dir / "agent.log",
            metrics_port=free_port(),
            flags=agent_flags,
        )
        self.version = 0
        self.ports: dict[str, tuple[int, int]] = {}
        self.pids_seen: set[int] = set()

    def start(self) -> DeviceRig:
        self.observer.start()
        self.agent.start()
        return self

    def close(self) -> None:
        try:
            self.agent.cleanup(extra_pids=sorted(self.pids_seen))
        finally:
            self.observer.close()

    # ---- manifests ----

    def module_ports(self, module: str = MODULE) -> tuple[int, int]:
        if module not in self.ports:
            self.ports[module] = (free_port(), free_port())
        return self.ports[module]

    def http_port(self, module: str = MODULE) -> int:
        return self.module_ports(module)[0]

    def entry(self, image: PushedImage, *, module: str = MODULE, **options: Any) -> Document:
        http, grpc = self.module_ports(module)
        return module_entry(image=image.reference, http_port=http, grpc_port=grpc, **options)

    def document(
        self, modules: Mapping[str, Document], *, version: int | None = None, telemetry: Mapping[str, Any] | None = None
    ) -> Document:
        """An unsigned manifest; the next version unless `version` is given."""
        if version is None:
            self.version += 1
            version = self.version
        return manifest_document(device_id=self.device_id, version=version, modules=modules, telemetry=telemetry)

    def publish(self, modules: Mapping[str, Document], *, telemetry: Mapping[str, Any] | None = None) -> int:
        """Sign and publish (retained) the next manifest version; returns the version."""
        document = self.document(modules, telemetry=telemetry)
        self.observer.publish_desired(self.sign(document))
        return int(document["version"])

    def deploy(
        self,
        image: PushedImage,
        *,
        module: str = MODULE,
        telemetry: Mapping[str, Any] | None = None,
        timeout: float = 50.0,
        **options: Any,
    ) -> Document:
        """Publish a manifest running `image` as `module` and wait until it is reported applied and running."""
        version = self.publish({module: self.entry(image, module=module, **options)}, telemetry=telemetry)
        return self.wait_running(image, version=version, module=module, timeout=timeout)

    def wait_running(
        self, image: PushedImage, *, version: int, module: str = MODULE, code: int = 200, timeout: float = 50.0
    ) -> Document:
        state = self.observer.wait_reported(
            lambda s: is_running(s, module, image.digest, version, code),
            timeout=timeout,
            what=f"manifest v{version} applied ({code}) with {module} running {image.digest[:19]}",
        )
        pid = module_state(state, module).get("pid")
        if isinstance(pid, int):
            self.pids_seen.add(pid)
        return state

    def wait_serving(self, image: PushedImage, *, module: str = MODULE, timeout: float = 30.0) -> Answer:
        """Wait until the module's HTTP port answers with `image`'s model."""
        port = self.http_port(module)

        def answered() -> Answer | None:
            answer = try_infer(port)
            return answer if answer is not None and answer.version == str(image.model_version) else None

        return wait_for(answered, timeout=timeout, what=f"port {port} to answer with model v{image.model_version}")

    def module(self, module: str = MODULE) -> Document:
        return self.observer.module(module)

    def diagnostics(self) -> list[tuple[str, str]]:
        """Sections for a failure report: the agent's log, each module's log, the last reported state."""
        sections = [(f"agent log ({self.agent.log_path})", self.agent.log()[-15000:])]
        sections += [(f"module log {name}", text[-6000:]) for name, text in self.agent.module_logs().items()]
        sections.append(("last reported state", json.dumps(self.observer.reported, indent=1)[:8000]))
        sections.append(("status history", ", ".join(self.observer.status_history[-20:])))
        return sections
