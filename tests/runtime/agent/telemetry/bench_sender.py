"""Telemetry throughput end to end: spool → sender → Mosquitto → a service subscriber that decompresses.

    .venv/bin/python -m tests.runtime.agent.telemetry.bench_sender [records] [batch_max_records]

Prints records/s from the first append until the subscriber has decoded every record (checked in order).
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import threading
import time
import zlib
from pathlib import Path

import orjson
from edgewise.cloud.broker import BrokerManager, find_mosquitto, parse_broker
from edgewise.runtime.agent.link import DeviceTopics
from edgewise.runtime.agent.telemetry import TelemetrySender, TelemetrySpool

from tests.cloud.broker.mqtt import LoopThread
from tests.runtime.agent.conftest import Broker
from tests.runtime.agent.link.support import make_link
from tests.support import HOST, free_port


def data(n: int) -> dict[str, object]:
    """A record that varies like real statistics do, so compression is not flattered."""
    return {"model": "iris", "version": "3", "request": n, "latencyMs": (n * 7919 % 10007) / 997, "ok": n % 97 != 0}


def main(total: int, batch: int) -> None:
    if find_mosquitto() is None:
        sys.exit("mosquitto is not installed")
    tmp = Path(tempfile.mkdtemp(prefix="ew-bench-"))
    loop = LoopThread()
    manager = BrokerManager(settings=parse_broker("mosquitto", host=HOST, port=free_port()), data_dir=tmp / "ws")
    loop.run(manager.start())
    broker = Broker(manager=manager, loop=loop)
    secret = broker.add_device("bench")
    topics = DeviceTopics("bench")
    service = broker.service_client()
    service.subscribe(topics.telemetry)
    spool = TelemetrySpool(path=tmp / "telemetry.sqlite", max_bytes=1 << 34, time_to_live=3600.0)
    done = threading.Event()
    wire_bytes = 0

    def consume() -> None:
        nonlocal wire_bytes
        last = 0
        while last < total:
            _, payload, _ = service.messages.get(timeout=120)
            wire_bytes += len(payload)
            for record in orjson.loads(zlib.decompress(payload))["records"]:
                assert record["seq"] == last + 1, (record["seq"], last)
                last = record["seq"]
        done.set()

    threading.Thread(target=consume, daemon=True).start()

    async def run() -> None:
        link = make_link(broker, "bench", secret, subscriptions=[])
        await link.start()
        assert await link.wait_connected(20)
        sender = TelemetrySender(spool=spool, link=link, topics=topics, device_id="bench", batch_max_records=batch)
        task = asyncio.create_task(sender.run())
        start = time.perf_counter()
        for first in range(0, total, 1000):
            spool.append([("scoring", "iris", data(n)) for n in range(first, first + 1000)])
        appended = time.perf_counter() - start
        sender.wake()
        await asyncio.to_thread(done.wait, 300)
        elapsed = time.perf_counter() - start
        task.cancel()
        await link.stop()
        print(
            f"appended {total:,} records in {appended:.2f}s ({total / appended:,.0f}/s); all decoded by the "
            f"subscriber after {elapsed:.2f}s: {total / elapsed:,.0f} records/s end to end "
            f"({wire_bytes / total:.1f} bytes/record on the wire, batches of {batch})"
        )

    try:
        asyncio.run(run())
    finally:
        service.close()
        spool.close()
        loop.run(manager.stop())
        loop.close()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 200_000, int(sys.argv[2]) if len(sys.argv) > 2 else 5000)
