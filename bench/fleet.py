"""Fleet benchmark: deployment convergence on 10 and 100 simulated devices, and telemetry ingest into the
store.

A real `edgewise up` (managed Mosquitto) and fleets of real agents in one process (`edgewise.simulators`),
each device with its own state directory, pulling from the workspace's own `/v2/`.

1. Convergence: a warm-up deployment puts the image in every device's cache; after it is deleted, a timed
   deployment of the same image is created with `deploy create` semantics (`Client.create_deployment` with a
   tag target) and each device is timed until its report says the module runs with that image (taken when the
   report reaches the benchmark's broker subscriber; targets: median device <= 1 s, all 100 <= 10 s). It is
   removed, and `--repeats` rounds (3 by default, each a module new to the devices) give the figures as their
   medians, every round listed: this machine's speed wanders by a third from minute to minute. Every
   device starts a real scoring server. The agents run with a device's default settings (the simulators' are
   shorter, for tests that watch faults) except that their MQTT links run on the fleet's event loops rather
   than a thread each, as on a gateway (`link_thread = false`), and fork the servers from a module launcher
   (one per process, shared by the fleet's device identities as on a gateway; the warm-up deployment started
   it, as a device that runs modules has one) in the sandbox the report names; `--no-launcher` starts each as
   its own program instead. The modules' sockets go in the agents' runtime folder, a RAM file system as /run
   is on a systemd device; on a machine whose /run is on its disk, a folder in /dev/shm (`--runtime-dir`
   names another; the report gives its path and file system). The agents' threads share one CPU, the
   in-process fleet's default (`--agent-cpus` sets how many; 0 for all): they take turns at the interpreter
   lock, and spread over both CPUs each hand-over is a cross-CPU wake-up. The launcher and the modules run
   on every CPU.
   The report splits the CPU time of the timed window: the agents' process, the modules, the workspace
   service with its broker, and the whole machine (other load included, and the time the hypervisor gave to
   other guests); each round also gives its first device's time and the machine's CPU time per device: the
   window is CPU-bound, so the median device comes at about the first one's time plus half the fleet times
   that over the CPUs.
2. Ingest: 10 devices' agents (their real spool, sender and link) each send records through the workspace's
   broker; timed until the store holds them all. Baseline in the same run: the same records through the same
   broker to a plain subscriber that stores nothing.

It only reports figures and never fails on them.

    .venv/bin/python bench/fleet.py            # 10 and 100 devices, 10 x 20,000 telemetry records
    .venv/bin/python bench/fleet.py --quick    # 5 and 20 devices, 10 x 2,000 records
    .venv/bin/python bench/fleet.py --fleets 10 --sandbox none --no-launcher --repeats 1
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from edgewise.cloud.client import Client
from edgewise.runtime.agent.config import AgentSettings, parse_connection_string
from edgewise.runtime.agent.link.mqtt import MqttLink
from edgewise.runtime.agent.link.topics import DeviceTopics
from edgewise.runtime.agent.state import default_runtime_dir
from edgewise.runtime.agent.telemetry.sender import TelemetrySender
from edgewise.runtime.agent.telemetry.spool import TelemetrySpool
from edgewise.simulators import DeviceCredentials, DeviceSettings, FleetObserver, InProcessFleet
from edgewise.simulators.inprocess import agent_cpus

from _agent_telemetry import record_data
from _harness import CLOCK_TICKS, cpu_seconds, idle_cores
from _tracking_common import model_file
from _tracking_edgewise import start_service

IMAGE = "fleet-model"


def _running(state: dict[str, Any] | None, module: str, digest: str) -> bool:
    entry = ((state or {}).get("modules") or {}).get(module) or {}
    return entry.get("runtimeStatus") == "running" and entry.get("imageDigest") == digest


def _not_running(state: dict[str, Any] | None, module: str) -> bool:
    return module not in ((state or {}).get("modules") or {})


def converge(
    client: Client,
    work: Path,
    *,
    count: int,
    broker_port: int,
    observer: FleetObserver,
    registry: str,
    digest: str,
    timeout: float,
    settings: DeviceSettings,
    service_pid: int,
    repeats: int,
) -> dict[str, Any]:
    """Start `count` in-process agents, warm their image caches, then time `repeats` deployments to all of
    them (each of a module new to the devices, removed again before the next)."""
    group = f"b{count}"
    creds = []
    for index in range(count):
        added = client.add_device(f"{group}-{index:03d}", tags={"fleet": group})
        connection = parse_connection_string(added.connection_string)
        creds.append(DeviceCredentials(device_id=connection.device_id, secret=connection.secret))
    ids = [c.device_id for c in creds]
    fleet = InProcessFleet(
        broker_port=broker_port,
        devices=creds,
        workspace_key=client.manifest_key()["public_key"],
        work_dir=work / group,
        registry=registry,
        settings=settings,
    )
    fleet.start()
    try:
        observer.wait_status(ids, "online", timeout=120)
        target = f"tags.fleet = '{group}'"
        client.create_deployment(f"warm-{group}", image=IMAGE, target=target, module="warm")
        observer.wait(
            lambda: all(_running(observer.snapshot(d)[0], "warm", digest) for d in ids),
            timeout=timeout,
            what="the warm-up deployment",
        )
        client.delete_deployment(f"warm-{group}")
        observer.wait(
            lambda: all(_not_running(observer.snapshot(d)[0], "warm") for d in ids),
            timeout=timeout,
            what="the warm-up module removed",
        )
        sandbox = (observer.snapshot(ids[0])[0] or {}).get("agent", {}).get("sandbox")
        runs = [
            _timed_round(client, fleet, observer, ids, group=group, target=target, digest=digest, round_=i,
                         timeout=timeout, service_pid=service_pid)
            for i in range(repeats)
        ]  # fmt: skip
    finally:
        fleet.close()
    medians = [r["median_device_s"] for r in runs if r["median_device_s"] is not None]
    alls = [r["all_devices_s"] for r in runs if r["all_devices_s"] is not None]
    return {
        "devices": count,
        "rounds": repeats,
        "converged": min(r["converged"] for r in runs),
        "median_device_s": round(statistics.median(medians), 3) if medians else None,
        "all_devices_s": round(statistics.median(alls), 3) if len(alls) == repeats else None,
        "sandbox": sandbox,
        "module_start": "forked from the module launcher" if settings.launcher else "own program",
        "agents_threads_cpus": sorted(agent_cpus(settings.agent_cpus) or os.sched_getaffinity(0)),
        "agent_intervals_s": {"reconcile": settings.reconcile_interval, "health": settings.health_interval},
        "runs": runs,
        "targets": {"median_device_s": 1.0, "all_100_s": 10.0},
    }


def _timed_round(
    client: Client,
    fleet: InProcessFleet,
    observer: FleetObserver,
    ids: list[str],
    *,
    group: str,
    target: str,
    digest: str,
    round_: int,
    timeout: float,
    service_pid: int,
) -> dict[str, Any]:
    """One timed deployment of a new module to the whole fleet, then its removal."""
    name, module = f"timed-{group}-{round_}", f"timed-{round_}"
    observer.watch(name, lambda doc: _running(doc, module, digest))
    idle = idle_cores()
    cpu = _CpuWindow(fleet, service_pid, module)
    start = time.monotonic()
    client.create_deployment(name, image=IMAGE, target=target, module=module)
    with contextlib.suppress(TimeoutError):  # reported below as fewer converged
        observer.wait(lambda: len(observer.seen(name, ids)) == len(ids), timeout=timeout, what=name)
    seen = observer.seen(name, ids)
    cpu_report = cpu.close(observer, ids)
    report = client.get_deployment(name)
    client.delete_deployment(name)
    observer.wait(
        lambda: all(_not_running(observer.snapshot(d)[0], module) for d in ids),
        timeout=timeout,
        what=f"the module {module} removed",
    )
    times = sorted(t - start for t in seen.values())
    return {
        "converged": len(times),
        "first_device_s": round(times[0], 3) if times else None,
        "median_device_s": round(statistics.median(times), 3) if times else None,
        "all_devices_s": round(times[-1], 3) if len(times) == len(ids) else None,
        "idle_cores_before": idle,
        "cpu_s": cpu_report,
        # What a device costs the whole machine (see the module's docstring for what it tells of the median)
        "machine_cpu_ms_per_device": round(1000 * cpu_report["machine_busy"] / len(ids), 1),
        "deployment_counts": report.counts,
    }


class _CpuWindow:
    """CPU seconds used from now until `close`: by this process (the agents, the observer), by the modules
    (their own processes and the launcher), by the workspace service with its broker, by the whole machine."""

    def __init__(self, fleet: InProcessFleet, service_pid: int, module: str) -> None:
        self._fleet = fleet
        self._module = module
        self._service_pid = service_pid
        self._launchers = self._launcher_cpu()
        self._process = time.process_time()
        self._service = cpu_seconds(service_pid)
        self._machine, self._steal = _machine_busy()
        self._wall = time.monotonic()

    def _launcher_cpu(self) -> float:
        pool = self._fleet.launchers
        return sum(_pid_cpu(launcher.pid) for launcher in pool.launchers()) if pool is not None else 0.0

    def close(self, observer: FleetObserver, ids: list[str]) -> dict[str, float]:
        wall = time.monotonic() - self._wall
        machine, steal = _machine_busy()
        modules = 0.0
        for device in ids:
            entry = ((observer.snapshot(device)[0] or {}).get("modules") or {}).get(self._module) or {}
            if isinstance(entry.get("pid"), int):
                modules += _pid_cpu(entry["pid"])
        return {
            "window_s": round(wall, 2),
            "agents_process": round(time.process_time() - self._process, 2),
            "modules": round(modules + self._launcher_cpu() - self._launchers, 2),
            "of_which_launcher": round(self._launcher_cpu() - self._launchers, 2),
            "workspace_service_and_broker": round(cpu_seconds(self._service_pid) - self._service, 2),
            "machine_busy": round(machine - self._machine, 2),
            "of_which_stolen": round(steal - self._steal, 2),
            "machine_capacity": round(wall * (os.cpu_count() or 1), 2),
        }


def _pid_cpu(pid: int | None) -> float:
    """CPU time of one process so far: the scheduler's run time (nanoseconds) of each of its threads. The
    tick-sampled user+system time in /proc/PID/stat showed about a third less for a module's start here than
    this and `perf` both do. Threads that already exited are not counted."""
    if pid is None:
        return 0.0
    total = 0
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError):
                total += int(Path(f"/proc/{pid}/task/{task}/schedstat").read_text().split()[0])
    except OSError:
        return 0.0
    return total / 1e9


def _machine_busy() -> tuple[float, float]:
    """CPU seconds the machine was not idle so far, and of them those the hypervisor gave to other guests."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    steal = fields[7] if len(fields) > 7 else 0
    return (sum(fields[:8]) - fields[3] - fields[4]) / CLOCK_TICKS, steal / CLOCK_TICKS


