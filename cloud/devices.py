"""The device registry's operations, free of HTTP: register, tag and remove devices and their credentials.

A device is a row in the store plus an account in the broker's password file. Adding one creates both and
hands out the connection string, the only place its secret ever appears (only a salted hash is kept).
Removing one revokes the account first, so a device that is gone from the list can no longer connect.
"""

from __future__ import annotations

import logging
import secrets
import socket
from collections.abc import Mapping, Sequence
from typing import Any, Protocol
from urllib.parse import urlsplit

from edgewise.cloud.broker import SERVICE_USERNAME, BrokerManager
from edgewise.cloud.errors import InvalidInputError
from edgewise.cloud.signing_key import ManifestKey
from edgewise.cloud.store.device_records import Device, NewDevice
from edgewise.cloud.store.records import Page
from edgewise.cloud.store.sql import SqlStore
from edgewise.runtime.agent.config import DEVICE_ID

log = logging.getLogger("edgewise.devices")

SECRET_BYTES = 32
_ANY_ADDRESS = ("0.0.0.0", "::", "")


def check_device_id(device_id: object) -> str:
    """A device id the agent, the broker's topics and its ACL patterns all accept."""
    if not isinstance(device_id, str) or not DEVICE_ID.match(device_id):
        raise InvalidInputError(
            f"invalid device id {device_id!r}: use 1-128 letters, digits, '.', '_' or '-', "
            "starting with a letter or a digit"
        )
    if device_id == SERVICE_USERNAME:
        raise InvalidInputError(f"device id {device_id!r} is the workspace service's own account; pick another")
    return device_id


def connection_string(*, broker_url: str, device_id: str, secret: str, workspace_key: str, registry: str) -> str:
    """What `edgewise-agent --connection-string` reads (see `runtime/agent/config.py`)."""
    return f"Broker={broker_url};DeviceId={device_id};Secret={secret};WorkspaceKey={workspace_key};Registry={registry}"


class DeviceListener(Protocol):
    """Told after a device was "added", "retagged" or "removed" (the deployment controller republishes)."""

    def device_changed(self, device_id: str, event: str) -> None: ...


class DeviceRegistry:
    """Devices of the workspace: the store's records, the broker's accounts and the connection strings."""

    def __init__(self, *, store: SqlStore, broker: BrokerManager, manifest_key: ManifestKey, registry_url: str) -> None:
        self.store = store
        self.broker = broker
        self.manifest_key = manifest_key
        self.registry_url = _advertised_url(registry_url)
        self.listeners: list[DeviceListener] = []

    @property
    def broker_url(self) -> str:
        """The broker's URL as devices should dial it (read late: a port 0 broker knows its port after start)."""
        return _advertised_url(self.broker.url)

    def add(self, device_id: str, *, tags: Mapping[str, str] | None = None) -> NewDevice:
        """Register a device, give it broker credentials and answer its connection string.

        Blocking (with a managed Mosquitto it waits until the broker accepts the new account): call it off the
        event loop.
        """
        check_device_id(device_id)
        device = self.store.create_device(device_id, tags=tags)
        secret = secrets.token_urlsafe(SECRET_BYTES)
        try:
            self.broker.add_device(device_id, secret)
        except BaseException:
            self.store.delete_device(device_id)
            raise
        log.info("added device %s", device_id)
        self._notify(device_id, "added")
        text = connection_string(
            broker_url=self.broker_url,
            device_id=device_id,
            secret=secret,
            workspace_key=self.manifest_key.public_text,
            registry=self.registry_url,
        )
        return NewDevice(device=device, connection_string=text)

    def get(self, device_id: str) -> Device:
        return self.store.get_device(device_id)

    def list(
        self, *, tags: Mapping[str, str | None] | None = None, page_size: int = 100, page_token: str | None = None
    ) -> Page[Device]:
        return self.store.list_devices(tags=tags, page_size=page_size, page_token=page_token)

    def tag(self, device_id: str, *, set: Mapping[str, str] | None = None, remove: Sequence[str] = ()) -> Device:
        device = self.store.set_device_tags(device_id, set=set, remove=remove)
        self._notify(device_id, "retagged")
        return device

    def remove(self, device_id: str) -> None:
        """Revoke the device's credentials (new connections are refused), then forget it."""
        self.store.get_device(device_id)  # an unknown id is reported before anything changes
        self.broker.remove_device(device_id)
        self.store.delete_device(device_id)
        log.info("removed device %s and revoked its credentials", device_id)
        self._notify(device_id, "removed")

    def _notify(self, device_id: str, event: str) -> None:
        for listener in self.listeners:
            listener.device_changed(device_id, event)

    def broker_config(self, format: str = "mosquitto") -> dict[str, Any]:
        """The password and ACL files, and the settings that use them, for the operator of an external broker.

        They change with every device added or removed: the operator copies them again and reloads the broker.
        """
        if format != "mosquitto":
            raise InvalidInputError(f"unknown broker config format {format!r}; the only one is 'mosquitto'")
        accounts = self.broker.accounts
        files = [
            {"name": "passwd", "path": str(accounts.password_path), "content": accounts.password_path.read_text()},
            {"name": "acl", "path": str(accounts.acl_path), "content": accounts.acl_path.read_text()},
        ]
        settings = f"allow_anonymous false\npassword_file {accounts.password_path}\nacl_file {accounts.acl_path}\n"
        return {
            "format": format,
            "broker": {"kind": self.broker.kind.value, "url": self.broker_url},
            "files": files,
            "mosquitto_conf": settings,
        }

    def verify_login(self, username: str, password: str) -> bool:
        """Whether the pair is a device's id and secret (the workspace service's own account never passes)."""
        if not username or username == SERVICE_USERNAME:
            return False
        return self.broker.accounts.verify(username, password)


def _advertised_url(url: str) -> str:
    """`url` with a wildcard listen address replaced by this host's name, which a device can dial."""
    parts = urlsplit(url)
    if parts.hostname not in _ANY_ADDRESS:
        return url
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{socket.getfqdn()}{port}{parts.path}"
