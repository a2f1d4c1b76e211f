"""The service side of the telemetry benchmarks: a service-account subscriber that decodes and counts what the
devices send, in a process of its own.

A device and its workspace never share an interpreter: with the subscriber in the benchmark's process, its
decoding (a third of the CPU time for batched records) would take turns at the interpreter lock with the
device-side code being measured, and the figure would depend on how fast the benchmark reads.

The parent talks to the child over its standard input and output, one line each way:

    child:  subscribed                      (after the broker's SUBACK)
    parent: expect N                        (once N is known; the child answers when it has N records)
    child:  {"count": ..., "distinct": ..., "last_at": ..., "complete": true}
    parent: stop                            (or end of input; a child that has not answered yet answers with
                                             what it has, "complete": false)

`last_at` is the child's `time.monotonic()` at the last record, a clock every process of the machine shares.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import threading
import time
import zlib
from typing import Any

HOST = "127.0.0.1"


class Subscriber:
    """Counts the records (or messages) arriving on `topic`, decoded in a child process."""

    def __init__(self, *, port: int, username: str, password: str, topic: str, batched: bool) -> None:
        self.count = 0
        self.distinct = 0
        self.last_at = 0.0
        self.done = threading.Event()
        self._expected = 0
        settings = json.dumps(
            {"port": port, "username": username, "password": password, "topic": topic, "batched": batched}
        )
        self._child = subprocess.Popen(
            [sys.executable, __file__, settings],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        assert self._child.stdout is not None
        first = self._child.stdout.readline().strip()
        if first != "subscribed":
            self._child.kill()
            raise RuntimeError(f"the benchmark subscriber could not subscribe (it said {first!r})")
        self._reader = threading.Thread(target=self._read, name="subscriber-result", daemon=True)
        self._reader.start()

    @property
    def expected(self) -> int:
        return self._expected

    @expected.setter
    def expected(self, value: int) -> None:
        self._expected = value
        self._tell(f"expect {value}")

    def close(self) -> None:
        self._tell("stop")
        try:
            self._child.wait(10)
        except subprocess.TimeoutExpired:
            self._child.kill()
            self._child.wait()
        self._reader.join(10)

    def _tell(self, line: str) -> None:
        if self._child.stdin is not None and self._child.poll() is None:
            self._child.stdin.write(line + "\n")
            self._child.stdin.flush()

    def _read(self) -> None:
        assert self._child.stdout is not None
        for line in self._child.stdout:
            result = json.loads(line)
            self.count, self.distinct, self.last_at = result["count"], result["distinct"], result["last_at"]
            if result["complete"]:
                self.done.set()


def _serve(settings: dict[str, Any]) -> None:
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    lock = threading.Lock()
    state = {"count": 0, "expected": 0, "answered": False, "last_at": 0.0}
    seqs: set[int] = set()
    subscribed = threading.Event()

    def answer(*, final: bool = False) -> None:
        complete = bool(state["expected"]) and state["count"] >= state["expected"]
        if (complete or final) and not state["answered"]:
            state["answered"] = True
            result = {"count": state["count"], "distinct": len(seqs), "last_at": state["last_at"]}
            print(json.dumps({**result, "complete": complete}), flush=True)

    def on_message(client: Any, userdata: Any, message: Any) -> None:
        records: list[dict[str, Any]] = []
        if settings["batched"]:
            payload = message.payload
            records = json.loads(payload if payload[:1] == b"{" else zlib.decompress(payload))["records"]
        with lock:
            state["count"] += len(records) if settings["batched"] else 1
            state["last_at"] = time.monotonic()
            seqs.update(r["seq"] for r in records)
            answer()

    client = paho.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=f"bench-sub-{secrets.token_hex(4)}",
        protocol=paho.MQTTv311,
    )
    client.username_pw_set(settings["username"], settings["password"])
    client.on_message = on_message
    client.on_subscribe = lambda *args: subscribed.set()
    client.connect(HOST, settings["port"])
    client.loop_start()
    client.subscribe(settings["topic"], qos=1)
    if not subscribed.wait(10):
        print("no SUBACK within 10 s", flush=True)
        return
    print("subscribed", flush=True)
    try:
        for line in sys.stdin:
            word, _, value = line.strip().partition(" ")
            if word == "stop":
                break
            if word == "expect":
                with lock:
                    state["expected"] = int(value)
                    answer()
    finally:
        client.loop_stop()
        client.disconnect()
        with lock:
            answer(final=True)


if __name__ == "__main__":
    _serve(json.loads(sys.argv[1]))
