"""Deploying and updating a module through signed manifests, against a real agent, broker and registry."""

from __future__ import annotations

import urllib.request
from functools import partial
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from edgewise.runtime.agent.signing import sign_document

from tests.runtime.agent.e2e import procs
from tests.runtime.agent.e2e.checks import (
    describe_roots,
    one_server_per_module,
    serving_pid,
    text_of,
    wait_one_server_per_module,
)
from tests.runtime.agent.e2e.harness import HOST, wait_for
from tests.runtime.agent.e2e.images import ImageFactory
from tests.runtime.agent.e2e.load import ScoringLoad
from tests.runtime.agent.e2e.rig import MODULE, DeviceRig, module_state, status_code

pytestmark = pytest.mark.slow


def rejected_as(state: dict[str, Any], *, version: int, code: str) -> bool:
    rejected = state.get("rejected") or {}
    return bool(rejected.get("version") == version and rejected.get("code") == code)


def test_deploy_serves_the_first_version(rig: DeviceRig, images: ImageFactory) -> None:
    v1 = images.image(1)
    state = rig.deploy(v1)
    entry = module_state(state, MODULE)
    http, grpc = rig.module_ports()
    assert entry["imageDigest"] == v1.digest
    assert entry["endpoints"] == {"http": f"http://{HOST}:{http}", "grpc": f"{HOST}:{grpc}"}
    assert entry["restartCount"] == 0
    assert state["lastDesiredStatus"]["code"] == 200
    assert state["agent"]["sandbox"] in ("bubblewrap", "none")
    assert state["agent"]["stateDir"] == str(rig.agent.state_dir)

    answer = rig.wait_serving(v1)
    assert answer.factor == v1.factor
    pid = serving_pid(rig)
    assert procs.listening_pids(grpc) <= procs.descendants([pid]), "the gRPC port is not served by the module"
    assert procs.listening_pids(grpc), f"nothing listens on the gRPC port {grpc}"
    assert one_server_per_module(rig), describe_roots(rig)
    rig.observer.wait(lambda: rig.observer.status == "online", timeout=10, what="status online")
    assert rig.agent.accepted_version() is not None  # saved before it was applied

    with urllib.request.urlopen(f"http://{HOST}:{rig.agent.metrics_port}/metrics", timeout=10) as response:
        assert response.status == 200
        assert response.read()


def test_update_under_load_has_no_failed_request(rig: DeviceRig, images: ImageFactory) -> None:
    v1, v2 = images.image(1), images.image(2)
    rig.deploy(v1)
    rig.wait_serving(v1)
    old_pid = serving_pid(rig)
    with ScoringLoad(port=rig.http_port(), fresh_clients=2, keepalive_clients=2) as load:
        load.wait_answers(40, version="1")
        version = rig.publish({MODULE: rig.entry(v2)})
        rig.wait_running(v2, version=version)
        load.wait_answers(40, since=load.mark(), version="2")
        wait_for(lambda: not procs.alive(old_pid), timeout=30, what=f"the old module process {old_pid} to exit")
        tail = load.mark()
        load.wait_answers(60, since=tail)
    print(f"update under load: {load.summary()}")
    assert load.failures == [], load.summary()
    assert set(load.versions(tail)) == {"2"}, load.summary()
    assert load.versions()["1"] > 0 and load.versions()["2"] > 0
    new_pid = serving_pid(rig)
    assert new_pid != old_pid
    assert one_server_per_module(rig), describe_roots(rig)


