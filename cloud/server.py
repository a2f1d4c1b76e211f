"""Composition root of `edgewise up`: store, blobs, runner, MQTT broker, device registry and its signing key, HTTP
API, and their start and stop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import uvicorn
from edgewise.cloud.api import create_app
from edgewise.cloud.auth import ensure_token
from edgewise.cloud.broker import BrokerManager, parse_broker
from edgewise.cloud.deployments.controller import DeploymentController
from edgewise.cloud.devices import DeviceRegistry
from edgewise.cloud.errors import WorkspaceError
from edgewise.cloud.ingest.service import TelemetryIngest
from edgewise.cloud.mqtt import Publisher
from edgewise.cloud.runs.environments import EnvironmentCache
from edgewise.cloud.runs.runner import LocalRunner
from edgewise.cloud.signing_key import load_or_create_manifest_key
from edgewise.cloud.store.blobs import BlobStore
from edgewise.cloud.store.sql import SqlStore
from edgewise.cloud.webservices import HostAgent, WebServices
from edgewise.cloud.workspace import INTERRUPTED, Workspace
from fastapi import FastAPI

log = logging.getLogger("edgewise.server")
SHUTDOWN_REASON = INTERRUPTED


def sqlite_url(data_dir: Path) -> str:
    return f"sqlite:///{data_dir / 'workspace.db'}"


def build_workspace(*, data_dir: Path, db_url: str | None = None) -> Workspace:
    """Open the store and blobs under `data_dir` and settle runs a previous instance left in flight."""
    for folder in ("blobs", "runs", "envs", "tmp"):
        (data_dir / folder).mkdir(parents=True, exist_ok=True)
    store = SqlStore.open(db_url or sqlite_url(data_dir))
    workspace = Workspace(store=store, blobs=BlobStore(root=data_dir / "blobs"), data_dir=data_dir)
    workspace.recover()
    return workspace


def serve(
    *,
    data_dir: Path,
    host: str = "127.0.0.1",
    port: int = 8080,
    db_url: str | None = None,
    max_concurrent_runs: int | None = None,
    broker: str = "auto",
    mqtt_port: int = 1883,
) -> None:
    """Run the workspace service until SIGINT or SIGTERM."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    data_dir = data_dir.expanduser().resolve()
    try:
        broker_settings = parse_broker(broker, host=host, port=mqtt_port)
    except WorkspaceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from exc
    token = ensure_token(data_dir)
    try:
        manifest_key = load_or_create_manifest_key(data_dir)
    except WorkspaceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(1) from exc
    workspace = build_workspace(data_dir=data_dir, db_url=db_url)
    listener = _listen(host, port)
    bound_host, bound_port = listener.getsockname()[:2]
    url = f"http://{_url_host(bound_host)}:{bound_port}"
    runner = LocalRunner(
        data_dir=data_dir,
        blobs=workspace.blobs,
        events=workspace,
        environments=EnvironmentCache(root=data_dir / "envs"),
        max_concurrent=max_concurrent_runs or os.cpu_count() or 1,
        service_url=url,
        token=token,
    )
    workspace.attach_runner(runner)
    mqtt = BrokerManager(settings=broker_settings, data_dir=data_dir)
    workspace.attach_devices(
        DeviceRegistry(store=workspace.store, broker=mqtt, manifest_key=manifest_key, registry_url=url)
    )
    assert workspace.devices is not None
    deployments = DeploymentController(
        store=workspace.store, manifest_key=manifest_key, registry_host=urlsplit(workspace.devices.registry_url).netloc
    )
    workspace.attach_deployments(deployments)
    workspace.devices.listeners.append(deployments)
    host_agent = HostAgent(devices=workspace.devices, folder=data_dir / "webservices")
    webservices = WebServices(store=workspace.store, deployments=deployments, host_agent=host_agent)
    workspace.webservices = webservices
    startup_errors: list[WorkspaceError] = []

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            await mqtt.start()
        except WorkspaceError as exc:
            startup_errors.append(exc)
            workspace.store.close()
            raise
        print(f"edgewise MQTT broker: {mqtt.describe()}", flush=True)
        ingest = TelemetryIngest(store=workspace.store, broker=mqtt)
        try:
            await ingest.start()
            credentials = mqtt.service_credentials
            publisher = Publisher(
                host=mqtt.host, port=mqtt.port, username=credentials.username, password=credentials.password
            )
            await asyncio.to_thread(publisher.start)
            deployments.start(publisher)
            runner.start()
            workspace.images.start()
            await asyncio.to_thread(webservices.start)
            print(f"edgewise workspace live on {url} (data: {data_dir})", flush=True)
            yield
        finally:
            try:
                await asyncio.to_thread(host_agent.stop)
                await ingest.stop()
                await asyncio.to_thread(deployments.stop)
                runner.stop(reason=SHUTDOWN_REASON)
                workspace.images.stop()
                workspace.store.close()
            finally:
                await mqtt.stop()

    app = create_app(workspace=workspace, token=token, lifespan=lifespan)
    config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=5)
    try:
        uvicorn.Server(config).run(sockets=[listener])
    except SystemExit:
        if not startup_errors:
            raise
    if startup_errors:
        print(f"error: {startup_errors[0]}", file=sys.stderr)
        raise SystemExit(1)


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        print(f"error: cannot listen on {host}:{port}: {exc.strerror}; pick another --port", file=sys.stderr)
        raise SystemExit(1) from exc
    sock.listen(512)
    sock.set_inheritable(False)
    return sock


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
