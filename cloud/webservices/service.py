"""Web services: images served on the workspace host, as deployments to its own agent.

A web service NAME is the deployment `webservice-NAME` to the device `edgewise-host`, with module NAME and its
ports fixed at creation (given, or free ones picked on the service's host). Everything else (signed manifest,
image pull, zero-downtime start, status) is the deployment machinery; this module only names things, picks
ports and reads the host agent's report back as scoring URLs.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import socket
from collections.abc import Mapping
from typing import Any

from edgewise.cloud.deployments.controller import DeploymentController
from edgewise.cloud.deployments.records import DeploymentReport
from edgewise.cloud.errors import ConflictError, InvalidInputError, NotFoundError
from edgewise.cloud.store.sql import SqlStore
from edgewise.cloud.webservices.host import HOST_DEVICE_ID, HostAgent
from edgewise.cloud.webservices.records import WebService
from edgewise.runtime.agent.manifest import MODULE_NAME

log = logging.getLogger("edgewise.webservices")

PREFIX = "webservice-"
MODULE_HOST = "127.0.0.1"  # where the agent binds modules unless told otherwise


def deployment_name(name: str) -> str:
    return PREFIX + name


def check_webservice_name(name: object) -> str:
    """A web service name is also its module's name on the host: 1-63 of a-z 0-9 . _ -, starting alnum."""
    if not isinstance(name, str) or not MODULE_NAME.match(name):
        raise InvalidInputError(
            f"invalid web service name {name!r}: use 1-63 lower-case letters, digits, '.', '_' or '-', "
            "starting with a letter or a digit"
        )
    return name


