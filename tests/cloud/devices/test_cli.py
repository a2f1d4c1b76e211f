"""`edgewise device ...` and `edgewise broker config` against a real service with a managed Mosquitto."""

from __future__ import annotations

from pathlib import Path

import pytest
from edgewise.cloud.errors import InvalidInputError, NotFoundError
from edgewise.cloud.signing_key import key_path
from edgewise.runtime.agent.config import parse_connection_string
from edgewise.runtime.agent.signing import load_private_key, sign_document, verify_document

from tests.cloud.cli.cli import edgewise, edgewise_json
from tests.cloud.devices.conftest import add_device, unique
from tests.cloud.service import WorkspaceProcess


def test_add_prints_a_connection_string_the_agent_reads(mosquitto_workspace: WorkspaceProcess) -> None:
    service = mosquitto_workspace
    device_id = unique("cam")
    added = edgewise_json("device", "add", device_id, "--tag", "site=berlin", "--tag", "tier=prod", env=service.env)
    assert added["device"]["id"] == device_id
    assert added["device"]["tags"] == {"site": "berlin", "tier": "prod"}
    connection = parse_connection_string(added["connection_string"])
    assert connection.device_id == device_id
    assert connection.broker_host == "127.0.0.1" and not connection.broker_tls
    assert f"mqtt://127.0.0.1:{connection.broker_port}" in service.log()  # the broker the service started
    assert connection.registry == service.url
    assert len(connection.secret) >= 32
    # The key in the connection string is the workspace's: it verifies what the workspace's key file signs.
    private = load_private_key(key_path(service.data_dir).read_bytes())
    manifest = {"schemaVersion": "1", "deviceId": device_id, "version": 1, "modules": {}}
    verify_document(sign_document(manifest, private), connection.workspace_key)
    key = service.client().manifest_key()
    assert key["public_key"] == connection.workspace_key_text
    assert key["algorithm"] == "Ed25519"
    # The secret is shown once: never in what the service stores or answers later.
    shown = edgewise("device", "show", device_id, "--output", "json", env=service.env).stdout
    assert connection.secret not in shown
    assert connection.secret not in (service.data_dir / "broker" / "passwd").read_text()


def test_table_output_of_add_is_the_connection_string_alone(mosquitto_workspace: WorkspaceProcess) -> None:
    done = edgewise("device", "add", unique("plain"), env=mosquitto_workspace.env)
    assert parse_connection_string(done.stdout.strip()).secret
    assert "not shown again" in done.stderr


def test_list_filters_by_tags(mosquitto_workspace: WorkspaceProcess) -> None:
    service = mosquitto_workspace
    site = unique("site")
    berlin_prod, berlin_dev, paris = unique("a"), unique("b"), unique("c")
    add_device(service, berlin_prod, f"site={site}", "tier=prod")
    add_device(service, berlin_dev, f"site={site}", "tier=dev")
    add_device(service, paris, f"site={site}-paris", "tier=prod")
    listed = edgewise_json("device", "list", "--tag", f"site={site}", env=service.env)
    assert [d["id"] for d in listed] == sorted([berlin_prod, berlin_dev])
    both = edgewise_json("device", "list", "--tag", f"site={site}", "--tag", "tier=prod", env=service.env)
    assert [d["id"] for d in both] == [berlin_prod]
    everyone = {d.id for d in service.client().list_devices()}
    assert {berlin_prod, berlin_dev, paris} <= everyone
    table = edgewise("device", "list", "--tag", f"site={site}", env=service.env).stdout
    assert berlin_prod in table and paris not in table


def test_list_pages_through_every_device(mosquitto_workspace: WorkspaceProcess) -> None:
    service = mosquitto_workspace
    team = unique("team")
    ids = sorted(unique("p") for _ in range(5))
    for device_id in ids:
        add_device(service, device_id, f"team={team}")
    with service.client() as client:
        assert [d.id for d in client.list_devices(tags={"team": team})] == ids
        assert [d.id for d in client.list_devices(tags={"team": team}, limit=3)] == ids[:3]
        page = client._json("GET", "devices", params={"tag": f"team={team}", "page_size": 2})
        assert [d["id"] for d in page["items"]] == ids[:2] and page["next_page_token"]


