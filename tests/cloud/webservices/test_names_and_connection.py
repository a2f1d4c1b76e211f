"""Fast checks of the pure parts: web service names and the host device's saved connection string."""

from __future__ import annotations

import pytest
from edgewise.cloud.devices import connection_string
from edgewise.cloud.errors import InvalidInputError
from edgewise.cloud.webservices import check_webservice_name, deployment_name
from edgewise.cloud.webservices.host import parse_connection


@pytest.mark.parametrize("name", ["iris", "a", "scorer-2.v1_x", "x" * 63])
def test_module_names_are_web_service_names(name: str) -> None:
    assert check_webservice_name(name) == name
    assert deployment_name(name) == f"webservice-{name}"


@pytest.mark.parametrize("name", ["", "Iris", "-iris", "a b", "x" * 64, "a/b", 7])
def test_other_names_are_refused_with_the_rule(name: object) -> None:
    with pytest.raises(InvalidInputError, match="1-63 lower-case letters"):
        check_webservice_name(name)


def test_a_connection_string_reads_back_with_padded_keys() -> None:
    text = connection_string(
        broker_url="mqtt://127.0.0.1:1883",
        device_id="edgewise-host",
        secret="s3cr-et_",
        workspace_key="ed25519:AAAA+/==",
        registry="http://127.0.0.1:8080",
    )
    parsed = parse_connection(text + "\n")
    assert parsed == {
        "Broker": "mqtt://127.0.0.1:1883",
        "DeviceId": "edgewise-host",
        "Secret": "s3cr-et_",
        "WorkspaceKey": "ed25519:AAAA+/==",
        "Registry": "http://127.0.0.1:8080",
    }