async def _send(connection_text: str, work: Path, records: int) -> None:
    connection = parse_connection_string(connection_text)
    topics = DeviceTopics(connection.device_id)
    spool = TelemetrySpool(
        path=work / f"{connection.device_id}.sqlite", max_bytes=1 << 34, time_to_live=3600.0
    )
    link = MqttLink(
        connection=connection, settings=AgentSettings(state_dir=work), topics=topics, subscriptions=[]
    )
    await link.start()
    try:
        if not await link.wait_connected(30):
            raise RuntimeError(f"{connection.device_id} could not connect")
        sender = TelemetrySender(spool=spool, link=link, topics=topics, device_id=connection.device_id)
        task = asyncio.create_task(sender.run())
        for first in range(0, records, 1000):
            spool.append([("health", None, record_data(i)) for i in range(first, min(records, first + 1000))])
            sender.wake()
            await asyncio.sleep(0)
        while spool.pending_count():
            await asyncio.sleep(0.02)
        task.cancel()
    finally:
        await link.stop()
        spool.close()


def ingest(client: Client, work: Path, *, devices: int, records: int) -> dict[str, Any]:
    """`devices` agents' senders at once; timed until the store counts every record."""
    connections = [
        client.add_device(f"ingest-{i:02d}", tags={"fleet": "ingest"}).connection_string
        for i in range(devices)
    ]
    ids = [f"ingest-{i:02d}" for i in range(devices)]
    work.mkdir(parents=True, exist_ok=True)

    def stored() -> int:
        total = 0
        for device in ids:
            counters = (client.get_device(device).reported or {}).get("$ingest") or {}
            total += int(counters.get("records", 0))
        return total

    async def run() -> None:
        await asyncio.gather(*(_send(text, work, records) for text in connections))

    start = time.perf_counter()
    asyncio.run(run())
    sent = time.perf_counter() - start
    while stored() < devices * records and time.perf_counter() - start < 300:
        time.sleep(0.05)
    elapsed = time.perf_counter() - start
    total = stored()
    return {
        "devices": devices,
        "records": devices * records,
        "stored": total,
        "sent_s": round(sent, 3),
        "stored_s": round(elapsed, 3),
        "records_per_s": round(total / elapsed),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="smaller fleets and fewer records")
    parser.add_argument("--fleets", default=None, help="comma-separated fleet sizes (default 10,100)")
    parser.add_argument("--records", type=int, default=None, help="telemetry records per ingest device")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds one deployment may take")
    parser.add_argument(
        "--repeats", type=int, default=3, help="timed deployments per fleet (the figures are their medians)"
    )
    parser.add_argument("--sandbox", default="auto", choices=["auto", "bubblewrap", "none"])
    parser.add_argument(
        "--no-launcher", action="store_true", help="start every module as its own program, without a launcher"
    )
    parser.add_argument(
        "--runtime-dir",
        type=Path,
        help="the agents' runtime folder for the modules' sockets"
        " (default: theirs if it is a RAM file system, else a folder in /dev/shm)",
    )
    parser.add_argument(
        "--agent-cpus",
        type=int,
        default=DeviceSettings().agent_cpus,
        help="CPUs the in-process agents' threads share (default %(default)s; 0: all)",
    )
    opts = parser.parse_args()
    runtime, made = _runtime_dir(opts.runtime_dir)
    try:
        _run(opts, runtime)
    finally:
        if made:
            shutil.rmtree(runtime, ignore_errors=True)


