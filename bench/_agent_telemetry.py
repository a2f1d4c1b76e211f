"""Telemetry through a real Mosquitto, end to end: records appended on the device side until a service-account
subscriber has them decoded.

- edgewise: the agent's own spool (SQLite), sender and MQTT link, batching many records per compressed QoS 1
  message.
- baseline: the same records, one per QoS 1 message, each publish waiting for its PUBACK (what a plain paho
  loop does); and, for reference, the same with up to 20 publishes in flight.

The subscriber runs in a process of its own, as the workspace would (`_telemetry_subscriber.py`).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from edgewise.cloud.broker import BrokerManager, parse_broker
from edgewise.runtime.agent.config import AgentSettings, parse_connection_string
from edgewise.runtime.agent.link.mqtt import MqttLink
from edgewise.runtime.agent.link.topics import DeviceTopics
from edgewise.runtime.agent.signing import generate_private_key, public_key_text
from edgewise.runtime.agent.telemetry.sender import TelemetrySender
from edgewise.runtime.agent.telemetry.spool import TelemetrySpool
from paho.mqtt.enums import CallbackAPIVersion

from _telemetry_subscriber import Subscriber

HOST = "127.0.0.1"


def record_data(index: int) -> dict[str, Any]:
    """A health-like record of about 150 bytes, varied so compression is not trivially perfect."""
    return {
        "cpuPercent": round((index * 37) % 1000 / 10, 1),
        "memoryUsedBytes": 500_000_000 + index * 4093 % 1_000_000,
        "diskFreeBytes": 20_000_000_000 - index * 8191 % 5_000_000,
        "requests": index % 977,
        "errors": index % 13 == 0,
    }


def _start_broker(work: Path, mosquitto_port: int) -> BrokerManager:
    manager = BrokerManager(settings=parse_broker("mosquitto", host=HOST, port=mosquitto_port), data_dir=work)
    asyncio.run(manager.start())
    return manager


def measure_edgewise(broker: BrokerManager, work: Path, records: int, batch: int) -> dict[str, Any]:
    device = f"bench-{secrets.token_hex(3)}"
    secret = secrets.token_urlsafe(12)
    broker.add_device(device, secret)
    topics = DeviceTopics(device)
    creds = broker.service_credentials
    sub = Subscriber(
        port=broker.port,
        username=creds.username,
        password=creds.password,
        topic=topics.telemetry,
        batched=True,
    )
    sub.expected = records
    connection = parse_connection_string(
        f"Broker=mqtt://{HOST}:{broker.port};DeviceId={device};Secret={secret};"
        f"WorkspaceKey={public_key_text(generate_private_key())}"
    )
    spool = TelemetrySpool(path=work / f"{device}.sqlite", max_bytes=1 << 34, time_to_live=3600.0)

    async def run() -> dict[str, Any]:
        link = MqttLink(
            connection=connection, settings=AgentSettings(state_dir=work), topics=topics, subscriptions=[]
        )
        await link.start()
        if not await link.wait_connected(20):
            raise RuntimeError("the agent link did not connect to mosquitto")
        sender = TelemetrySender(
            spool=spool, link=link, topics=topics, device_id=device, batch_max_records=batch
        )
        started = time.monotonic()  # the subscriber's clock too
        task = asyncio.create_task(sender.run())
        chunk = 1000
        for first in range(0, records, chunk):
            rows = [("health", None, record_data(i)) for i in range(first, min(records, first + chunk))]
            spool.append(rows)
            sender.wake()
            await asyncio.sleep(0)
        appended = time.monotonic()
        await asyncio.to_thread(sub.done.wait, 300)
        task.cancel()
        await link.stop()
        elapsed = sub.last_at - started if sub.done.is_set() else float("nan")
        return {
            "records": records,
            "received": sub.count,
            "distinct_seqs": sub.distinct,
            "batch_max_records": batch,
            "append_seconds": round(appended - started, 3),
            "seconds": round(elapsed, 3),
            "records_per_s": round(records / elapsed) if elapsed == elapsed else 0,
        }

    try:
        return asyncio.run(run())
    finally:
        spool.close()
        sub.close()


def measure_one_per_message(broker: BrokerManager, seconds: float, inflight: int) -> dict[str, Any]:
    """QoS 1, one record per message, for `seconds`; inflight=1 waits for each PUBACK before the next."""
    device = f"base-{secrets.token_hex(3)}"
    secret = secrets.token_urlsafe(12)
    broker.add_device(device, secret)
    topic = DeviceTopics(device).telemetry
    creds = broker.service_credentials
    sub = Subscriber(
        port=broker.port, username=creds.username, password=creds.password, topic=topic, batched=False
    )
    client = paho.Client(
        callback_api_version=CallbackAPIVersion.VERSION2, client_id=device, protocol=paho.MQTTv311
    )
    client.username_pw_set(device, secret)
    client.max_inflight_messages_set(inflight)
    client.connect(HOST, broker.port)
    client.loop_start()
    sent = 0
    pending: list[Any] = []
    started = time.monotonic()  # the subscriber's clock too
    deadline = started + seconds
    while time.monotonic() < deadline:
        info = client.publish(topic, json.dumps({"seq": sent + 1, "data": record_data(sent)}), qos=1)
        sent += 1
        if inflight == 1:
            info.wait_for_publish(10)
        else:
            pending.append(info)
            if len(pending) >= inflight:
                pending.pop(0).wait_for_publish(10)
    for info in pending:
        info.wait_for_publish(10)
    sub.expected = sent
    sub.done.wait(30)
    client.loop_stop()
    client.disconnect()
    sub.close()
    elapsed = (sub.last_at or time.monotonic()) - started
    return {
        "records": sent,
        "received": sub.count,
        "inflight": inflight,
        "seconds": round(elapsed, 3),
        "records_per_s": round(sub.count / elapsed),
    }


def telemetry_figures(
    work: Path, port: int, *, records: int, batch: int, baseline_seconds: float
) -> dict[str, Any]:
    broker = _start_broker(work / "broker", port)
    try:
        ours = measure_edgewise(broker, work, records, batch)
        base_sync = measure_one_per_message(broker, baseline_seconds, 1)
        base_window = measure_one_per_message(broker, baseline_seconds, 20)
    finally:
        asyncio.run(broker.stop())
    ratio = ours["records_per_s"] / base_sync["records_per_s"] if base_sync["records_per_s"] else None
    return {
        "edgewise": ours,
        "baseline_qos1_one_record_per_message": base_sync,
        "reference_qos1_one_record_per_message_20_inflight": base_window,
        "ratio_edgewise_over_baseline": round(ratio, 1) if ratio else None,
        "target_records_per_s": 50_000,
        "meets_target": ours["records_per_s"] >= 50_000,
    }
