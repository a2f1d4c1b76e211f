"""The one implementation of health, metadata, inference, statistics and repository calls.

Protocol adapters (gRPC, REST) translate wire messages into the types in `types.py` and call this;
nothing here knows about protobuf or HTTP.
"""

from __future__ import annotations

import time

import numpy as np
from edgewise.runtime.scoring.errors import InvalidInputError, ModelNotFoundError
from edgewise.runtime.scoring.registry import ModelRegistry, ModelVersion
from edgewise.runtime.scoring.sampling import RequestSampler, SampleSettings
from edgewise.runtime.scoring.stats import ModelStats
from edgewise.runtime.scoring.types import (
    InferOutput,
    InferRequest,
    InferResponse,
    ModelIndexEntry,
    ModelMetadata,
    Parameters,
)

from edgewise import __version__

SERVER_NAME = "edgewise"
EXTENSIONS = ("binary_tensor_data", "parameters", "statistics", "model_repository", "schedule_policy")
# Request parameters that steer the transport, not the model: not echoed in the response.
_TRANSPORT_PARAMETERS = frozenset({"binary_data_output", "binary_data", "binary_data_size"})


class DataPlane:
    def __init__(
        self, registry: ModelRegistry, *, strict_readiness: bool = False, sampling: SampleSettings | None = None
    ) -> None:
        self.registry = registry
        self.strict_readiness = strict_readiness
        # None unless sampling is on, so the hot path pays a single attribute check.
        self.sampler = RequestSampler.from_settings(sampling) if sampling is not None else None

    # -- health and metadata -----------------------------------------------------------------

    def live(self) -> bool:
        return True

    def ready(self) -> bool:
        """Ready once the first repository scan has finished loading (every model, if strict)."""
        if not self.registry.initial_load_done:
            return False
        return not self.strict_readiness or self.registry.all_ready()

    def model_ready(self, name: str, version: str = "") -> bool:
        if name not in self.registry.names():
            raise ModelNotFoundError(f"unknown model {name!r}")
        return self.registry.is_ready(name, version)

    def server_metadata(self) -> tuple[str, str, tuple[str, ...]]:
        return SERVER_NAME, __version__, EXTENSIONS

    def model_metadata(self, name: str, version: str = "") -> ModelMetadata:
        mv = self.registry.resolve(name, version)
        assert mv.backend is not None
        versions = tuple(str(v.version) for v in self.registry.serving_versions(name) if v.ready)
        return ModelMetadata(name, versions, mv.backend.platform, mv.backend.inputs, mv.backend.outputs)

    # -- inference ---------------------------------------------------------------------------

    async def infer(self, request: InferRequest) -> InferResponse:
        start = time.perf_counter_ns()
        mv = self.registry.resolve(request.model_name, request.model_version)
        ok = False
        try:
            inputs, batch = self._check_inputs(mv, request)
            wanted = self._check_outputs(mv, request)
            scheduler = mv.scheduler
            assert scheduler is not None
            reported: Parameters | None = None
            if scheduler.returns_parameters:
                result, reported = await scheduler.infer_with_parameters(inputs, wanted, batch)
            else:
                result = await scheduler.infer(inputs, wanted, batch)
            outputs = [
                InferOutput(name, mv.outputs[name].datatype, tuple(result[name].shape), result[name])
                for name in (wanted or mv.outputs)
            ]
            ok = True
        finally:
            mv.stats.record_request(time.perf_counter_ns() - start, ok=ok)
        if self.sampler is not None:
            self.sampler.offer(mv.name, str(mv.version), request.inputs, outputs)
        parameters = {k: v for k, v in request.parameters.items() if k not in _TRANSPORT_PARAMETERS}
        if reported:
            parameters.update(reported)  # the backend's word wins over an echoed request parameter
        return InferResponse(request.model_name, str(mv.version), outputs, request.id, parameters)

    @staticmethod
    def _check_inputs(mv: ModelVersion, request: InferRequest) -> tuple[dict[str, np.ndarray], int]:
        inputs: dict[str, np.ndarray] = {}
        for tensor in request.inputs:
            spec = mv.inputs.get(tensor.name)
            if spec is None:
                raise InvalidInputError(
                    f"unexpected input {tensor.name!r} for model {mv.name!r}; it expects {sorted(mv.inputs)}"
                )
            if tensor.name in inputs:
                raise InvalidInputError(f"input {tensor.name!r} is given more than once")
            if tensor.datatype != spec.datatype:
                raise InvalidInputError(
                    f"input {tensor.name!r} has datatype {tensor.datatype}, model {mv.name!r} expects "
                    f"{spec.datatype}"
                )
            shape = tensor.shape
            if len(shape) != len(spec.shape) or any(
                want not in (-1, got) for want, got in zip(spec.shape, shape, strict=True)
            ):
                raise InvalidInputError(
                    f"input {tensor.name!r} has shape {list(shape)}, model {mv.name!r} expects "
                    f"{list(spec.shape)} (-1 is any size)"
                )
            inputs[tensor.name] = tensor.data
        missing = [name for name in mv.inputs if name not in inputs]
        if missing:
            raise InvalidInputError(f"missing input(s) {missing} for model {mv.name!r}")
        batch = 1
        max_batch = mv.config.max_batch_size
        if max_batch > 0:
            sizes = {array.shape[0] for array in inputs.values()}
            if len(sizes) != 1:
                raise InvalidInputError(f"inputs disagree on the batch size: {sorted(sizes)}")
            batch = sizes.pop()
            if batch > max_batch:
                raise InvalidInputError(
                    f"batch size {batch} exceeds the maximum of {max_batch} for model {mv.name!r}"
                )
        return inputs, batch

    @staticmethod
    def _check_outputs(mv: ModelVersion, request: InferRequest) -> list[str]:
        wanted = []
        for output in request.outputs:
            if output.name not in mv.outputs:
                raise InvalidInputError(
                    f"unknown output {output.name!r} requested from model {mv.name!r}; "
                    f"it has {sorted(mv.outputs)}"
                )
            wanted.append(output.name)
        return wanted

    # -- statistics and repository -------------------------------------------------------------

    def statistics(self, name: str = "", version: str = "") -> list[ModelStats]:
        if name and name not in self.registry.names():
            raise ModelNotFoundError(f"unknown model {name!r}")
        names = [name] if name else self.registry.names()
        found = [
            mv.stats
            for n in names
            for mv in self.registry.serving_versions(n)
            if not version or str(mv.version) == version
        ]
        if name and version and not found:
            raise ModelNotFoundError(f"model {name!r} has no loaded version {version!r}")
        return found

    def repository_index(self, ready_only: bool = False) -> list[ModelIndexEntry]:
        entries = self.registry.index()
        return [e for e in entries if e.state == "READY"] if ready_only else entries

    async def load_model(self, name: str) -> None:
        await self.registry.load(name)

    async def unload_model(self, name: str) -> None:
        await self.registry.unload(name)
