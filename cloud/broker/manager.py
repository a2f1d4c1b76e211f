"""One interface over the three brokers the service can use: managed Mosquitto, embedded amqtt, external.

Accounts are always written to the broker folder of the data directory. The managed brokers enforce them;
for an external broker they are there for its operator to point the broker at (`passwd` and `acl` are in
Mosquitto's formats), and the service only checks that it can connect.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from .accounts import Accounts, Credentials
from .embedded import EmbeddedBroker
from .mosquitto import MosquittoBroker
from .probe import try_connect
from .settings import BrokerKind, BrokerSettings

BROKER_FOLDER = "broker"

log = logging.getLogger("edgewise.broker")


class BrokerManager:
    """Starts, stops and describes the workspace's MQTT broker and keeps its accounts."""

    def __init__(self, *, settings: BrokerSettings, data_dir: Path) -> None:
        self.settings = settings
        self.directory = data_dir / BROKER_FOLDER
        self.accounts = Accounts(directory=self.directory)
        self._mosquitto: MosquittoBroker | None = None
        self._embedded: EmbeddedBroker | None = None
        if settings.kind is BrokerKind.MOSQUITTO:
            assert settings.mosquitto is not None
            self._mosquitto = MosquittoBroker(
                binary=settings.mosquitto,
                directory=self.directory,
                host=settings.host,
                port=settings.port,
                accounts=self.accounts,
            )
        elif settings.kind is BrokerKind.EMBEDDED:
            self._embedded = EmbeddedBroker(host=settings.host, port=settings.port, accounts=self.accounts)
        self._running = False

    @property
    def kind(self) -> BrokerKind:
        return self.settings.kind

    @property
    def host(self) -> str:
        return self.settings.host

    @property
    def port(self) -> int:
        """The broker's port; after start, the bound one when port 0 was asked for."""
        if self._mosquitto is not None:
            return self._mosquitto.port
        if self._embedded is not None:
            return self._embedded.port
        return self.settings.port

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"mqtt://{host}:{self.port}"

    @property
    def service_credentials(self) -> Credentials:
        """What the service's own MQTT clients log in with (an external broker's URL may name others)."""
        if self.kind is BrokerKind.EXTERNAL and self.settings.username is not None:
            return Credentials(username=self.settings.username, password=self.settings.password or "")
        return self.accounts.service_credentials

    @property
    def log_path(self) -> Path | None:
        return self._mosquitto.log_path if self._mosquitto is not None else None

    def describe(self) -> str:
        """One line for the startup log: which broker, where, and why that one."""
        if self.kind is BrokerKind.EXTERNAL:
            return f"external broker at {self.url} (--broker {self.settings.requested})"
        if self._mosquitto is not None:
            why = (
                f"--broker auto: {self.settings.mosquitto} is installed"
                if self.settings.requested == "auto"
                else "--broker mosquitto"
            )
            return f"mosquitto on {self.url} ({why}; log: {self._mosquitto.log_path})"
        why = "--broker auto: mosquitto is not installed" if self.settings.requested == "auto" else "--broker embedded"
        return f"embedded amqtt on {self.url} ({why})"

    async def start(self) -> None:
        """Start the broker (or check the external one answers); raises ServiceUnavailableError with the cause."""
        if self._running:
            return
        if self._embedded is not None:
            await self._embedded.start()
        elif self._mosquitto is not None:
            await asyncio.to_thread(self._mosquitto.start)
        else:
            await asyncio.to_thread(
                try_connect, host=self.host, port=self.port, credentials=self.service_credentials, timeout=10.0
            )
        self._running = True

    async def stop(self) -> None:
        """Stop the broker this service started; an external broker is left alone. Safe to call twice."""
        self._running = False
        if self._embedded is not None:
            await self._embedded.stop()
        elif self._mosquitto is not None:
            await asyncio.to_thread(self._mosquitto.stop)

    def add_device(self, device_id: str, password: str) -> None:
        """Give `device_id` credentials for its own topics; with Mosquitto, returns once the broker accepts them.

        Blocking (file writes, and waiting for Mosquitto's reload): call it off the event loop.
        """
        self.accounts.add_device(device_id, password)
        if self._mosquitto is not None and self._running:
            self._mosquitto.reload()
            if not self._mosquitto.wait_accepts(Credentials(username=device_id, password=password)):
                log.warning("mosquitto has not yet accepted the new credentials of device %s", device_id)

    def remove_device(self, device_id: str) -> bool:
        """Revoke `device_id`'s credentials: new connections are refused and open ones closed (for an external broker,
        only once its operator installs the new files); False when it had none."""
        removed = self.accounts.remove_device(device_id)
        if removed and self._mosquitto is not None and self._running:
            self._mosquitto.reload()
        if removed and self._embedded is not None and self._running:
            self._embedded.disconnect_user_from_thread(device_id)
        return removed
