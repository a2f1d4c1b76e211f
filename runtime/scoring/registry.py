"""Model versions and their lifecycle: load, warm up, swap in, unload, without a gap in service.

A version that is loading is registered as LOADING and serves nothing; the version a request without
a version number gets is the newest READY one, so a new version takes traffic only once it is warm, and
the versions the policy no longer wants are unloaded only after a wanted one is READY.
"""

from __future__ import annotations

import asyncio
import logging
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

import numpy as np
from edgewise.runtime.scoring.backends.base import Backend
from edgewise.runtime.scoring.batching import DynamicBatcher, Scheduler
from edgewise.runtime.scoring.errors import (
    ModelLoadError,
    ModelNotFoundError,
    ModelNotReadyError,
    ScoringError,
)
from edgewise.runtime.scoring.metrics import ServerMetrics
from edgewise.runtime.scoring.repository import (
    ModelConfig,
    VersionOnDisk,
    model_dirs,
    read_config,
    versions_on_disk,
)
from edgewise.runtime.scoring.stats import ModelStats
from edgewise.runtime.scoring.types import ModelIndexEntry, TensorSpec

log = logging.getLogger("edgewise.scoring")
# An ONNX model whose version folder holds at most this much loads in a few milliseconds, less than starting a
# worker thread costs a new server: its first scan loads such a model on the event loop (a request that arrives
# meanwhile waits those milliseconds in its socket's queue). Bigger models, and every later load (a new version
# while the server serves), take a worker thread so that the server keeps answering while they load.
INLINE_LOAD_MAX_BYTES = 1 << 20

BackendLoader = Callable[[Path, ModelConfig], Backend]


class ModelState(StrEnum):
    LOADING = "LOADING"
    READY = "READY"
    UNAVAILABLE = "UNAVAILABLE"


@dataclass(eq=False)
class ModelVersion:
    name: str
    version: int
    config: ModelConfig
    source: VersionOnDisk
    stats: ModelStats
    state: ModelState = ModelState.LOADING
    reason: str = ""
    backend: Backend | None = None
    scheduler: Scheduler | None = None
    inputs: dict[str, TensorSpec] = field(default_factory=dict)
    outputs: dict[str, TensorSpec] = field(default_factory=dict)

    @property
    def ready(self) -> bool:
        return self.state is ModelState.READY


def warmup_inputs(specs: tuple[TensorSpec, ...]) -> dict[str, np.ndarray]:
    """Zero tensors of the declared shapes (dynamic dimensions as 1) to run once before serving."""
    from edgewise.runtime.scoring.datatypes import NUMPY_DTYPES

    feed: dict[str, np.ndarray] = {}
    for spec in specs:
        shape = tuple(1 if d < 0 else d for d in spec.shape)
        if spec.datatype == "BYTES":
            feed[spec.name] = np.full(shape, b"", dtype=object)
        else:
            feed[spec.name] = np.zeros(shape, dtype=NUMPY_DTYPES[spec.datatype])
    return feed


