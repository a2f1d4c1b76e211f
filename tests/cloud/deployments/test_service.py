"""Deployments through a real `edgewise up --broker mosquitto`: each device's retained, signed manifest on its
`desired` topic follows priorities, late joiners, retags and deletions; models and images in use stay."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from edgewise.cloud.broker import find_mosquitto
from edgewise.cloud.errors import ConflictError, InvalidInputError, ModelInUseError
from edgewise.runtime.agent.manifest import parse_manifest
from edgewise.runtime.agent.model import Manifest
from edgewise.runtime.agent.signing import load_public_key

from examples.models import matmul_model
from tests.cloud.broker.mqtt import Client as MqttClient
from tests.cloud.cli.cli import edgewise, edgewise_json
from tests.cloud.service import WorkspaceProcess, start_workspace


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkspaceProcess]:
    if find_mosquitto() is None:
        pytest.skip("mosquitto is not installed (apt install mosquitto)")
    workspace = start_workspace(tmp_path_factory.mktemp("deployments") / "data", "--broker", "mosquitto")
    yield workspace
    workspace.stop()


@pytest.fixture(scope="module")
def image(service: WorkspaceProcess, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    suffix = uuid.uuid4().hex[:8]
    model = matmul_model(tmp_path_factory.mktemp("model") / "model.onnx")
    edgewise("model", "register", "--name", f"m-{suffix}", "--file", str(model), env=service.env)
    edgewise("image", "build", "--model", f"m-{suffix}", "--name", f"img-{suffix}", env=service.env)
    shown: dict[str, Any] = edgewise_json("image", "show", f"img-{suffix}", env=service.env)
    shown["model"] = f"m-{suffix}"
    return shown


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


class Devices:
    """Adds devices and reads their retained desired manifest on the service account."""

    def __init__(self, service: WorkspaceProcess) -> None:
        self.service = service
        self.port = 0
        with service.client() as client:
            self.key = load_public_key(client.manifest_key()["public_key"])

    def add(self, device_id: str, **tags: str) -> str:
        with self.service.client() as client:
            added = client.add_device(device_id, tags=tags)
        broker = dict(part.split("=", 1) for part in added.connection_string.split(";"))["Broker"]
        self.port = int(broker.rsplit(":", 1)[1])
        return device_id

    def desired(self, device_id: str) -> Manifest:
        password = (self.service.data_dir / "broker" / "service-password").read_text().strip()
        client = MqttClient(self.port, "edgewise-service", password)
        assert not client.connect().is_failure
        try:
            client.subscribe(f"edgewise/v1/devices/{device_id}/desired")
            _topic, payload, retained = client.expect(f"edgewise/v1/devices/{device_id}/desired")
        finally:
            client.close()
        assert retained
        return parse_manifest(payload, device_id=device_id, public_key=self.key)


def env_of(manifest: Manifest, module: str) -> dict[str, str]:
    return dict(manifest.modules[module].env)


def test_targeting_priorities_late_joiners_retags_and_deletion(
    service: WorkspaceProcess, image: dict[str, Any]
) -> None:
    devices = Devices(service)
    site = unique("site")
    a = devices.add(unique("a"), site=site, tier="prod")
    b = devices.add(unique("b"), site=site, tier="dev")
    base, prod = unique("base"), unique("prod")
    with service.client() as client:
        client.create_deployment(base, image=image["name"], target=f"tags.site = '{site}'", module="scorer")
        client.create_deployment(
            prod,
            image=image["name"],
            target=f"tags.site = '{site}' AND tags.tier = 'prod'",
            module="scorer",
            priority=10,
            env={"TIER": "prod"},
        )
        first_a, first_b = devices.desired(a), devices.desired(b)
        assert env_of(first_a, "scorer") == {"TIER": "prod"}
        assert env_of(first_b, "scorer") == {}
        assert first_a.modules["scorer"].image.endswith(f"/{image['name']}@{image['manifest_digest']}")
        assert first_a.modules["scorer"].image.split("/")[0] == service.url.removeprefix("http://")

        late = devices.add(unique("late"), site=site, tier="prod")
        assert env_of(devices.desired(late), "scorer") == {"TIER": "prod"}

        client.tag_device(b, set={"tier": "prod"})
        moved = devices.desired(b)
        assert env_of(moved, "scorer") == {"TIER": "prod"}
        assert moved.version > first_b.version

        report = client.get_deployment(prod)
        assert {row.device_id for row in report.devices} == {a, b, late}
        assert report.counts["targeted"] == 3 and report.counts["applied"] == 0

        # b ran base's module before its retag: base stays overridden there, whatever b reports (refreshes included)
        shadowed = client.get_deployment(base)
        assert {row.device_id: row.state for row in shadowed.devices} == dict.fromkeys((a, b, late), "overridden")
        assert all(prod in (row.reason or "") and row.version is None for row in shadowed.devices)
        assert shadowed.counts["targeted"] == 3 and shadowed.counts["overridden"] == 3

        client.delete_deployment(prod)
        after = devices.desired(a)
        assert env_of(after, "scorer") == {} and after.version > first_a.version
        back = client.get_deployment(base)
        assert {row.device_id: row.state for row in back.devices} == dict.fromkeys((a, b, late), "targeted")
        assert {row.device_id: row.version for row in back.devices} == {
            d: devices.desired(d).version for d in (a, b, late)
        }
        assert back.counts["overridden"] == 0

        client.delete_deployment(base)
        assert devices.desired(a).modules == {}
        assert {d.name for d in client.list_deployments()}.isdisjoint({base, prod})


def test_one_device_and_the_cli(service: WorkspaceProcess, image: dict[str, Any], tmp_path: Path) -> None:
    devices = Devices(service)
    device = devices.add(unique("solo"))
    name = unique("solo-dep")
    created = edgewise_json(
        "deploy",
        "create",
        name,
        "--image",
        f"{image['name']}:{image['version']}",
        "--device",
        device,
        "--http-port",
        "18080",
        "--grpc-port",
        "18081",
        "--restart-policy",
        "never",
        "--env",
        "A=b",
        env=service.env,
    )
    assert created["status"] == "active"
    manifest = devices.desired(device)
    module = manifest.modules[created["module"]]
    assert (module.settings.http_port, module.settings.grpc_port) == (18080, 18081)
    assert module.restart_policy.value == "never" and dict(module.env) == {"A": "b"}
    shown = edgewise_json("deploy", "show", name, env=service.env)
    assert [row["device_id"] for row in shown["devices"]] == [device]
    assert shown["devices"][0]["version"] == manifest.version
    listed = edgewise_json("deploy", "list", env=service.env)
    assert name in {d["name"] for d in listed}
    table = edgewise("deploy", "show", name, env=service.env)
    assert device in table.stdout
    edgewise("deploy", "delete", name, env=service.env)
    assert devices.desired(device).modules == {}

    # a condition no device matches yet is accepted, with a hint; a device added later with those tags gets it
    site = unique("nowhere")
    later = unique("later")
    condition = f"tags.site = '{site}'"
    early = edgewise("deploy", "create", later, "--image", image["name"], "--target", condition, env=service.env)
    assert "no device matches" in early.stderr and "device add" in early.stderr
    joined = devices.add(unique("joined"), site=site)
    assert devices.desired(joined).modules
    edgewise("deploy", "delete", later, env=service.env)


def test_models_and_images_in_use_cannot_be_deleted(service: WorkspaceProcess, image: dict[str, Any]) -> None:
    devices = Devices(service)
    device = devices.add(unique("guard"))
    name = unique("guarded")
    with service.client() as client:
        client.create_deployment(name, image=image["name"], device_id=device)
        with pytest.raises(ConflictError, match=name):
            client.delete_image(image["name"], image["version"])
        with pytest.raises(ModelInUseError, match=name):
            client.delete_model(image["model"], 1)
        client.delete_deployment(name)
        assert all(not r.active or r.ref != name for r in client.image_references(image["name"], image["version"]))


def test_bad_requests_are_refused_with_reasons(service: WorkspaceProcess, image: dict[str, Any]) -> None:
    with service.client() as client:
        with pytest.raises(InvalidInputError, match="column 13"):
            client.create_deployment(unique("bad"), image=image["name"], target="tags.site = berlin")
        with pytest.raises(InvalidInputError, match="exactly one"):
            client.create_deployment(unique("bad"), image=image["name"])
        with pytest.raises(InvalidInputError, match="not both"):
            client.create_deployment(
                unique("bad"), image=image["name"], target="tags.x EXISTS", batch_size=1, batch_percent=50
            )
        name = unique("dup")
        client.create_deployment(name, image=image["name"], target="tags.nothing = 'matches'")
        with pytest.raises(ConflictError, match="exists already"):
            client.create_deployment(name, image=image["name"], target="tags.nothing = 'matches'")
        client.delete_deployment(name)


def test_a_staged_rollout_overridden_on_every_device_goes_through_its_batches(
    service: WorkspaceProcess, image: dict[str, Any]
) -> None:
    """An overridden device has nothing more to do for the deployment: its batch does not hold the next one back,
    and waiting for the deployment ends."""
    devices = Devices(service)
    site = unique("site")
    ids = [devices.add(unique(f"s{i}"), site=site) for i in range(3)]
    top, staged = unique("top"), unique("staged")
    with service.client() as client:
        target = f"tags.site = '{site}'"
        client.create_deployment(top, image=image["name"], target=target, module="scorer", priority=5)
        client.create_deployment(staged, image=image["name"], target=target, module="scorer", batch_size=1)
        report = client.wait_deployment(staged, timeout=30, poll=0.2)
        assert report.deployment.status == "active", report.deployment
        assert {row.device_id: row.state for row in report.devices} == dict.fromkeys(ids, "overridden")
        assert sorted(row.batch for row in report.devices) == [1, 2, 3]
        assert report.counts["targeted"] == 3 and report.counts["overridden"] == 3
        client.delete_deployment(staged)
        client.delete_deployment(top)


def test_a_removed_device_loses_its_retained_manifest(service: WorkspaceProcess, image: dict[str, Any]) -> None:
    devices = Devices(service)
    device = devices.add(unique("gone"), role="edge")
    name = unique("gone-dep")
    with service.client() as client:
        client.create_deployment(name, image=image["name"], device_id=device)
        assert devices.desired(device).modules
        client.remove_device(device)
        report = client.get_deployment(name)
        assert report.devices == []
        client.delete_deployment(name)


def test_deployments_are_listed_a_page_at_a_time(service: WorkspaceProcess, image: dict[str, Any]) -> None:
    devices = Devices(service)
    device = devices.add(unique("paged"))
    names = [unique("paged") for _ in range(3)]
    with service.client() as client:
        for index, name in enumerate(names):
            client.create_deployment(name, image=image["name"], device_id=device, module=f"m{index}")
        try:
            answer = httpx.get(
                f"{service.url}/api/v1/deployments",
                params={"page_size": 1},
                headers={"Authorization": f"Bearer {service.token}"},
            )
            first = answer.raise_for_status().json()
            assert len(first["items"]) == 1 and first["next_page_token"]
            listed = [d.name for d in client.list_deployments()]
            assert [n for n in listed if n in names] == names  # oldest first, across pages
            assert len(client.list_deployments(limit=2)) == 2
        finally:
            for name in names:
                client.delete_deployment(name)