def test_broken_model_rolls_back_and_old_version_keeps_serving(rig: DeviceRig, images: ImageFactory) -> None:
    v2, broken = images.image(2), images.image(3, broken=True)
    rig.deploy(v2)
    rig.wait_serving(v2)
    old_pid = serving_pid(rig)
    with ScoringLoad(port=rig.http_port(), fresh_clients=1, keepalive_clients=1) as load:
        load.wait_answers(20)
        version = rig.publish({MODULE: rig.entry(broken, startup_timeout=20)})
        state = rig.observer.wait_reported(
            lambda s: s.get("lastDesiredVersion") == version and status_code(s) not in (None, 202),
            timeout=50,
            what=f"manifest v{version} (broken model) to settle",
        )
        load.wait_answers(20, since=load.mark())
    entry = module_state(state, MODULE)
    assert status_code(state) == 409, state["lastDesiredStatus"]
    assert entry["imageDigest"] == v2.digest, entry
    assert entry["runtimeStatus"] == "running", entry
    rollback = entry.get("rollback") or {}
    assert rollback.get("fromDigest") == broken.digest, entry
    assert rollback.get("reason"), entry
    assert load.failures == [], load.summary()
    assert set(load.versions()) == {"2"}, load.summary()
    assert serving_pid(rig) == old_pid
    wait_one_server_per_module(rig, timeout=20)


def test_tampered_image_is_not_deployed(rig: DeviceRig, images: ImageFactory) -> None:
    v1 = images.image(1)
    rig.deploy(v1)
    rig.wait_serving(v1)
    old_pid = serving_pid(rig)
    tampered = images.image(70)
    layer = images.tamper(tampered)
    with ScoringLoad(port=rig.http_port(), fresh_clients=1, keepalive_clients=1) as load:
        load.wait_answers(20)
        version = rig.publish({MODULE: rig.entry(tampered)})
        state = rig.observer.wait_reported(
            lambda s: s.get("lastDesiredVersion") == version and status_code(s) not in (None, 202),
            timeout=50,
            what=f"manifest v{version} (tampered image) to settle",
        )
        load.wait_answers(20, since=load.mark())
    entry = module_state(state, MODULE)
    assert status_code(state) in (409, 500), state["lastDesiredStatus"]
    assert entry["imageDigest"] == v1.digest and entry["runtimeStatus"] == "running", entry
    said = text_of(state["lastDesiredStatus"], entry)
    assert "integrity" in said or layer.removeprefix("sha256:")[:12] in said or "digest" in said, said
    assert not (rig.agent.state_dir / "images/rootfs" / tampered.digest.replace(":", "-")).exists()
    assert load.failures == [], load.summary()
    assert set(load.versions()) == {"1"}, load.summary()
    assert serving_pid(rig) == old_pid


def test_forged_unsigned_and_stale_manifests_are_refused(rig: DeviceRig, images: ImageFactory) -> None:
    v1, v2 = images.image(1), images.image(2)
    applied = rig.deploy(v1)
    pid = serving_pid(rig)
    stranger = Ed25519PrivateKey.generate()
    attempts = [
        ("bad-signature", sign_document(rig.document({MODULE: rig.entry(v2)}, version=2), stranger)),
        ("unsigned", rig.document({MODULE: rig.entry(v2)}, version=3)),
        ("stale", rig.sign(rig.document({MODULE: rig.entry(v2)}, version=1))),
        ("wrong-device", rig.sign({**rig.document({MODULE: rig.entry(v2)}, version=4), "deviceId": "cam-other"})),
    ]
    for code, document in attempts:
        rig.observer.publish_desired(document)
        state = rig.observer.wait_reported(
            partial(rejected_as, version=document["version"], code=code),
            timeout=20,
            what=f"manifest v{document['version']} to be rejected as {code}",
        )
        assert state["rejected"].get("description"), state["rejected"]
        assert status_code(state) == 400, state["lastDesiredStatus"]
        assert state["lastDesiredVersion"] == applied["lastDesiredVersion"]
        entry = module_state(state, MODULE)
        assert entry["imageDigest"] == v1.digest and entry["pid"] == pid, entry
        assert rig.wait_serving(v1).factor == v1.factor
        assert rig.agent.accepted_version() == 1
    assert serving_pid(rig) == pid

    # The refusals did not advance the version: a genuine version 2 is still newer than the applied one.
    rig.observer.publish_desired(rig.sign(rig.document({MODULE: rig.entry(v2)}, version=2)))
    rig.wait_running(v2, version=2)
    assert rig.wait_serving(v2).factor == v2.factor