class ModelRegistry:
    def __init__(self, root: Path, *, loader: BackendLoader, metrics: ServerMetrics | None = None) -> None:
        self.root = root
        self._loader = loader
        self._metrics = metrics
        self._serving: dict[str, dict[int, ModelVersion]] = {}
        self._loading: dict[tuple[str, int], ModelVersion] = {}
        self._failed: dict[tuple[str, int], ModelVersion] = {}
        self._model_errors: dict[str, str] = {}
        self._unloaded: set[str] = set()
        self._locks: dict[str, asyncio.Lock] = {}
        self.initial_load_done = False

    # -- queries -------------------------------------------------------------------------------

    def names(self) -> list[str]:
        names = set(self._serving) | {n for n, _ in self._loading} | {n for n, _ in self._failed}
        return sorted(names | set(self._model_errors) | self._unloaded)

    def resolve(self, name: str, version: str = "") -> ModelVersion:
        """The version that serves a request; raises a protocol error naming what is missing."""
        versions = self._serving.get(name)
        if version:
            number = int(version) if version.isdigit() else -1
            mv = versions.get(number) if versions else None
            if mv is None:
                mv = self._loading.get((name, number)) or self._failed.get((name, number))
                if mv is None:
                    raise ModelNotFoundError(f"model {name!r} has no version {version!r}")
            if not mv.ready:
                raise ModelNotReadyError(self._not_ready_message(mv))
            return mv
        if versions:
            for number in sorted(versions, reverse=True):
                if versions[number].ready:
                    return versions[number]
        if name not in self.names():
            raise ModelNotFoundError(f"unknown model {name!r}")
        if name in self._unloaded:
            raise ModelNotReadyError(
                f"model {name!r} is unloaded; load it with RepositoryModelLoad "
                f"(POST /v2/repository/models/{name}/load)"
            )
        reasons = [self._not_ready_message(mv) for mv in self.all_versions(name)]
        if name in self._model_errors:
            reasons.append(self._model_errors[name])
        raise ModelNotReadyError("; ".join(reasons) or f"model {name!r} is not ready")

    def is_ready(self, name: str, version: str = "") -> bool:
        try:
            self.resolve(name, version)
        except ScoringError:
            return False
        return True

    def all_versions(self, name: str) -> list[ModelVersion]:
        found: dict[int, ModelVersion] = {}
        for (n, v), mv in self._failed.items():
            if n == name:
                found[v] = mv
        for (n, v), mv in self._loading.items():
            if n == name:
                found[v] = mv
        found.update(self._serving.get(name, {}))
        return [found[v] for v in sorted(found)]

    def serving_versions(self, name: str) -> list[ModelVersion]:
        return [mv for _, mv in sorted(self._serving.get(name, {}).items())]

    def index(self) -> list[ModelIndexEntry]:
        entries: list[ModelIndexEntry] = []
        for name in self.names():
            versions = self.all_versions(name)
            for mv in versions:
                warmed_up = mv.config.warmup and mv.state is ModelState.READY
                entries.append(ModelIndexEntry(name, str(mv.version), mv.state.value, mv.reason, warmed_up))
            if not versions:
                reason = self._model_errors.get(name, "unloaded" if name in self._unloaded else "")
                entries.append(ModelIndexEntry(name, "", ModelState.UNAVAILABLE.value, reason))
        return entries

    def all_ready(self) -> bool:
        """Every model has a version to serve; failed versions live outside `_serving`, so ask per model."""
        return all(self.is_ready(name) for name in self.names() if name not in self._unloaded)

    @staticmethod
    def _not_ready_message(mv: ModelVersion) -> str:
        state = "is still loading" if mv.state is ModelState.LOADING else "is not ready"
        detail = f": {mv.reason}" if mv.reason else ""
        return f"model {mv.name!r} version {mv.version} {state}{detail}"

    # -- changes -------------------------------------------------------------------------------

    async def poll(self) -> None:
        """Bring every model in line with the repository on disk."""
        on_disk = {p.name for p in model_dirs(self.root)} if self.root.is_dir() else set()
        known = set(self.names())  # includes models whose every version failed: they may have been removed
        names = sorted((on_disk | known) - self._unloaded)
        await asyncio.gather(*(self._sync(name) for name in names))
        self.initial_load_done = True

    async def load(self, name: str) -> None:
        if not (self.root / name).is_dir():
            raise ModelNotFoundError(f"model {name!r} is not in the repository {self.root}")
        self._unloaded.discard(name)
        await self._sync(name)
        if not any(mv.ready for mv in self.serving_versions(name)):
            raise ModelLoadError(self._model_errors.get(name) or "; ".join(
                self._not_ready_message(mv) for mv in self.all_versions(name)
            ) or f"model {name!r} has no version to load")

    async def unload(self, name: str) -> None:
        if name not in self.names() and not (self.root / name).is_dir():
            raise ModelNotFoundError(f"unknown model {name!r}")
        async with self._lock(name):
            self._unloaded.add(name)
            self._drop_model(name, "unloaded")

    def _lock(self, name: str) -> asyncio.Lock:
        return self._locks.setdefault(name, asyncio.Lock())

    async def _sync(self, name: str) -> None:
        async with self._lock(name):
            model_dir = self.root / name
            if not model_dir.is_dir():
                self._drop_model(name, "removed from the repository")
                return
            try:
                config = read_config(model_dir)
                on_disk = {v.version: v for v in versions_on_disk(model_dir, config)}
            except (ModelLoadError, OSError) as exc:
                self._model_errors[name] = str(exc)
                log.error("model %s: %s", name, exc)
                return
            self._model_errors.pop(name, None)
            wanted = config.version_policy.select(list(on_disk))
            if not wanted:
                self._model_errors[name] = f"model {name!r} has no version folder with {config.model_filename}"
            serving = self._serving.setdefault(name, {})
            to_load = [
                on_disk[v] for v in wanted
                if self._needs_load(name, serving.get(v), on_disk[v], config)
            ]
            await asyncio.gather(*(self._load_version(name, src, config) for src in to_load))
            if any(serving[v].ready for v in wanted if v in serving):
                for version in [v for v in serving if v not in wanted]:
                    self._retire(serving.pop(version), "no longer selected by the version policy")
            for key in [k for k in self._failed if k[0] == name and k[1] not in wanted]:
                del self._failed[key]
            if not serving:
                del self._serving[name]

    def _needs_load(
        self, name: str, current: ModelVersion | None, src: VersionOnDisk, config: ModelConfig
    ) -> bool:
        failed = self._failed.get((name, src.version))
        if failed is not None and failed.source == src and failed.config == config:
            return False  # the same files failed before: wait for them to change
        return current is None or current.source != src or current.config != config

    async def _load_version(self, name: str, src: VersionOnDisk, config: ModelConfig) -> None:
        stats = ModelStats(name, str(src.version))
        if self._metrics is not None:
            stats.metrics = self._metrics.for_model(name, str(src.version))
        mv = ModelVersion(name, src.version, config, src, stats)
        self._loading[(name, src.version)] = mv
        self._failed.pop((name, src.version), None)
        log.info("loading model %s version %d from %s", name, src.version, src.path)
        try:
            if not self.initial_load_done and _small_onnx(src.path):
                backend = self._load_and_warm_up(src.path, config)
            else:
                backend = await asyncio.to_thread(self._load_and_warm_up, src.path, config)
        except Exception as exc:
            mv.state = ModelState.UNAVAILABLE
            mv.reason = str(exc) if isinstance(exc, ScoringError) else f"{type(exc).__name__}: {exc}"
            log.error("model %s version %d failed to load: %s", name, src.version, mv.reason)
            self._failed[(name, src.version)] = mv
            del self._loading[(name, src.version)]
            return
        mv.backend = backend
        mv.inputs = {spec.name: spec for spec in backend.inputs}
        mv.outputs = {spec.name: spec for spec in backend.outputs}
        if config.max_batch_size > 0:
            mv.scheduler = DynamicBatcher(
                backend, stats, max_batch_size=config.max_batch_size,
                max_queue_delay_us=config.max_queue_delay_us,
            )
        else:
            mv.scheduler = Scheduler(backend, stats)
        mv.state = ModelState.READY
        old = self._serving.setdefault(name, {}).get(src.version)
        self._serving[name][src.version] = mv
        del self._loading[(name, src.version)]
        if old is not None:  # first: it shares the ready gauge (same model and version labels)
            self._retire(old, "replaced by a newer load of the same version")
        if stats.metrics is not None:
            stats.metrics.ready.set(1)
        log.info("model %s version %d is ready", name, src.version)

    def _load_and_warm_up(self, path: Path, config: ModelConfig) -> Backend:
        """In a worker thread: the load, its checks and the warm-up inference are one hop off the event loop."""
        backend = self._loader(path, config)
        self._check_batching(backend, config)
        if config.warmup:
            backend.predict(warmup_inputs(backend.inputs), [])
        return backend

    @staticmethod
    def _check_batching(backend: Backend, config: ModelConfig) -> None:
        if config.max_batch_size <= 0:
            return
        if backend.returns_parameters:
            raise ModelLoadError(
                f"max_batch_size is {config.max_batch_size}, but this {backend.platform} model reports response "
                "parameters per call, which a merged batch cannot split per request; set max_batch_size to 0"
            )
        for spec in (*backend.inputs, *backend.outputs):
            if not spec.shape or spec.shape[0] != -1:
                raise ModelLoadError(
                    f"max_batch_size is {config.max_batch_size} but tensor {spec.name!r} has shape "
                    f"{list(spec.shape)}; batching needs a dynamic first dimension on every tensor"
                )

    def _drop_model(self, name: str, reason: str) -> None:
        for mv in self._serving.pop(name, {}).values():
            self._retire(mv, reason)
        for key in [k for k in (*self._failed, *self._loading) if k[0] == name]:
            self._failed.pop(key, None)
        self._model_errors.pop(name, None)

    def _retire(self, mv: ModelVersion, reason: str) -> None:
        """Stop routing to a version; requests already holding it finish before it is collected."""
        mv.state = ModelState.UNAVAILABLE
        mv.reason = reason
        if mv.stats.metrics is not None:
            mv.stats.metrics.ready.set(0)
        log.info("model %s version %d unloaded: %s", mv.name, mv.version, reason)


def _small_onnx(path: Path) -> bool:
    """An ONNX model in a regular file whose folder (external weights included) holds at most INLINE_LOAD_MAX_BYTES
    (a named pipe or a device may block for any time: it loads on a worker thread)."""
    if path.suffix != ".onnx":
        return False
    try:
        if not stat.S_ISREG(path.stat().st_mode):
            return False
        return sum(entry.stat().st_size for entry in path.parent.iterdir()) <= INLINE_LOAD_MAX_BYTES
    except OSError:
        return False
