"""Target conditions and manifest computation as pure functions: priorities, ties, ports, refusals."""

from __future__ import annotations

from typing import Any

import pytest
from edgewise.cloud.deployments import Deployment, DeviceState, build_manifest, device_state, parse_condition, resolve
from edgewise.cloud.deployments.manifests import PORT_RANGE, assign_ports
from edgewise.cloud.errors import InvalidInputError
from edgewise.runtime.agent.manifest import parse_manifest
from edgewise.runtime.agent.signing import generate_private_key, sign_document

DIGEST = "sha256:" + "ab" * 32
OTHER = "sha256:" + "cd" * 32


@pytest.mark.parametrize(
    ("condition", "tags", "expected"),
    [
        ("tags.site = 'berlin' AND tags.tier = 'prod'", {"site": "berlin", "tier": "prod"}, True),
        ("tags.site = 'berlin' AND tags.tier = 'prod'", {"site": "berlin", "tier": "dev"}, False),
        ("tags.site = 'berlin' or tags.site = 'paris'", {"site": "paris"}, True),
        ("tags.site != 'berlin'", {"site": "paris"}, True),
        ("tags.site != 'berlin'", {}, False),
        ("tags.site IN ('a', 'b')", {"site": "b"}, True),
        ("tags.site NOT IN ('a', 'b')", {"site": "b"}, False),
        ("tags.gpu EXISTS", {"gpu": ""}, True),
        ("tags.gpu IS NULL", {}, True),
        ("NOT (tags.a = '1' OR tags.b = '2') AND tags.c = '3'", {"c": "3"}, True),
        ("(tags.a = '1' OR tags.b = '2') AND tags.c = '3'", {"b": "2", "c": "3"}, True),
        ("tags.name = 'it''s'", {"name": "it's"}, True),
    ],
)
def test_conditions_match_tags(condition: str, tags: dict[str, str], expected: bool) -> None:
    assert parse_condition(condition).matches(tags) is expected


@pytest.mark.parametrize(
    ("condition", "column"),
    [
        ("tags.site = berlin", 13),
        ("tags.site = 'berlin' AND", 25),
        ("(tags.site = 'x'", 17),
        ("site = 'x'", 1),
        ("tags.site == 'x'", 12),
        ("tags.site IN 'x'", 14),
        ("tags.site = 'x' tags.b = 'y'", 17),
        ("tags.a = 'x' ; drop", 14),
    ],
)
def test_bad_conditions_name_the_column(condition: str, column: int) -> None:
    with pytest.raises(InvalidInputError, match=f"column {column}:"):
        parse_condition(condition)


def deployment(name: str, *, module: str = "m", priority: int = 0, serial: int = 1, **fields: Any) -> Deployment:
    return Deployment(
        name=name,
        image_name="img",
        image_version=1,
        manifest_digest=fields.pop("digest", DIGEST),
        image=f"127.0.0.1:8080/img@{fields.pop('digest2', DIGEST)}",
        module=module,
        priority=priority,
        serial=serial,
        created_at=float(serial),
        **fields,
    )


@pytest.mark.parametrize(
    ("deployments", "winner"),
    [
        ([deployment("low", priority=1, serial=2), deployment("high", priority=5, serial=1)], "high"),
        ([deployment("old", serial=1), deployment("new", serial=2)], "new"),
        ([deployment("only")], "only"),
    ],
)
def test_the_highest_priority_then_the_newest_wins(deployments: list[Deployment], winner: str) -> None:
    resolution = resolve(deployments)
    assert resolution.winners["m"].name == winner
    assert set(resolution.losers) == {d.name for d in deployments} - {winner}


def test_assigned_ports_are_stable_and_never_clash() -> None:
    modules: dict[str, dict[str, Any]] = {f"m{i}": {} for i in range(40)}
    modules["fixed"] = {"httpPort": 8000, "grpcPort": 8001}
    ports = assign_ports("dev-1", modules)
    used = [p for pair in ports.values() for p in pair]
    assert len(used) == len(set(used))
    assert ports["fixed"] == (8000, 8001)
    assert all(PORT_RANGE[0] <= p <= PORT_RANGE[1] for name, pair in ports.items() if name != "fixed" for p in pair)
    fewer = assign_ports("dev-1", {"m3": {}, "fixed": modules["fixed"]})
    assert fewer["m3"] == ports["m3"]  # another module going away does not move it


def test_a_port_of_one_module_is_not_assigned_to_another() -> None:
    first = assign_ports("dev-1", {"a": {}})["a"]
    ports = assign_ports("dev-1", {"a": {}, "b": {"httpPort": first[0], "grpcPort": 9001}})
    assert ports["b"] == (first[0], 9001)
    assert first[0] not in ports["a"]


def test_the_manifest_verifies_on_the_agent_side() -> None:
    key = generate_private_key()
    deployments = [
        deployment("a", module="one", env={"X": "1"}, restart_policy="on-failure"),
        deployment("b", module="two", settings={"httpPort": 8100, "grpcPort": 8101}),
    ]
    document = sign_document(build_manifest(device_id="dev-1", version=7, deployments=deployments), key)
    manifest = parse_manifest(document, device_id="dev-1", public_key=key.public_key(), last_version=6)
    assert manifest.version == 7
    assert set(manifest.modules) == {"one", "two"}
    assert manifest.modules["one"].env == {"X": "1"}
    assert manifest.modules["one"].restart_policy.value == "on-failure"
    assert (manifest.modules["two"].settings.http_port, manifest.modules["two"].settings.grpc_port) == (8100, 8101)


def report(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "lastDesiredVersion": 3,
        "lastDesiredStatus": {"code": 200, "description": "applied"},
        "rejected": None,
        "modules": {"m": {"runtimeStatus": "running", "imageDigest": DIGEST, "rollback": None}},
    }
    base.update(fields)
    return base


@pytest.mark.parametrize(
    ("reported", "state", "reason"),
    [
        (None, DeviceState.TARGETED, "not reported"),
        (report(lastDesiredVersion=2), DeviceState.TARGETED, "v2"),
        (report(), DeviceState.SUCCEEDED, None),
        (report(modules={"m": {"runtimeStatus": "running", "imageDigest": OTHER}}), DeviceState.APPLIED, "running"),
        (
            report(modules={"m": {"runtimeStatus": "failed", "statusDescription": "pull: no space"}}),
            DeviceState.FAILED,
            "no space",
        ),
        (
            report(
                modules={
                    "m": {
                        "runtimeStatus": "running",
                        "imageDigest": OTHER,
                        "rollback": {"fromDigest": DIGEST, "reason": "warm-up failed"},
                    }
                }
            ),
            DeviceState.FAILED,
            "warm-up failed",
        ),
        (
            report(lastDesiredVersion=2, rejected={"version": 3, "code": "bad-signature", "description": "x"}),
            DeviceState.FAILED,
            "bad-signature",
        ),
        (
            report(lastDesiredStatus={"code": 500, "description": "every module failed"}, modules={}),
            DeviceState.FAILED,
            "500",
        ),
    ],
)
def test_device_states_from_reports(reported: dict[str, Any] | None, state: DeviceState, reason: str | None) -> None:
    got, why = device_state(reported=reported, version=3, module="m", digest=DIGEST)
    assert got is state
    if reason is None:
        assert why is None
    else:
        assert why is not None and reason in why
