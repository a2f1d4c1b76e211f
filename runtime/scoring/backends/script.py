"""Scoring scripts as a backend: `score.py` with `init()` and `run(inputs) -> outputs`, in Azure ML's shape.

A script declares its tensors at module level, so that model metadata and request validation work as they
do for ONNX models:

    INPUTS = [{"name": "image", "datatype": "UINT8", "shape": [-1, 28, 28]}]
    OUTPUTS = [{"name": "label", "datatype": "INT64", "shape": [-1]}]

    def init(model_dir):          # or init(); called once when the version loads
        ...

    def run(inputs):              # dict of numpy arrays in, dict of numpy arrays out
        ...

The script runs in the server's process. It is loaded under a module name of its own (model, version and a
load counter), so that two models' scripts never share globals and a reload never reuses the old module.
Failures are reported with the script's line: at load as ModelLoadError (the version is not ready), in `run`
as one failed request.
"""

from __future__ import annotations

import importlib.util
import inspect
import itertools
import logging
import re
import sys
import threading
import traceback
import weakref
from collections.abc import Callable, Mapping
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Any

import numpy as np
from edgewise.runtime.scoring.backends.base import Backend
from edgewise.runtime.scoring.datatypes import NUMPY_DTYPES, bytes_array
from edgewise.runtime.scoring.errors import (
    InferenceFailedError,
    InvalidInputError,
    ModelLoadError,
    ScoringError,
)
from edgewise.runtime.scoring.types import TensorSpec

log = logging.getLogger("edgewise.scoring")

_loads = itertools.count(1)
_SPEC_KEYS = frozenset({"name", "datatype", "shape"})


def _where(tb: TracebackType | None, path: Path) -> str:
    """' (score.py, line N)' for the deepest frame in the script, so a message points at the script's code."""
    lines = [frame.lineno for frame in traceback.extract_tb(tb) if frame.filename == str(path)]
    return f" ({path.name}, line {lines[-1]})" if lines else ""


def _describe(exc: BaseException, path: Path) -> str:
    return f"{type(exc).__name__}: {exc}{_where(exc.__traceback__, path)}"


def _tensor_spec(entry: object, what: str, path: Path) -> TensorSpec:
    if isinstance(entry, TensorSpec):
        raw: dict[str, Any] = {"name": entry.name, "datatype": entry.datatype, "shape": list(entry.shape)}
    elif isinstance(entry, Mapping):
        raw = dict(entry)
        unknown = sorted(set(map(str, raw)) - _SPEC_KEYS)
        if unknown:
            raise ModelLoadError(
                f"{path}: {what} entry {raw!r} has unknown key(s) {unknown}; use name, datatype, shape"
            )
    else:
        raise ModelLoadError(f"{path}: each {what} entry is a dict with name, datatype and shape, not {entry!r}")
    name, datatype, shape = raw.get("name"), raw.get("datatype"), raw.get("shape")
    if not isinstance(name, str) or not name:
        raise ModelLoadError(f"{path}: {what} entry {raw!r} needs a non-empty string name")
    if datatype not in NUMPY_DTYPES:
        raise ModelLoadError(f"{path}: {what} {name!r} has datatype {datatype!r}; use one of {', '.join(NUMPY_DTYPES)}")
    if not isinstance(shape, list | tuple) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= -1 for d in shape
    ):
        raise ModelLoadError(f"{path}: {what} {name!r} needs a shape: a list of sizes, -1 for any size")
    return TensorSpec(name, str(datatype), tuple(int(d) for d in shape))


