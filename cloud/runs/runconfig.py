"""The run configuration: `.edgewise/run.yml` in the source folder, overridden by command-line flags.

Keeping the usual script, arguments and requirements in a file next to the code makes a submission
repeatable with a bare `edgewise run submit`. The file is checked strictly (an unknown key is most likely a
typo that would otherwise be silently ignored), and every error names the file and the key.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from edgewise.cloud.errors import InvalidInputError
from edgewise.cloud.names import check_name

DEFAULT_FILES = (Path(".edgewise") / "run.yml", Path(".edgewise") / "run.yaml")


@dataclass(frozen=True, kw_only=True)
class RunConfig:
    """What to run and where; every field may come from the file or from a flag."""

    script: str | None = None
    arguments: tuple[str, ...] = ()
    requirements: str | None = None  # path of a pip requirements file, relative to the source folder
    compute: str = "local"
    experiment: str | None = None
    environment: Mapping[str, str] = field(default_factory=dict)
    name: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)


_FIELDS = tuple(f.name for f in dataclasses.fields(RunConfig))
_MERGED_MAPPINGS = ("environment", "tags")


def load_runconfig(source: Path, path: Path | None = None) -> RunConfig:
    """Read the run configuration of `source`: the file given, else `.edgewise/run.yml` if it exists."""
    if path is None:
        for candidate in DEFAULT_FILES:
            if (Path(source) / candidate).is_file():
                path = Path(source) / candidate
                break
        else:
            return RunConfig()
    elif not Path(path).is_file():
        raise InvalidInputError(f"the run configuration file {path} does not exist")
    return parse_runconfig(_read(Path(path)), where=str(path))


def parse_runconfig(text: str, *, where: str = "the run configuration") -> RunConfig:
    """Build a RunConfig from YAML text; `where` names the file in error messages."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise InvalidInputError(f"{where} is not valid YAML{at}: {problem}") from None
    if data is None:
        return RunConfig()
    if not isinstance(data, dict):
        raise InvalidInputError(f"{where} must be a mapping of keys ({', '.join(_FIELDS)}), not {_kind(data)}")
    values: dict[str, Any] = {}
    for key, value in data.items():
        if key not in _FIELDS:
            raise InvalidInputError(f"unknown key {key!r} in {where}; the known keys are {', '.join(_FIELDS)}")
        if value is None:
            continue  # `requirements:` with nothing after it means "not set"
        values[key] = _check(key, value, where)
    return RunConfig(**values)


def merge(config: RunConfig, **overrides: Any) -> RunConfig:
    """Apply the flags that were given (not None) over `config`.

    Environment variables and tags are merged key by key, a flag's value winning, so `--env` adds to the
    file's environment instead of replacing it; every other flag replaces the file's value.
    """
    changes: dict[str, Any] = {}
    for key, value in overrides.items():
        if key not in _FIELDS:
            raise InvalidInputError(f"unknown run configuration setting {key!r}; use one of {', '.join(_FIELDS)}")
        if value is None:
            continue
        checked = _check(key, value, "the command line")
        if key in _MERGED_MAPPINGS:
            checked = {**getattr(config, key), **checked}
        changes[key] = checked
    return dataclasses.replace(config, **changes)


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"cannot read the run configuration file {path}: {exc}") from None


def _check(key: str, value: Any, where: str) -> Any:
    """The value of `key` in its canonical type, or InvalidInputError naming the key and `where`."""
    if key == "arguments":
        if isinstance(value, str) or not isinstance(value, list | tuple):
            raise InvalidInputError(
                f'\'arguments\' in {where} must be a list of strings, e.g. ["--epochs", "5"]; got {_kind(value)}'
            )
        return tuple(_scalar(f"arguments[{i}]", item, where) for i, item in enumerate(value))
    if key in _MERGED_MAPPINGS:
        if not isinstance(value, Mapping):
            raise InvalidInputError(f"'{key}' in {where} must be a mapping of names to strings; got {_kind(value)}")
        result: dict[str, str] = {}
        for name, item in value.items():
            if not isinstance(name, str) or not name:
                raise InvalidInputError(f"'{key}' in {where} has a key {name!r} that is not a non-empty string")
            if key == "environment" and ("=" in name or "\x00" in name):
                raise InvalidInputError(f"'environment' in {where} has an invalid variable name {name!r}")
            result[name] = _scalar(f"{key}.{name}", item, where)
        return result
    if not isinstance(value, str) or not value.strip():
        raise InvalidInputError(f"'{key}' in {where} must be a non-empty string; got {_kind(value)}")
    if key == "experiment":
        try:
            check_name("experiment", value)
        except InvalidInputError as exc:
            raise InvalidInputError(f"'experiment' in {where}: {exc}") from None
    return value


def _scalar(key: str, value: Any, where: str) -> str:
    """Strings as they are; numbers (YAML reads `5` as an int) as their text; anything else is an error."""
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    raise InvalidInputError(f"'{key}' in {where} must be a string; got {_kind(value)}")


def _kind(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"[:80]
