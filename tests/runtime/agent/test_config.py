"""Connection strings and config files: what `edgewise device add` prints is what the agent reads."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from edgewise.runtime.agent.cli import build_parser, config_from_args
from edgewise.runtime.agent.config import load_config, parse_connection_string
from edgewise.runtime.agent.errors import ConfigError
from edgewise.runtime.agent.signing import key_id, public_key_text

KEY = public_key_text(Ed25519PrivateKey.generate())


def test_a_connection_string_names_broker_device_key_and_registry() -> None:
    text = f"Broker=mqtt://127.0.0.1:1884;DeviceId=cam-7;Secret=s3;WorkspaceKey={KEY};Registry=http://127.0.0.1:8080/"
    connection = parse_connection_string(text)
    assert (connection.broker_host, connection.broker_port, connection.broker_tls) == ("127.0.0.1", 1884, False)
    assert connection.device_id == "cam-7" and connection.secret == "s3"
    assert connection.registry == "http://127.0.0.1:8080"
    assert key_id(connection.workspace_key) == key_id(parse_connection_string(text).workspace_key)


def test_tls_brokers_default_to_port_8883() -> None:
    connection = parse_connection_string(f"broker=mqtts://127.0.0.1;deviceid=d;secret=s;workspacekey={KEY}")
    assert connection.broker_tls and connection.broker_port == 8883


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (f"DeviceId=d;Secret=s;WorkspaceKey={KEY}", "missing broker"),
        (f"Broker=http://127.0.0.1;DeviceId=d;Secret=s;WorkspaceKey={KEY}", "mqtt://"),
        ("Broker=mqtt://127.0.0.1;DeviceId=d;Secret=s;WorkspaceKey=ed25519:AAAA", "32"),
        (f"Broker=mqtt://127.0.0.1;DeviceId=a/b;Secret=s;WorkspaceKey={KEY}", "DeviceId"),
        (f"Broker=mqtt://127.0.0.1;DeviceId=d;Secret=s;WorkspaceKey={KEY};Colour=blue", "unknown"),
        ("Broker", "Key=Value"),
    ],
)
def test_bad_connection_strings_say_what_to_fix(text: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        parse_connection_string(text)


def test_a_config_file_with_flag_overrides(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(
        f'connection_string = "Broker=mqtt://127.0.0.1:1883;DeviceId=d;Secret=s;WorkspaceKey={KEY}"\n'
        f'state_dir = "{tmp_path / "state"}"\nmetrics_port = 9100\nsandbox = "none"\n'
    )
    config = load_config(config_file=path, overrides={"metrics_port": 9200, "sandbox": None})
    assert config.settings.state_dir == tmp_path / "state"
    assert config.settings.metrics_port == 9200 and config.settings.sandbox == "none"
    assert config.connection.device_id == "d"


def test_unknown_config_keys_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(f'connection_string = "Broker=mqtt://h;DeviceId=d;Secret=s;WorkspaceKey={KEY}"\nstate = "x"\n')
    with pytest.raises(ConfigError, match="state"):
        load_config(config_file=path)


def test_the_module_launcher_is_on_unless_turned_off(tmp_path: Path) -> None:
    text = f"Broker=mqtt://h;DeviceId=d;Secret=s;WorkspaceKey={KEY}"
    assert load_config(connection_string=text).settings.launcher is True
    path = tmp_path / "agent.toml"
    path.write_text(f'connection_string = "{text}"\nlauncher = false\nlauncher_idle = 5.0\n')
    settings = load_config(config_file=path).settings
    assert settings.launcher is False and settings.launcher_idle == 5.0
    opts = build_parser().parse_args(["--connection-string", text, "--no-launcher"])
    assert config_from_args(opts).settings.launcher is False
    assert config_from_args(build_parser().parse_args(["--connection-string", text])).settings.launcher is True