class WebServices:
    """Create, list, show and delete web services; the host agent starts with the first one."""

    def __init__(self, *, store: SqlStore, deployments: DeploymentController, host_agent: HostAgent) -> None:
        self.store = store
        self.deployments = deployments
        self.host_agent = host_agent

    # -- lifecycle -------------------------------------------------------------------------------------------

    def start(self) -> None:
        """At service start: bring the host agent back when web services exist (blocking; never fails the start)."""
        if any(d.name.startswith(PREFIX) and d.device_id == HOST_DEVICE_ID for d in self.deployments.list_all()):
            try:
                self.host_agent.ensure()
            except Exception:  # web services stay down, the rest of the workspace serves; the next create retries
                log.exception("could not start the agent that serves this host's web services")

    def stop(self) -> None:
        self.host_agent.stop()

    # -- operations ------------------------------------------------------------------------------------------

    def create(
        self,
        name: str,
        *,
        image: str,
        version: int | None = None,
        http_port: int | None = None,
        grpc_port: int | None = None,
        env: Mapping[str, str] | None = None,
    ) -> WebService:
        """Deploy `image` on this host as web service `name`; answers at once (the module starts in the background).

        Blocking (it may register the host device and start its agent): call it off the event loop.
        """
        check_webservice_name(name)
        with contextlib.suppress(NotFoundError):
            self.store.get_deployment(deployment_name(name))
            raise ConflictError(f"web service {name!r} exists; delete it first or pick another name")
        self.store.get_image(image, version)  # an unknown image is reported before the host agent starts
        http_port, grpc_port = self._ports(http_port, grpc_port)
        self.host_agent.ensure()
        self.deployments.create(
            deployment_name(name),
            image=image,
            version=version,
            device_id=HOST_DEVICE_ID,
            module=name,
            env=env,
            http_port=http_port,
            grpc_port=grpc_port,
        )
        log.info("created web service %s on ports %d (REST) and %d (gRPC)", name, http_port, grpc_port)
        return self.get(name)

    def get(self, name: str) -> WebService:
        check_webservice_name(name)
        try:
            report = self.deployments.report(deployment_name(name))
        except NotFoundError:
            raise NotFoundError(f"web service {name!r} not found; see `edgewise webservice list`") from None
        return self._service(name, report, self._host_modules())

    def list(self) -> list[WebService]:
        modules = self._host_modules()
        services = []
        for deployment in self.deployments.list_all():
            if not deployment.name.startswith(PREFIX) or deployment.device_id != HOST_DEVICE_ID:
                continue
            name = deployment.name.removeprefix(PREFIX)
            with contextlib.suppress(NotFoundError):  # deleted meanwhile
                services.append(self._service(name, self.deployments.report(deployment.name), modules))
        return services

    def delete(self, name: str) -> None:
        """Delete the deployment: the host agent removes the module, the image and models are released."""
        check_webservice_name(name)
        try:
            self.deployments.delete(deployment_name(name))
        except NotFoundError:
            raise NotFoundError(f"web service {name!r} not found; see `edgewise webservice list`") from None
        log.info("deleted web service %s", name)

    # -- helpers ---------------------------------------------------------------------------------------------

    def _host_modules(self) -> dict[str, Any]:
        try:
            reported = self.store.get_device(HOST_DEVICE_ID).reported
        except NotFoundError:
            return {}
        modules = reported.get("modules") if isinstance(reported, dict) else None
        return modules if isinstance(modules, dict) else {}

    def _service(self, name: str, report: DeploymentReport, modules: Mapping[str, Any]) -> WebService:
        deployment = report.deployment
        row = next((r for r in report.devices if r.device_id == HOST_DEVICE_ID), None)
        module = modules.get(deployment.module)
        module = module if isinstance(module, dict) else {}
        http_port = int(deployment.settings.get("httpPort", 0))
        grpc_port = int(deployment.settings.get("grpcPort", 0))
        found = module.get("endpoints")
        endpoints: dict[str, Any] = found if isinstance(found, dict) else {}
        host = _url_host(self._module_host())
        rest_url = str(endpoints.get("http") or f"http://{host}:{http_port}")
        grpc_url = str(endpoints.get("grpc") or f"{host}:{grpc_port}")
        image = self.store.get_image(deployment.image_name, deployment.image_version)
        models = list(image.models)
        infer_url = None
        if len(models) == 1:
            infer_url = f"{rest_url}/v2/models/{models[0].rpartition(':')[0]}/infer"
        return WebService(
            name=name,
            deployment=deployment.name,
            image_name=deployment.image_name,
            image_version=deployment.image_version,
            models=models,
            state=row.state if row is not None else "pending",
            reason=(row.reason if row is not None else None) or deployment.reason,
            runtime_status=_text(module.get("runtimeStatus")),
            status_description=_text(module.get("statusDescription")),
            host=host,
            http_port=http_port,
            grpc_port=grpc_port,
            rest_url=rest_url,
            infer_url=infer_url,
            grpc_url=grpc_url,
            env=dict(deployment.env),
            created_at=deployment.created_at,
        )

    def _module_host(self) -> str:
        """Where the module listens. The agent binds modules to 127.0.0.1 (the deployment has no host setting)."""
        return MODULE_HOST

    def _ports(self, http_port: int | None, grpc_port: int | None) -> tuple[int, int]:
        """The given ports, the missing ones picked free on this host and unused by other web services."""
        taken: set[int] = set()
        for deployment in self.deployments.list_all():
            if deployment.device_id == HOST_DEVICE_ID:
                taken.update(p for p in deployment.settings.values() if isinstance(p, int))
        for port, option in ((http_port, "--http-port"), (grpc_port, "--grpc-port")):
            if port is not None and port in taken:
                raise ConflictError(f"port {port} ({option}) is used by another web service on this host")
        if http_port is not None:
            taken.add(http_port)
        if grpc_port is not None:
            taken.add(grpc_port)
        if http_port is None:
            http_port = _free_port(self._module_host(), taken)
            taken.add(http_port)
        if grpc_port is None:
            grpc_port = _free_port(self._module_host(), taken)
        return http_port, grpc_port


def _free_port(host: str, taken: set[int]) -> int:
    """A port nothing listens on right now (the module binds it a moment later)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(50):
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
        if port not in taken:
            return port
    raise ConflictError("found no free port for the web service; give --http-port and --grpc-port")


def _url_host(host: str) -> str:
    with contextlib.suppress(ValueError):
        if ipaddress.ip_address(host).version == 6:
            return f"[{host}]"
    return host


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None
