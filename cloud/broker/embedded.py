"""The embedded broker: amqtt in the service's own event loop, with the same accounts and topic rules.

Two amqtt plugins carry the rules: one checks logins against the password file the service writes (read at
every login, so added and removed devices take effect at once), the other applies `rules.py` to every
subscribe, publish and delivery. A removed device's open connections are closed and its stored sessions
forgotten (`disconnect_user`), as Mosquitto does when it reloads its password file.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from amqtt.broker import Broker
from amqtt.contexts import Action
from amqtt.errors import BrokerError
from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin
from edgewise.cloud.errors import ServiceUnavailableError

from .accounts import Accounts, check_login
from .rules import may_publish, may_subscribe

_QUIET_LOGGERS = ("amqtt", "transitions", "edgewise.broker.embedded.plugins")
DISCONNECT_TIMEOUT = 10.0

log = logging.getLogger("edgewise.broker")


class PasswordFileAuth(BaseAuthPlugin):  # type: ignore[misc]  # amqtt ships no type information
    """Accept a client only with a username and the password whose hash the password file holds."""

    @dataclass
    class Config:
        password_file: str = ""

    async def authenticate(self, *, session: Any) -> bool:
        path = Path(self.config.password_file)
        username = getattr(session, "username", None)
        password = getattr(session, "password", None)
        return await asyncio.to_thread(check_login, path, username, password)


class TopicRules(BaseTopicPlugin):  # type: ignore[misc]
    """The service account anywhere under edgewise/v1, each device under its own id, nobody else anywhere."""

    @dataclass
    class Config:
        pass

    async def topic_filtering(
        self, *, session: Any = None, topic: str | None = None, action: Action | None = None
    ) -> bool:
        username = getattr(session, "username", None)
        if not topic:
            return False
        if action == Action.SUBSCRIBE:
            return may_subscribe(username, topic)
        return may_publish(username, topic)  # PUBLISH and RECEIVE: read and write rights are the same


class EmbeddedBroker:
    """amqtt listening on `host:port` (port 0: any free port; `port` holds the bound one after start)."""

    def __init__(self, *, host: str, port: int, accounts: Accounts) -> None:
        self.host = host
        self.port = port
        self.accounts = accounts
        self._broker: Broker | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        """Start listening in the running event loop."""
        if self._broker is not None:
            return
        for name in _QUIET_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)
        bind_host = f"[{self.host}]" if ":" in self.host else self.host
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"{bind_host}:{self.port}"}},
            "plugins": {
                f"{__name__}.PasswordFileAuth": {"password_file": str(self.accounts.password_path)},
                f"{__name__}.TopicRules": {},
            },
        }
        broker = Broker(config, loop=asyncio.get_running_loop(), plugin_namespace="edgewise.broker.embedded.plugins")
        try:
            await broker.start()
        except BrokerError as exc:
            raise ServiceUnavailableError(
                f"cannot start the embedded MQTT broker on {self.host}:{self.port}: {exc.__cause__ or exc}; "
                "pick another --mqtt-port (0: any free port)"
            ) from exc
        self._broker = broker
        self._loop = asyncio.get_running_loop()
        self.port = _bound_port(broker, self.port)

    async def stop(self) -> None:
        """Close every client connection and the listener."""
        broker, self._broker = self._broker, None
        if broker is not None:
            await broker.shutdown()

    async def disconnect_user(self, username: str) -> int:
        """Close every connection logged in as `username` and forget its sessions; answers how many there were.

        A closed connection counts as an abnormal end, so the broker publishes the client's last will (a device's
        `offline` status), then the session and its queued messages are dropped: a revoked account keeps nothing.
        """
        broker = self._broker
        if broker is None:
            return 0
        sessions: dict[str, tuple[Any, Any]] = broker.sessions
        matching = [(cid, s, h) for cid, (s, h) in list(sessions.items()) if getattr(s, "username", None) == username]
        for _, session, handler in matching:
            writer = getattr(handler, "writer", None)
            if writer is not None and session.transitions.is_connected():
                await writer.close()
        for client_id, session, _ in matching:
            await _wait_disconnected(session)
            if sessions.get(client_id, (None,))[0] is session:
                await broker._cleanup_session(client_id)  # amqtt offers no public way to drop a stored session
        if matching:
            log.info("closed %d MQTT session(s) of %s", len(matching), username)
        return len(matching)

    def disconnect_user_from_thread(self, username: str) -> None:
        """`disconnect_user` from a thread other than the broker's event loop (the registry's worker threads);
        from the loop itself it is scheduled without waiting."""
        loop = self._loop
        if loop is None or self._broker is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            loop.create_task(self.disconnect_user(username))
            return
        future = asyncio.run_coroutine_threadsafe(self.disconnect_user(username), loop)
        try:
            future.result(DISCONNECT_TIMEOUT)
        except TimeoutError:
            future.cancel()
            log.warning("the embedded broker did not close the sessions of %s within %gs", username, DISCONNECT_TIMEOUT)


async def _wait_disconnected(session: Any) -> None:
    """Until amqtt has finished ending the connection (will published, handler stopped)."""
    for _ in range(int(DISCONNECT_TIMEOUT / 0.02)):
        if not session.transitions.is_connected():
            return
        await asyncio.sleep(0.02)


def _bound_port(broker: Broker, fallback: int) -> int:
    # amqtt keeps its listening servers privately; the port actually bound matters when asked for port 0.
    server = getattr(broker, "_servers", {}).get("default")
    sockets = getattr(getattr(server, "instance", None), "sockets", None) or []
    for sock in sockets:
        return int(sock.getsockname()[1])
    return fallback
