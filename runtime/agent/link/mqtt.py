"""The device's one MQTT connection, as asyncio: publish-and-await-PUBACK, a message stream, reconnects forever.

This is the only module that imports paho. paho's network loop runs in a thread of its own, or (with
`link_thread` off, for a process that hosts many device identities) on the event loop, which then watches its
socket and calls its read, write and keep-alive steps, so that a gateway runs no thread per device. Either way
every callback reaches this object on the event loop (from the thread through `call_soon_threadsafe`), so all of
its state is touched from the event loop only; only the blocking connect runs on a worker thread, and paho calls
nothing back during it. The thread overlaps socket writes with the agent's own work, which a single device's
telemetry throughput gains from. paho's own reconnect is off: each connection attempt gets a fresh paho client
with the same client id and clean session off, so the broker keeps the subscriptions and queues QoS 1 messages
while the device is away, but nothing half-sent on a lost connection is retransmitted behind the caller's back
(the telemetry spool resends from its own records).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho
from edgewise.runtime.agent.config import AgentSettings, Connection
from edgewise.runtime.agent.errors import LinkError
from edgewise.runtime.agent.link.topics import DeviceTopics
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

log = logging.getLogger(__name__)

ONLINE = b"online"
OFFLINE = b"offline"
MAX_INFLIGHT = 32  # QoS 1 publishes on the wire awaiting PUBACK; more wait in paho's queue
_SETUP_TIMEOUT = 15.0  # seconds for CONNACK, SUBACK and the "online" PUBACK after a connect


@dataclass(frozen=True, kw_only=True)
class Message:
    topic: str
    payload: bytes
    retain: bool


class MqttLink:
    """Connects in the background and keeps connecting; `publish` fails fast with LinkError while offline."""

    def __init__(
        self, *, connection: Connection, settings: AgentSettings, topics: DeviceTopics, subscriptions: Sequence[str]
    ) -> None:
        self._connection = connection
        self._settings = settings
        self._topics = topics
        self._subscriptions = list(subscriptions)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: paho.Client | None = None
        self._session_up = False  # CONNACK accepted on the current client
        self._ready = asyncio.Event()  # session up, subscribed and "online" acknowledged
        self._connack: asyncio.Future[str | None] | None = None  # None: accepted; else why not
        self._lost: asyncio.Event = asyncio.Event()
        self._acks: dict[int, asyncio.Future[None]] = {}
        self._subacks: dict[int, asyncio.Future[bool]] = {}
        self._queue: asyncio.Queue[Message] = asyncio.Queue()
        self._callbacks: list[Callable[[], Awaitable[None]]] = []
        self._task: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._stopping = False
        self._tick: asyncio.TimerHandle | None = None  # paho's keep-alive step, once a second

    # -- public API ----------------------------------------------------------------------------

    async def start(self) -> None:
        if self._task is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name=f"mqtt-link-{self._connection.device_id}")

    async def stop(self) -> None:
        """Say "offline" (retained) while still connected, then disconnect cleanly so the will is not sent."""
        self._stopping = True
        if self._session_up:
            with contextlib.suppress(LinkError):
                await self.publish(self._topics.status, OFFLINE, retain=True, timeout=5.0)
        client = self._client
        if client is not None and self._session_up:
            client.disconnect()
        task, self._task = self._task, None
        if task is not None:
            if client is not None and self._session_up:
                await asyncio.wait({task}, timeout=5.0)  # let DISCONNECT reach the broker
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for background in list(self._background):
            background.cancel()

    @property
    def connected(self) -> bool:
        return self._session_up and self._ready.is_set()

    async def wait_connected(self, timeout: float | None = None) -> bool:
        try:
            await asyncio.wait_for(self._ready.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def publish(
        self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False, timeout: float = 10.0
    ) -> None:
        """Publish; for QoS 1 return only once the broker's PUBACK arrived."""
        client = self._client
        if client is None or not self._session_up:
            raise LinkError(f"not connected to the broker {self._connection.broker_url}; cannot publish to {topic}")
        info = client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise LinkError(f"publish to {topic} failed: {paho.error_string(info.rc)}")
        if qos == 0:
            return
        # The PUBACK callback reaches the event loop through call_soon_threadsafe, so it cannot run before
        # this future is registered.
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._acks[info.mid] = future
        try:
            async with asyncio.timeout(timeout):  # cancels the future when the time is up, as wait_for would
                await future
        except TimeoutError:
            raise LinkError(f"the broker did not acknowledge a publish to {topic} within {timeout:g}s") from None
        finally:
            if self._acks.get(info.mid) is future:
                del self._acks[info.mid]

    async def messages(self) -> AsyncIterator[Message]:
        """Every message received on the subscriptions (and queued for the session), across reconnects."""
        while True:
            yield await self._queue.get()

    def on_connect(self, callback: Callable[[], Awaitable[None]]) -> None:
        self._callbacks.append(callback)

    # -- connection loop -----------------------------------------------------------------------

    async def _run(self) -> None:
        attempt = 0
        try:
            while not self._stopping:
                client = self._new_client()
                if await self._session(client):
                    attempt = 0
                else:
                    attempt += 1
                if self._stopping:
                    return
                low, high = self._settings.reconnect_min, self._settings.reconnect_max
                delay = random.uniform(low, max(low, min(high, low * 2 ** min(attempt, 30))))
                log.info("reconnecting to %s in %.1fs", self._connection.broker_url, delay)
                await asyncio.sleep(delay)
        finally:
            if self._client is not None:
                await self._teardown(self._client)

    async def _session(self, client: paho.Client) -> bool:
        """One connection from connect to loss; True when the broker accepted it."""
        loop = asyncio.get_running_loop()
        self._client = client
        self._lost = asyncio.Event()
        self._connack = loop.create_future()
        c = self._connection
        try:
            try:
                await asyncio.to_thread(client.connect, c.broker_host, c.broker_port, int(self._settings.keepalive))
            except (OSError, ssl.SSLError, ValueError) as exc:
                log.warning("cannot reach the broker %s: %s", c.broker_url, exc)
                return False
            if self._settings.link_thread:
                client.loop_start()
            else:
                self._attach(client)
            try:
                refusal = await asyncio.wait_for(asyncio.shield(self._connack), _SETUP_TIMEOUT)
            except TimeoutError:
                log.warning("the broker %s did not answer CONNECT within %gs", c.broker_url, _SETUP_TIMEOUT)
                return False
            if refusal is not None:
                log.warning("the broker %s refused device %s: %s", c.broker_url, c.device_id, refusal)
                return False
            log.info("connected to %s as %s", c.broker_url, c.device_id)
            setup = asyncio.create_task(self._after_connect(client))
            self._background.add(setup)
            setup.add_done_callback(self._background.discard)
            await self._lost.wait()
            if not self._stopping:
                log.warning("lost the connection to %s", c.broker_url)
            return True
        finally:
            await self._teardown(client)

    async def _after_connect(self, client: paho.Client) -> None:
        """Subscribe, announce "online", then run the callbacks; a failure here drops the connection."""
        try:
            if self._subscriptions:
                result, mid = client.subscribe([(topic, 1) for topic in self._subscriptions])
                if result != MQTTErrorCode.MQTT_ERR_SUCCESS or mid is None:
                    raise LinkError(f"subscribe failed: {paho.error_string(result)}")
                future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
                self._subacks[mid] = future
                if not await asyncio.wait_for(future, _SETUP_TIMEOUT):
                    raise LinkError(f"the broker refused the subscriptions {self._subscriptions}")
            await self.publish(self._topics.status, ONLINE, retain=True, timeout=_SETUP_TIMEOUT)
        except (LinkError, TimeoutError) as exc:
            if client is self._client and self._session_up:
                log.warning("setting up the connection failed (%s); reconnecting", exc or "timeout")
                self._drop_socket(client)
            return
        self._ready.set()
        for callback in list(self._callbacks):
            try:
                await callback()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("a connect callback failed")

    async def _teardown(self, client: paho.Client) -> None:
        if client is not self._client:
            return
        self._session_up = False
        self._ready.clear()
        reason = LinkError(f"the connection to {self._connection.broker_url} was lost")
        futures: list[asyncio.Future[Any]] = [*self._acks.values(), *self._subacks.values()]
        for future in futures:
            if not future.done():
                future.set_exception(reason)
                future.exception()  # marks it retrieved when nobody awaits it any more
        self._acks.clear()
        self._subacks.clear()
        if self._settings.link_thread:
            self._drop_socket(client)  # paho's loop then ends its thread, as after a network failure
            await asyncio.to_thread(client.loop_stop)
        else:
            self._detach(client)

    @staticmethod
    def _drop_socket(client: paho.Client) -> None:
        """Shut the socket down: paho's next read finds it closed and reports the loss (as a network failure
        would)."""
        sock = client.socket()
        if isinstance(sock, socket.socket):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    # -- paho driven by the event loop (link_thread off) ---------------------------------------

    def _attach(self, client: paho.Client) -> None:
        """Watch the connected client's socket: reads when it is readable, writes while paho has bytes queued."""
        loop = asyncio.get_running_loop()
        sock = client.socket()
        if sock is None:
            return
        client.on_socket_register_write = lambda c, userdata, s: loop.add_writer(s, self._writable, c)
        client.on_socket_unregister_write = lambda c, userdata, s: self._unwatch_writes(loop, s)
        client.on_socket_close = lambda c, userdata, s: self._unwatch(loop, s)
        loop.add_reader(sock, self._readable, client)
        if client.want_write():
            loop.add_writer(sock, self._writable, client)
        self._keep_alive(client)

    @staticmethod
    def _unwatch_writes(loop: asyncio.AbstractEventLoop, sock: Any) -> None:
        loop.remove_writer(sock)

    @staticmethod
    def _unwatch(loop: asyncio.AbstractEventLoop, sock: Any) -> None:
        """Before paho closes its socket: an fd number watched after its close could be another file's."""
        with contextlib.suppress(ValueError, OSError):
            loop.remove_reader(sock)
        with contextlib.suppress(ValueError, OSError):
            loop.remove_writer(sock)

    def _readable(self, client: paho.Client) -> None:
        try:
            client.loop_read()
            sock = client.socket()
            # TLS may hold decrypted bytes the socket no longer signals
            while isinstance(sock, ssl.SSLSocket) and sock.pending() and client.socket() is sock:
                client.loop_read()
        except (OSError, ssl.SSLError) as exc:  # paho lets some socket errors through
            log.warning("reading from the broker failed: %s", exc)
            self._drop_socket(client)

    def _writable(self, client: paho.Client) -> None:
        try:
            client.loop_write()
        except (OSError, ssl.SSLError) as exc:
            log.warning("writing to the broker failed: %s", exc)
            self._drop_socket(client)

    def _keep_alive(self, client: paho.Client) -> None:
        """paho's keep-alive step (PINGREQ when due, a lost connection when PINGRESP is late), every second."""
        if client.socket() is None:
            self._tick = None
            return
        client.loop_misc()
        self._tick = asyncio.get_running_loop().call_later(1.0, self._keep_alive, client)

    def _detach(self, client: paho.Client) -> None:
        """Stop watching the client and close its socket (paho reports the loss, which is then ignored)."""
        if self._tick is not None:
            self._tick.cancel()
            self._tick = None
        if client.socket() is not None:
            self._drop_socket(client)
            with contextlib.suppress(OSError, ssl.SSLError):
                client.loop_read()  # finds the socket shut: paho closes it, unwatching it first
        sock = client.socket()
        if sock is not None:  # paho kept it open: unwatch and close it here
            self._unwatch(asyncio.get_running_loop(), sock)
            with contextlib.suppress(OSError):
                sock.close()

    def _new_client(self) -> paho.Client:
        c = self._connection
        client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=c.device_id,
            clean_session=False,
            protocol=paho.MQTTv311,
            reconnect_on_failure=False,
        )
        client.username_pw_set(c.device_id, c.secret)
        client.will_set(self._topics.status, OFFLINE, qos=1, retain=True)
        client.max_inflight_messages_set(MAX_INFLIGHT)
        client.max_queued_messages_set(0)
        if c.broker_tls:
            client.tls_set_context(ssl.create_default_context())
        client.on_connect = self._cb_connect
        client.on_disconnect = self._cb_disconnect
        client.on_publish = self._cb_publish
        client.on_subscribe = self._cb_subscribe
        client.on_message = self._cb_message
        return client

    # -- paho callbacks → event loop ----------------------------------------------------------

    def _post(self, callback: Callable[..., None], *args: Any) -> None:
        loop = self._loop
        if loop is None:
            return
        if not self._settings.link_thread:
            loop.call_soon(callback, *args)  # paho runs on the event loop: its callbacks all come this way
            return
        with contextlib.suppress(RuntimeError):  # the loop is closing
            loop.call_soon_threadsafe(callback, *args)

    def _cb_connect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        self._post(self._connected, client, None if not reason.is_failure else str(reason))

    def _cb_disconnect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        self._post(self._disconnected, client)

    def _cb_publish(self, client: paho.Client, userdata: Any, mid: int, reason: Any, properties: Any) -> None:
        self._post(self._puback, client, mid)

    def _cb_subscribe(self, client: paho.Client, userdata: Any, mid: int, codes: Any, properties: Any) -> None:
        granted = all(not getattr(code, "is_failure", False) for code in codes)
        self._post(self._suback, client, mid, granted)

    def _cb_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        self._post(
            self._queue.put_nowait,
            Message(topic=message.topic, payload=bytes(message.payload), retain=bool(message.retain)),
        )

    # -- event loop side -----------------------------------------------------------------------

    def _connected(self, client: paho.Client, refusal: str | None) -> None:
        if client is not self._client:
            return
        self._session_up = refusal is None
        if self._connack is not None and not self._connack.done():
            self._connack.set_result(refusal)

    def _disconnected(self, client: paho.Client) -> None:
        if client is not self._client:
            return
        self._session_up = False
        self._ready.clear()
        if self._connack is not None and not self._connack.done():
            self._connack.set_result("the connection closed before CONNACK")
        self._lost.set()

    def _puback(self, client: paho.Client, mid: int) -> None:
        future = self._acks.pop(mid, None) if client is self._client else None
        if future is not None and not future.done():
            future.set_result(None)

    def _suback(self, client: paho.Client, mid: int, granted: bool) -> None:
        future = self._subacks.pop(mid, None) if client is self._client else None
        if future is not None and not future.done():
            future.set_result(granted)