def _runtime_dir(given: Path | None) -> tuple[Path, bool]:
    """The devices' runtime folder, and whether it was made here: the agent's default where that is a RAM file
    system, as /run is on a systemd device; on a machine whose /run is on its disk, a folder in /dev/shm, as a
    device would have. (Where the sockets are matters on this disk: after the files a round removes, the next
    round's new files cost several times more to create for minutes.)"""
    if given is not None:
        return given, False
    default = default_runtime_dir()
    if _filesystem(default) == "tmpfs":
        return default, False
    return Path(tempfile.mkdtemp(prefix="ew-fleet-run-", dir="/dev/shm")), True


def _filesystem(path: Path) -> str:
    """The type of the file system `path` is on (from /proc/self/mounts)."""
    best, kind = "", "unknown"
    target = str(path.resolve())
    for line in Path("/proc/self/mounts").read_text().splitlines():
        fields = line.split()
        point = fields[1].replace("\\040", " ")
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, kind = point, fields[2]
    return kind


def _run(opts: argparse.Namespace, runtime: Path) -> None:
    agent = AgentSettings()  # a device's own defaults, not the simulators' short test cycles
    settings = DeviceSettings(
        sandbox=opts.sandbox,
        launcher=not opts.no_launcher,
        keepalive=agent.keepalive,
        reconnect_min=agent.reconnect_min,
        reconnect_max=agent.reconnect_max,
        reconcile_interval=agent.reconcile_interval,
        health_interval=agent.health_interval,
        restart_cooloff=agent.restart_cooloff,
        stop_grace=agent.stop_grace,
        runtime_dir=runtime,
        agent_cpus=opts.agent_cpus,
    )
    fleets = [int(n) for n in (opts.fleets or ("5,20" if opts.quick else "10,100")).split(",")]
    records = opts.records or (2_000 if opts.quick else 20_000)
    work = Path(tempfile.mkdtemp(prefix="ew-fleet-", dir="/tmp"))
    report: dict[str, Any] = {
        "benchmark": "fleet",
        "idle_cores_before": idle_cores(),
        "runtime_dir": {"path": str(runtime), "filesystem": _filesystem(runtime)},
    }
    service, url, token = start_service(work, 120.0)
    try:
        client = Client(url=url, token=token)
        log = service.log.read_text()
        broker_port = int(log.split("mqtt://127.0.0.1:", 1)[1].split()[0].rstrip(")"))
        client.register_model(name=IMAGE, file=model_file(work))
        activity = client.build_image(name=IMAGE, model=IMAGE)
        client.wait_activity(activity.id, timeout=300)
        digest = client.get_image(IMAGE).manifest_digest
        data = work / "data"
        password = (data / "broker" / "service-password").read_text().strip()
        observer = FleetObserver(port=broker_port, username="edgewise-service", password=password).start()
        try:
            report["convergence"] = [
                converge(
                    client,
                    work,
                    count=n,
                    broker_port=broker_port,
                    observer=observer,
                    registry=url,
                    digest=digest,
                    timeout=opts.timeout,
                    settings=settings,
                    service_pid=service.pid,
                    repeats=opts.repeats,
                )
                for n in fleets
            ]
        finally:
            observer.close()
        ours = ingest(client, work / "ingest", devices=10, records=records)
        from _telemetry_subscriber import Subscriber  # the same records to a subscriber that stores nothing

        baseline = _transport_only(
            client,
            work / "transport",
            broker_port,
            password,
            devices=10,
            records=records,
            subscriber=Subscriber,
        )
        report["ingest"] = {
            "edgewise_into_store": ours,
            "baseline_broker_to_plain_subscriber": baseline,
            "ratio_store_over_transport": round(ours["records_per_s"] / baseline["records_per_s"], 2),
        }
    finally:
        service.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(report, indent=2))
    for fleet in report["convergence"]:
        rounds = "; ".join(f"{r['median_device_s']} / {r['all_devices_s']}" for r in fleet["runs"])
        print(
            f"{fleet['devices']:>4} devices: median {fleet['median_device_s']} s, "
            f"all {fleet['all_devices_s']} s (medians of {fleet['rounds']} rounds; "
            f"each median / all: {rounds}; sandbox {fleet['sandbox']}, {fleet['module_start']})",
            file=sys.stderr,
        )
        for r in fleet["runs"]:
            print(
                f"      first device {r['first_device_s']} s, machine CPU per device "
                f"{r['machine_cpu_ms_per_device']} ms; CPU s {r['cpu_s']}",
                file=sys.stderr,
            )
    ing = report["ingest"]
    print(
        f"ingest {ing['edgewise_into_store']['records_per_s']} records/s into the store; transport only "
        f"{ing['baseline_broker_to_plain_subscriber']['records_per_s']} "
        f"(ratio {ing['ratio_store_over_transport']})",
        file=sys.stderr,
    )


def _transport_only(
    client: Client, work: Path, port: int, password: str, *, devices: int, records: int, subscriber: Any
) -> dict[str, Any]:
    connections = [
        client.add_device(f"wire-{i:02d}", tags={"fleet": "wire"}).connection_string for i in range(devices)
    ]
    work.mkdir(parents=True, exist_ok=True)
    sub = subscriber(
        port=port,
        username="edgewise-service",
        password=password,
        topic="edgewise/v1/devices/+/telemetry",
        batched=True,
    )
    sub.expected = devices * records

    async def run() -> None:
        await asyncio.gather(*(_send(text, work, records) for text in connections))

    start = time.monotonic()  # the subscriber's clock too
    asyncio.run(run())
    sub.done.wait(120)
    sub.close()
    elapsed = (sub.last_at or time.monotonic()) - start
    return {
        "devices": devices,
        "records": devices * records,
        "received": sub.count,
        "seconds": round(elapsed, 3),
        "records_per_s": round(sub.count / elapsed),
    }


if __name__ == "__main__":
    main()
