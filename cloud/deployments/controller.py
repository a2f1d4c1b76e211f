"""The deployment controller: turns deployments into each device's signed desired manifest, publishes it, and
drives staged rollouts from what devices report.

Everything it knows is in the store (deployments, each device's progress, every manifest sent), so a restarted
service picks a rollout up where it stopped. Devices' reported state reaches the store through the service's
MQTT ingest; the controller only reads it. Calls come from request threads and from the controller's own
background thread; one lock makes each change and its publication one step.

The devices a change touches are handled as one batch: their manifests are computed, signed and stored in one
transaction, then published back to back, and the broker's acknowledgements are awaited together. A manifest
is never published before its version is committed, and a device's manifests go out in version order (one
batch at a time, under the lock, on one MQTT connection).
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from edgewise.cloud.deployments import manifests
from edgewise.cloud.deployments.batch_plan import RowChange, plan_device
from edgewise.cloud.deployments.batch_store import manifest_batch, move_rows, reported_states
from edgewise.cloud.deployments.conditions import parse_condition
from edgewise.cloud.deployments.records import (
    RELEASED,
    Deployment,
    DeploymentReport,
    DeploymentStatus,
    DeviceRollout,
    DeviceState,
)
from edgewise.cloud.deployments.status import device_state
from edgewise.cloud.errors import InvalidInputError, NotFoundError, WorkspaceError
from edgewise.cloud.mqtt.publisher import Publisher
from edgewise.cloud.names import check_name
from edgewise.cloud.signing_key import ManifestKey
from edgewise.cloud.store.device_records import Device
from edgewise.cloud.store.sql import SqlStore
from edgewise.runtime.agent.manifest import MODULE_NAME
from edgewise.runtime.agent.model import RestartPolicy

log = logging.getLogger("edgewise.deployments")

POLL_INTERVAL = 0.5
REPOSITORY = re.compile(r"^[a-z0-9]+([._/-][a-z0-9]+)*$")
DEPLOYMENT_REFERENCE = "deployment"


class DeploymentController:
    """Creates and deletes deployments, keeps every device's manifest current, and rolls out in batches."""

    def __init__(
        self,
        *,
        store: SqlStore,
        manifest_key: ManifestKey,
        registry_host: str,
        telemetry: Mapping[str, Any] | None = None,
    ) -> None:
        self.store = store
        self.manifest_key = manifest_key
        self.registry_host = registry_host
        self.telemetry = dict(telemetry if telemetry is not None else manifests.DEFAULT_TELEMETRY)
        self.publisher: Publisher | None = None
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------------------------

    def start(self, publisher: Publisher) -> None:
        """Publish through `publisher` (connected) and start driving rollouts in a background thread."""
        self.publisher = publisher
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="edgewise-deployments", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        if self.publisher is not None:
            self.publisher.stop()
            self.publisher = None

    def _loop(self) -> None:
        while not self._stop.wait(POLL_INTERVAL):
            try:
                self.refresh()
            except Exception:  # the loop must survive a broken report or a broker outage
                log.exception("the deployment controller's pass failed; retrying")

    # -- deployments -----------------------------------------------------------------------------------------

    def create(
        self,
        name: str,
        *,
        image: str,
        version: int | None = None,
        device_id: str | None = None,
        target: str | None = None,
        priority: int = 0,
        module: str | None = None,
        env: Mapping[str, str] | None = None,
        restart_policy: str = "always",
        http_port: int | None = None,
        grpc_port: int | None = None,
        batch_size: int | None = None,
        batch_percent: float | None = None,
        max_failures: int | None = None,
    ) -> Deployment:
        """Deploy image `image` (version None: the latest) to one device or to the devices `target` matches."""
        check_name("deployment", name)
        if (device_id is None) == (target is None):
            raise InvalidInputError("give exactly one of --device ID and --target CONDITION")
        condition = parse_condition(target) if target is not None else None
        built = self.store.get_image(image, version)
        if not REPOSITORY.match(built.name):
            raise InvalidInputError(
                f"image name {built.name!r} cannot be pulled by digest (repositories are lower-case); rebuild it "
                "under a lower-case name"
            )
        module_name = module or re.sub(r"[^a-z0-9_.-]", "-", built.name.lower())
        if not MODULE_NAME.match(module_name):
            raise InvalidInputError(f"module name {module_name!r}: use 1-63 of a-z 0-9 . _ -, starting alnum")
        try:
            policy = RestartPolicy(restart_policy)
        except ValueError:
            choices = ", ".join(p.value for p in RestartPolicy)
            raise InvalidInputError(f"restart policy {restart_policy!r}: use one of {choices}") from None
        settings: dict[str, Any] = {}
        for option, port in (("httpPort", http_port), ("grpcPort", grpc_port)):
            if port is not None:
                if not 1 <= port <= 65535:
                    raise InvalidInputError(f"{option} {port} is not a port number 1-65535")
                settings[option] = port
        if http_port is not None and http_port == grpc_port:
            raise InvalidInputError("--http-port and --grpc-port must differ")
        _check_rollout(batch_size, batch_percent, max_failures)
        for key in env or {}:
            if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", key):
                raise InvalidInputError(f"environment variable name {key!r}: use letters, digits and '_'")
        with self._lock:
            if device_id is not None:
                self.store.get_device(device_id)
                targets = [device_id]
            else:
                assert condition is not None
                targets = [d.id for d in self._all_devices() if condition.matches(d.tags)]
            staged = batch_size is not None or batch_percent is not None
            batches = _batches(sorted(targets), batch_size, batch_percent) if staged else {}
            deployment = self.store.create_deployment(
                Deployment(
                    name=name,
                    image_name=built.name,
                    image_version=built.version,
                    manifest_digest=built.manifest_digest,
                    image=f"{self.registry_host}/{built.name}@{built.manifest_digest}",
                    device_id=device_id,
                    target=condition.text if condition is not None else None,
                    priority=priority,
                    module=module_name,
                    module_type=built.kind,
                    env=dict(env or {}),
                    restart_policy=policy.value,
                    settings=settings,
                    batch_size=batch_size,
                    batch_percent=batch_percent,
                    max_failures=max_failures,
                    status=(DeploymentStatus.ROLLING_OUT if staged else DeploymentStatus.ACTIVE).value,
                    created_at=time.time(),
                ),
                devices={d: batches.get(d) for d in targets},
            )
            self.store.add_image_reference(built.name, built.version, kind=DEPLOYMENT_REFERENCE, ref=name)
            for model in built.models:
                model_name, _, model_version = model.rpartition(":")
                try:
                    self.store.add_model_reference(model_name, int(model_version), kind=DEPLOYMENT_REFERENCE, ref=name)
                except (NotFoundError, ValueError):
                    log.warning("image %s names model %s, which is not registered", built.ref, model)
            if staged and targets:
                self._release(deployment, min(batches.values()))
            else:
                self._publish_many(targets)
            log.info("created deployment %s of %s on %d device(s)", name, built.ref, len(targets))
            return self.store.get_deployment(name)

    def delete(self, name: str) -> None:
        """Remove the deployment's modules from its devices and release its model and image references."""
        with self._lock:
            devices = self.store.delete_deployment(name)
            self._publish_many(devices)
        log.info("deleted deployment %s", name)

    def list_all(self) -> list[Deployment]:
        return self.store.list_deployments()

    def report(self, name: str) -> DeploymentReport:
        """The deployment with each device's state, freshly read from what the devices reported."""
        with self._lock:
            self._refresh_one(self.store.get_deployment(name))
            deployment = self.store.get_deployment(name)
            rows = self.store.list_rollouts(deployment=name)
        # IoT Hub's counts: targeted is every device the deployment targets; applied includes those that then
        # reported success or failure; the others count the devices in that state
        counts = {state.value: sum(1 for row in rows if row.state == state.value) for state in DeviceState}
        counts["targeted"] = len(rows)
        counts["applied"] += counts[DeviceState.SUCCEEDED] + counts[DeviceState.FAILED]
        return DeploymentReport(deployment=deployment, devices=rows, counts=counts)

    # -- device events (from the device registry) -------------------------------------------------------------

    def device_changed(self, device_id: str, event: str) -> None:
        """A device was added, retagged or removed: move it into or out of deployments and republish."""
        try:
            with self._lock:
                if event == "removed":
                    self.store.drop_rollouts(device_id)
                    if self.publisher is not None:
                        self.publisher.clear_desired(device_id)
                    return
                self._retarget(self.store.get_device(device_id))
                # a device added again lost its retained manifest when it was removed: publish even if unchanged
                self._publish_many([device_id], republish=event == "added")
        except WorkspaceError as exc:
            log.warning("could not update the manifest of device %s after it was %s: %s", device_id, event, exc)

    def _retarget(self, device: Device) -> None:
        current = {row.deployment for row in self.store.list_rollouts(device_id=device.id)}
        wanted: dict[str, Deployment] = {}
        for deployment in self.store.list_deployments():
            if deployment.status == DeploymentStatus.ROLLED_BACK:
                continue
            if deployment.device_id == device.id or (
                deployment.target is not None and parse_condition(deployment.target).matches(device.tags)
            ):
                wanted[deployment.name] = deployment
        self.store.drop_rollouts(device.id, sorted(current - set(wanted)))
        for name in sorted(set(wanted) - current):
            deployment = wanted[name]
            if deployment.status == DeploymentStatus.ROLLING_OUT:
                batch = max((r.batch or 0 for r in self.store.list_rollouts(deployment=name)), default=0) + 1
                self.store.put_rollout(name, device.id, state=DeviceState.PENDING.value, batch=batch)
            else:
                self.store.put_rollout(name, device.id, state=DeviceState.TARGETED.value)

    # -- manifests ---------------------------------------------------------------------------------------------

    def _publish_many(
        self, device_ids: Iterable[str], *, republish: bool = False, moves: Sequence[RowChange] = ()
    ) -> None:
        """Bring the devices' manifests up to date: a changed one is signed and stored under a new version.

        `moves` are row changes made in the same transaction, before the manifests are computed. `republish`
        sends the latest manifest again when nothing changed (its retained copy was cleared)."""
        ids = sorted(set(device_ids))
        if not ids and not moves:
            return
        deployments = {d.name: d for d in self.store.list_deployments()}
        outgoing: dict[str, dict[str, Any]] = {}
        fresh: dict[str, int] = {}
        with manifest_batch(self.store) as batch:
            batch.move_rows(moves)
            rows = batch.rollouts(ids)
            latest = batch.latest_manifests(ids)
            changes: list[RowChange] = []
            for device_id in ids:
                plan = plan_device(
                    device_id=device_id,
                    rows=rows[device_id],
                    deployments=deployments,
                    latest=latest.get(device_id),
                    telemetry=self.telemetry,
                )
                if plan is None:
                    continue  # nothing was ever deployed to it: no manifest yet
                version = plan.latest_version
                if plan.changed:
                    if self.publisher is None:
                        raise WorkspaceError("the deployment controller is not connected to the MQTT broker yet")
                    version += 1
                    outgoing[device_id] = self.manifest_key.sign(plan.manifest(version))
                    fresh[device_id] = version
                elif republish and self.publisher is not None and plan.latest is not None:
                    outgoing[device_id] = dict(plan.latest)
                changes.extend(plan.row_changes(rows[device_id], version))
            batch.add_manifests({device_id: outgoing[device_id] for device_id in fresh})
            batch.set_desired_versions(fresh)
            batch.move_rows(changes)
        if outgoing:
            assert self.publisher is not None
            self.publisher.publish_desired_all(outgoing)
            for device_id, version in fresh.items():
                log.info("published manifest v%d of device %s", version, device_id)

    # -- status and rollouts -----------------------------------------------------------------------------------

    def refresh(self) -> None:
        """One pass: read every device's report into the deployments' states, then advance or roll back."""
        with self._lock:
            for deployment in self.store.list_deployments():
                if deployment.status != DeploymentStatus.ROLLED_BACK:
                    self._refresh_one(deployment)

    def _refresh_one(self, deployment: Deployment) -> None:
        if deployment.status == DeploymentStatus.ROLLED_BACK:
            return
        rows = self.store.list_rollouts(deployment=deployment.name)
        watched = [row for row in rows if row.state in RELEASED and row.version is not None]
        reports = reported_states(self.store, [row.device_id for row in watched])
        states: dict[str, DeviceRollout] = {}
        moves: list[RowChange] = []
        for row in rows:
            if row.state in RELEASED and row.version is not None:
                state, reason = device_state(
                    reported=reports.get(row.device_id),
                    version=row.version,
                    module=deployment.module,
                    digest=deployment.manifest_digest,
                )
                if state.value != row.state or reason != row.reason:
                    moves.append(
                        RowChange(deployment=deployment.name, device_id=row.device_id, state=state.value, reason=reason)
                    )
                row = DeviceRollout(**{**row.to_dict(), "state": state.value, "reason": reason})
            states[row.device_id] = row
        move_rows(self.store, moves)
        released = [r for r in states.values() if r.state in RELEASED]
        failed = [r for r in released if r.state == DeviceState.FAILED]
        if deployment.max_failures is not None and len(failed) > deployment.max_failures:
            self._roll_back(deployment, list(states.values()), failed)
            return
        if deployment.status != DeploymentStatus.ROLLING_OUT:
            return
        if all(r.state in (DeviceState.SUCCEEDED, DeviceState.OVERRIDDEN) for r in released):
            pending = [r.batch for r in states.values() if r.state == DeviceState.PENDING and r.batch is not None]
            if pending:
                self._release(deployment, min(pending))
            else:
                self.store.set_deployment_status(
                    deployment.name, DeploymentStatus.ACTIVE.value, "rollout complete: every batch succeeded"
                )

    def _release(self, deployment: Deployment, batch: int) -> None:
        rows = [
            r
            for r in self.store.list_rollouts(deployment=deployment.name)
            if r.batch == batch and r.state == DeviceState.PENDING
        ]
        log.info("deployment %s: releasing batch %d (%d device(s))", deployment.name, batch, len(rows))
        released = [
            RowChange(deployment=deployment.name, device_id=row.device_id, state=DeviceState.TARGETED.value)
            for row in rows
        ]
        self._publish_many([r.device_id for r in rows], moves=released)

    def _roll_back(self, deployment: Deployment, rows: list[DeviceRollout], failed: list[DeviceRollout]) -> None:
        reasons = "; ".join(f"{r.device_id}: {r.reason}" for r in failed[:5])
        limit = deployment.max_failures
        self.store.set_deployment_status(
            deployment.name,
            DeploymentStatus.ROLLED_BACK.value,
            f"{len(failed)} device(s) failed, more than --max-failures {limit}; rolled back ({reasons})",
        )
        touched = []
        moves = []
        for row in rows:
            if row.state in RELEASED:
                touched.append(row.device_id)
                reason = row.reason if row.state == DeviceState.FAILED else "rolled back to the previous manifest"
            else:
                reason = "not released: the rollout was rolled back"
            moves.append(
                RowChange(
                    deployment=deployment.name,
                    device_id=row.device_id,
                    state=DeviceState.ROLLED_BACK.value,
                    reason=reason,
                )
            )
        log.warning("deployment %s rolled back on %d device(s): %s", deployment.name, len(touched), reasons)
        self._publish_many(touched, moves=moves)

    def _all_devices(self) -> Iterator[Device]:
        token: str | None = None
        while True:
            page = self.store.list_devices(page_size=1000, page_token=token)
            yield from page.items
            token = page.next_page_token
            if token is None:
                return


def _check_rollout(batch_size: int | None, batch_percent: float | None, max_failures: int | None) -> None:
    if batch_size is not None and batch_percent is not None:
        raise InvalidInputError("give --batch-size or --batch-percent, not both")
    if batch_size is not None and batch_size < 1:
        raise InvalidInputError("--batch-size must be at least 1")
    if batch_percent is not None and not 0 < batch_percent <= 100:
        raise InvalidInputError("--batch-percent must be above 0 and at most 100")
    if max_failures is not None and max_failures < 0:
        raise InvalidInputError("--max-failures must be 0 or more")


def _batches(device_ids: list[str], size: int | None, percent: float | None) -> dict[str, int]:
    """Batch numbers from 1, in the devices' stable (sorted) order."""
    if not device_ids:
        return {}
    per = size if size is not None else max(1, math.ceil(len(device_ids) * (percent or 100) / 100))
    return {device_id: index // per + 1 for index, device_id in enumerate(device_ids)}