def test_show_has_tags_and_empty_state(mosquitto_workspace: WorkspaceProcess) -> None:
    service = mosquitto_workspace
    device_id = unique("show")
    add_device(service, device_id, "site=lyon")
    shown = edgewise_json("device", "show", device_id, env=service.env)
    assert shown["id"] == device_id and shown["tags"] == {"site": "lyon"}
    assert shown["status"] is None and shown["last_seen_at"] is None
    assert shown["reported"] is None and shown["desired_version"] is None
    table = edgewise("device", "show", device_id, env=service.env).stdout
    assert "never connected" in table and "site=lyon" in table and "desired" in table and "reported" in table


def test_tag_sets_and_removes(mosquitto_workspace: WorkspaceProcess) -> None:
    service = mosquitto_workspace
    device_id = unique("tag")
    add_device(service, device_id, "site=berlin", "tier=dev")
    updated = edgewise_json("device", "tag", device_id, "tier=prod", "rack=7", "--remove", "site", env=service.env)
    assert updated["tags"] == {"tier": "prod", "rack": "7"}
    assert edgewise_json("device", "show", device_id, env=service.env)["tags"] == {"tier": "prod", "rack": "7"}
    nothing = edgewise("device", "tag", device_id, env=service.env, expect=2)
    assert "nothing to change" in nothing.stderr


def test_remove_forgets_the_device(mosquitto_workspace: WorkspaceProcess) -> None:
    service = mosquitto_workspace
    device_id = unique("gone")
    add_device(service, device_id)
    assert edgewise_json("device", "remove", device_id, "--yes", env=service.env) == {"id": device_id, "removed": True}
    missing = edgewise("device", "show", device_id, env=service.env, expect=1)
    assert f"no device {device_id!r}" in missing.stderr
    with service.client() as client, pytest.raises(NotFoundError, match="no device"):
        client.remove_device(device_id)
    assert device_id not in (service.data_dir / "broker" / "passwd").read_text()
    asked = edgewise("device", "remove", unique("kept"), env=service.env, expect=1)  # no --yes, no answer: aborts
    assert "Aborted" in asked.stderr


def test_bad_ids_and_duplicates_are_refused(mosquitto_workspace: WorkspaceProcess) -> None:
    service = mosquitto_workspace
    done = edgewise("device", "add", "--", "has/slash", env=service.env, expect=1)
    assert "invalid device id 'has/slash'" in done.stderr
    with service.client() as client:
        for bad in ("plus+sign", "#", "-leading-dash", "edgewise-service", "x" * 129):
            with pytest.raises(InvalidInputError, match="device id"):
                client.add_device(bad)
    device_id = unique("twice")
    add_device(service, device_id)
    twice = edgewise("device", "add", device_id, env=service.env, expect=1)
    assert "exists already" in twice.stderr and "device remove" in twice.stderr
    bad_tag = edgewise("device", "add", unique("t"), "--tag", "novalue", env=service.env, expect=2)
    assert "KEY=VALUE" in bad_tag.stderr


def test_broker_config_prints_the_mosquitto_files(mosquitto_workspace: WorkspaceProcess) -> None:
    service = mosquitto_workspace
    device_id = unique("ext")
    add_device(service, device_id)
    config = edgewise_json("broker", "config", "--format", "mosquitto", env=service.env)
    files = {item["name"]: item for item in config["files"]}
    passwd = (service.data_dir / "broker" / "passwd").read_text()
    assert files["passwd"]["content"] == passwd
    assert f"{device_id}:$7$" in passwd and "edgewise-service:$7$" in passwd
    assert "pattern readwrite edgewise/v1/devices/%u/#" in files["acl"]["content"]
    assert Path(files["acl"]["path"]) == service.data_dir / "broker" / "acl"
    assert "allow_anonymous false" in config["mosquitto_conf"]
    text = edgewise("broker", "config", env=service.env).stdout
    assert f"{device_id}:$7$" in text and "acl_file" in text and "pattern readwrite" in text
    with service.client() as client, pytest.raises(InvalidInputError, match="the only one is 'mosquitto'"):
        client.broker_config(format="rabbitmq")