def _declared(module: ModuleType, attribute: str, path: Path) -> tuple[TensorSpec, ...]:
    raw = getattr(module, attribute, None)
    example = '[{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]'
    if not isinstance(raw, list | tuple) or not raw:
        raise ModelLoadError(f"{path}: declare the script's {attribute.lower()} as {attribute} = {example}")
    specs = tuple(_tensor_spec(entry, attribute[:-1].lower(), path) for entry in raw)
    names = [spec.name for spec in specs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ModelLoadError(f"{path}: {attribute} declares {duplicates} more than once")
    return specs


def _function(module: ModuleType, name: str, path: Path) -> Callable[..., Any]:
    function = getattr(module, name, None)
    if not callable(function):
        raise ModelLoadError(f"{path}: a scoring script defines init() and run(inputs); {name}() is missing")
    return function  # type: ignore[no-any-return]


def _module_name(model_name: str, path: Path) -> str:
    model = re.sub(r"\W", "_", model_name) or "model"
    version = re.sub(r"\W", "_", path.parent.name)
    return f"_edgewise_score_{model}_v{version}_{next(_loads)}"


def _import(path: Path, module_name: str) -> ModuleType:
    """Execute the script as a fresh module; no byte-code is written next to it."""
    try:
        source = path.read_bytes()
    except OSError as exc:
        raise ModelLoadError(f"cannot read scoring script {path}: {exc}") from exc
    try:
        code = compile(source, str(path), "exec", dont_inherit=True)
    except SyntaxError as exc:
        raise ModelLoadError(f"{path}, line {exc.lineno}: {type(exc).__name__}: {exc.msg}") from None
    except ValueError as exc:  # null bytes in the source
        raise ModelLoadError(f"{path}: not a Python source file: {exc}") from None
    spec = importlib.util.spec_from_file_location(module_name, path)
    assert spec is not None  # a .py location always has a spec
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses and pickling look the module up by name
    try:
        exec(code, module.__dict__)  # running the deployer's script is what this backend is for
    except (Exception, SystemExit) as exc:
        sys.modules.pop(module_name, None)
        raise ModelLoadError(f"{path}: the script failed while being imported: {_describe(exc, path)}") from None
    return module


def _call_init(init: Callable[..., Any], model_dir: Path, path: Path) -> None:
    try:
        signature = inspect.signature(init)
    except (TypeError, ValueError):
        signature = None
    args: tuple[Path, ...] = ()
    if signature is not None:
        try:
            signature.bind(model_dir)
            args = (model_dir,)
        except TypeError:
            try:
                signature.bind()
            except TypeError:
                raise ModelLoadError(f"{path}: init must be init() or init(model_dir), not init{signature}") from None
    try:
        init(*args)
    except (Exception, SystemExit) as exc:
        raise ModelLoadError(f"{path}: init() failed: {_describe(exc, path)}") from None


def _check_run(run: Callable[..., Any], path: Path) -> None:
    try:
        signature = inspect.signature(run)
    except (TypeError, ValueError):
        return
    try:
        signature.bind({})
    except TypeError:
        raise ModelLoadError(f"{path}: run must take one argument, the dict of inputs; it is run{signature}") from None


class ScriptBackend(Backend):
    """A version served by its scoring script; `run` calls are serialised, as a script expects."""

    platform = "python"

    def __init__(self, path: Path, *, model_name: str = "", batching: bool = False) -> None:
        self._path = path
        self._batching = batching
        self._lock = threading.Lock()
        self._module_name = _module_name(model_name or path.parent.parent.name, path)
        module = _import(path, self._module_name)
        self._finalizer = weakref.finalize(self, sys.modules.pop, self._module_name, None)
        try:
            init = _function(module, "init", path)
            self._run = _function(module, "run", path)
            _check_run(self._run, path)
            self._inputs = _declared(module, "INPUTS", path)
            self._outputs = _declared(module, "OUTPUTS", path)
            _call_init(init, path.parent, path)
        except BaseException:
            self._finalizer()
            raise
        self._module = module

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        return self._inputs

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        return self._outputs

    @property
    def module_name(self) -> str:
        return self._module_name

    def predict(self, inputs: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        with self._lock:
            try:
                result = self._run(dict(inputs))
            except ScoringError:
                raise
            except ValueError as exc:
                raise InvalidInputError(
                    f"the scoring script rejected the input: {_describe(exc, self._path)}"
                ) from None
            except (Exception, SystemExit) as exc:
                log.warning("%s: run() failed", self._path, exc_info=True)
                raise InferenceFailedError(f"the scoring script failed: {_describe(exc, self._path)}") from None
        batch = self._batch_size(inputs)
        checked = self._check_result(result, batch)
        return {name: checked[name] for name in outputs} if outputs else checked

    def close(self) -> None:
        self._finalizer()

    def _batch_size(self, inputs: dict[str, np.ndarray]) -> int | None:
        if not self._batching:
            return None
        sizes = {array.shape[0] for array in inputs.values() if array.ndim}
        return sizes.pop() if len(sizes) == 1 else None

    def _check_result(self, result: object, batch: int | None) -> dict[str, np.ndarray]:
        prefix = f"the scoring script {self._path.name}"
        if not isinstance(result, Mapping):
            raise InferenceFailedError(
                f"{prefix}: run() returned {type(result).__name__}; it must return a dict of output name -> array"
            )
        declared = [spec.name for spec in self._outputs]
        missing = [name for name in declared if name not in result]
        extra = sorted(str(name) for name in result if name not in declared)
        if missing or extra:
            raise InferenceFailedError(
                f"{prefix}: run() returned outputs {sorted(map(str, result))}, the script declares {declared}"
            )
        return {spec.name: self._check_output(spec, result[spec.name], batch, prefix) for spec in self._outputs}

    @staticmethod
    def _check_output(spec: TensorSpec, value: object, batch: int | None, prefix: str) -> np.ndarray:
        dtype = NUMPY_DTYPES[spec.datatype]
        if isinstance(value, np.ndarray):
            array = value
        else:
            try:  # lists and scalars take the declared type; arrays must already have it
                array = np.asarray(value, dtype=None if spec.datatype == "BYTES" else dtype)
            except (TypeError, ValueError, OverflowError) as exc:
                raise InferenceFailedError(
                    f"{prefix}: output {spec.name!r} is not a {spec.datatype} array: {exc}"
                ) from None
        if spec.datatype == "BYTES":
            if array.dtype.kind not in "OSU":
                raise InferenceFailedError(
                    f"{prefix}: output {spec.name!r} has dtype {array.dtype}, declared BYTES (bytes or str)"
                )
            if array.dtype.kind != "O":
                array = bytes_array(array.reshape(-1), array.shape)
        elif array.dtype != dtype:
            raise InferenceFailedError(
                f"{prefix}: output {spec.name!r} has dtype {array.dtype}, declared {spec.datatype} ({dtype}); "
                f"convert it with .astype(numpy.{dtype.name})"
            )
        shape = array.shape
        if len(shape) != len(spec.shape) or any(
            want not in (-1, got) for want, got in zip(spec.shape, shape, strict=True)
        ):
            raise InferenceFailedError(
                f"{prefix}: output {spec.name!r} has shape {list(shape)}, declared {list(spec.shape)} (-1 is any size)"
            )
        if batch is not None and (not shape or shape[0] != batch):
            raise InferenceFailedError(
                f"{prefix}: output {spec.name!r} has shape {list(shape)}; with batching on, its first dimension "
                f"must be the batch size, {batch}"
            )
        return array


class OnnxModel:
    """An ONNX model that a scoring script runs itself, e.g. from init(model_dir): `OnnxModel(model_dir / "m.onnx")`.

    Calling it takes and returns dicts of numpy arrays keyed by the graph's tensor names.
    """

    def __init__(self, path: Path | str, *, intra_op_threads: int = 0) -> None:
        from edgewise.runtime.scoring.backends.onnx import OnnxBackend

        self._backend = OnnxBackend(Path(path), intra_op_threads=intra_op_threads)

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        return self._backend.inputs

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        return self._backend.outputs

    def __call__(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self._backend.predict(dict(inputs), [])


__all__ = ["OnnxModel", "ScriptBackend"]
