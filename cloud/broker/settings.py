"""The `--broker` and `--mqtt-port` options, read once into a value the rest of the service trusts."""

from __future__ import annotations

import enum
import os
import shutil
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from edgewise.cloud.errors import InvalidInputError

DEFAULT_MQTT_PORT = 1883
BROKER_CHOICES = "auto, embedded, mosquitto or mqtt://host:port"
_SBIN_MOSQUITTO = "/usr/sbin/mosquitto"  # Debian installs it outside a normal user's PATH


class BrokerKind(enum.StrEnum):
    EMBEDDED = "embedded"
    MOSQUITTO = "mosquitto"
    EXTERNAL = "external"


@dataclass(frozen=True, kw_only=True)
class BrokerSettings:
    """Which broker the service uses and where; `host`/`port` are the listen address or the external broker's."""

    kind: BrokerKind
    host: str
    port: int
    requested: str  # what the user asked for ("auto", "embedded", ...), for the startup log
    mosquitto: str | None = None  # the binary, for kind MOSQUITTO
    username: str | None = None  # credentials given in an external broker's URL
    password: str | None = None

    def __repr__(self) -> str:
        secret = "'***'" if self.password is not None else "None"
        return (
            f"BrokerSettings(kind={self.kind.value!r}, host={self.host!r}, port={self.port}, "
            f"requested={self.requested!r}, mosquitto={self.mosquitto!r}, username={self.username!r}, "
            f"password={secret})"
        )


def find_mosquitto() -> str | None:
    """The Mosquitto binary, from PATH or Debian's /usr/sbin; None when it is not installed."""
    found = shutil.which("mosquitto")
    if found:
        return found
    return _SBIN_MOSQUITTO if os.access(_SBIN_MOSQUITTO, os.X_OK) else None


def parse_broker(
    value: str,
    *,
    host: str = "127.0.0.1",
    port: int = DEFAULT_MQTT_PORT,
    mosquitto: str | None = None,
    find: bool = True,
) -> BrokerSettings:
    """Read a `--broker` value; `auto` becomes Mosquitto when its binary is found, else the embedded broker.

    `mosquitto` names the binary to use; with `find` (the default) it is looked up when not given.
    """
    if not isinstance(port, int) or not 0 <= port <= 65535:
        raise InvalidInputError(f"invalid --mqtt-port {port!r}: use 0-65535 (0: any free port)")
    raw = (value or "").strip()
    choice = raw.lower()
    binary = mosquitto or (find_mosquitto() if find else None)
    if choice == "auto":
        kind = BrokerKind.MOSQUITTO if binary else BrokerKind.EMBEDDED
        return BrokerSettings(kind=kind, host=host, port=port, requested="auto", mosquitto=binary)
    if choice == "embedded":
        return BrokerSettings(kind=BrokerKind.EMBEDDED, host=host, port=port, requested="embedded")
    if choice == "mosquitto":
        if not binary:
            raise InvalidInputError(
                "--broker mosquitto: the mosquitto binary is not installed (Debian: apt install mosquitto); "
                "use --broker embedded instead"
            )
        return BrokerSettings(kind=BrokerKind.MOSQUITTO, host=host, port=port, requested="mosquitto", mosquitto=binary)
    if "://" in raw:
        return _parse_url(raw)
    raise InvalidInputError(f"invalid --broker {value!r}: use {BROKER_CHOICES}")


def _parse_url(raw: str) -> BrokerSettings:
    parts = urlsplit(raw)
    if parts.scheme.lower() != "mqtt":
        raise InvalidInputError(
            f"invalid --broker {raw!r}: only plain mqtt:// URLs are supported (use {BROKER_CHOICES})"
        )
    try:
        port = parts.port
    except ValueError as exc:
        raise InvalidInputError(f"invalid --broker {raw!r}: the port must be a number in 1-65535") from exc
    if not parts.hostname:
        raise InvalidInputError(f"invalid --broker {raw!r}: name the host, as in mqtt://127.0.0.1:1883")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise InvalidInputError(f"invalid --broker {raw!r}: give only mqtt://[user:password@]host:port")
    if port == 0:
        raise InvalidInputError(f"invalid --broker {raw!r}: the port must be a number in 1-65535")
    return BrokerSettings(
        kind=BrokerKind.EXTERNAL,
        host=parts.hostname,
        port=port or DEFAULT_MQTT_PORT,
        requested=_without_password(raw),
        username=unquote(parts.username) if parts.username is not None else None,
        password=unquote(parts.password) if parts.password is not None else None,
    )


def _without_password(raw: str) -> str:
    parts = urlsplit(raw)
    if parts.password is None:
        return raw
    netloc = parts.netloc.rsplit("@", 1)[1]
    return f"{parts.scheme}://{parts.username}:***@{netloc}"
