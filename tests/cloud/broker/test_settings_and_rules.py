"""The --broker option, the topic rules and the password store, without a running broker."""

from __future__ import annotations

import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from edgewise.cloud.broker import (
    SERVICE_USERNAME,
    Accounts,
    BrokerKind,
    hash_password,
    may_publish,
    may_subscribe,
    parse_broker,
    verify_password,
)
from edgewise.cloud.errors import InvalidInputError


@pytest.mark.parametrize(
    "value",
    ["", "fast", "http://127.0.0.1:1883", "mqtt://", "mqtt://127.0.0.1:99999", "mqtt://h:1883/path", "mqtt://h:0"],
)
def test_bad_broker_values_name_the_choices(value: str) -> None:
    with pytest.raises(InvalidInputError, match="--broker"):
        parse_broker(value)


def test_mosquitto_without_the_binary_says_what_to_do() -> None:
    with pytest.raises(InvalidInputError, match="--broker embedded"):
        parse_broker("mosquitto", find=False)
    assert parse_broker("auto", find=False).kind is BrokerKind.EMBEDDED
    assert parse_broker("auto", mosquitto="/usr/sbin/mosquitto").kind is BrokerKind.MOSQUITTO


def test_bad_mqtt_port() -> None:
    with pytest.raises(InvalidInputError, match="--mqtt-port"):
        parse_broker("embedded", port=70000)


def test_external_url_with_credentials_hides_the_password() -> None:
    settings = parse_broker("mqtt://svc:s%40cret@127.0.0.1:2883")
    assert (settings.kind, settings.host, settings.port) == (BrokerKind.EXTERNAL, "127.0.0.1", 2883)
    assert (settings.username, settings.password) == ("svc", "s@cret")
    assert "cret" not in settings.requested and "cret" not in repr(settings)
    assert parse_broker("MQTT://127.0.0.1").port == 1883


@pytest.mark.parametrize(
    ("username", "topic", "allowed"),
    [
        (SERVICE_USERNAME, "edgewise/v1/devices/d1/desired", True),
        (SERVICE_USERNAME, "edgewise/v1/anything", True),
        (SERVICE_USERNAME, "other/topic", False),
        ("d1", "edgewise/v1/devices/d1/reported", True),
        ("d1", "edgewise/v1/devices/d1/commands/restart", True),
        ("d1", "edgewise/v1/devices/d2/reported", False),
        ("d1", "edgewise/v1/devices/d10/reported", False),
        ("d1", "edgewise/v1/devices/d1/+", False),
        (None, "edgewise/v1/devices/d1/reported", False),
    ],
)
def test_publish_rules(username: str | None, topic: str, allowed: bool) -> None:
    assert may_publish(username, topic) is allowed


@pytest.mark.parametrize(
    ("username", "topic_filter", "allowed"),
    [
        (SERVICE_USERNAME, "edgewise/v1/#", True),
        (SERVICE_USERNAME, "edgewise/v1/devices/+/reported", True),
        (SERVICE_USERNAME, "#", False),
        ("d1", "edgewise/v1/devices/d1/#", True),
        ("d1", "edgewise/v1/devices/d1/commands/+", True),
        ("d1", "edgewise/v1/devices/+/desired", False),
        ("d1", "edgewise/v1/#", False),
        ("d1", "#", False),
        ("", "edgewise/v1/devices//#", False),
    ],
)
def test_subscribe_rules(username: str | None, topic_filter: str, allowed: bool) -> None:
    assert may_subscribe(username, topic_filter) is allowed


def test_hashes_are_salted_and_checked() -> None:
    first, second = hash_password("s3cret"), hash_password("s3cret")
    assert first != second and first.startswith("$7$")
    assert verify_password("s3cret", first) and not verify_password("other", first)
    assert not verify_password("s3cret", "garbage")


@pytest.mark.skipif(shutil.which("mosquitto_passwd") is None, reason="mosquitto_passwd is not installed")
def test_hashes_written_by_mosquitto_passwd_verify(tmp_path: Path) -> None:
    path = tmp_path / "passwd"
    path.touch()
    subprocess.run(["mosquitto_passwd", "-b", str(path), "dev", "from-mosquitto"], check=True)
    hashed = path.read_text().strip().split(":", 1)[1]
    assert verify_password("from-mosquitto", hashed) and not verify_password("x", hashed)


def test_accounts_keep_the_service_password_private_and_stable(tmp_path: Path) -> None:
    first = Accounts(directory=tmp_path / "broker")
    again = Accounts(directory=tmp_path / "broker")
    assert first.service_credentials == again.service_credentials
    for name in ("service-password", "passwd", "acl"):
        assert stat.S_IMODE((tmp_path / "broker" / name).stat().st_mode) == 0o600
    first.add_device("cam-1", "plain-text-password")
    assert "plain-text-password" not in first.password_path.read_text()
    assert again.verify("cam-1", "plain-text-password") and again.devices() == ["cam-1"]
    assert "pattern readwrite edgewise/v1/devices/%u/#" in first.acl_path.read_text()


@pytest.mark.parametrize("device_id", ["", "../x", "a/b", "a+b", "#", SERVICE_USERNAME])
def test_bad_device_ids_are_refused(tmp_path: Path, device_id: str) -> None:
    with pytest.raises(InvalidInputError):
        Accounts(directory=tmp_path).add_device(device_id, "pw")


def test_empty_passwords_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="password"):
        Accounts(directory=tmp_path).add_device("d1", "")
