"""Parsing of the small value languages on the command line: `k=v` pairs, `NAME[:VERSION]`, tag filters.

Bad input raises `typer.BadParameter`, which Typer reports as a usage error (exit code 2) naming the option.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import typer


@dataclass(frozen=True, kw_only=True)
class ModelRef:
    """A model named on the command line; `version` None means the latest version."""

    name: str
    version: int | None = None

    def __str__(self) -> str:
        return self.name if self.version is None else f"{self.name}:{self.version}"


def parse_pair(text: str, *, option: str | None = None) -> tuple[str, str]:
    """Split `key=value`; the value may be empty or contain '=', the key may not be empty."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise typer.BadParameter(f"{text!r} is not KEY=VALUE (for example team=vision)", param_hint=option)
    return key, value


def parse_pairs(items: Iterable[str] | None, *, option: str | None = None) -> dict[str, str]:
    """`["a=1", "b=2"]` → `{"a": "1", "b": "2"}`; a key given twice keeps its last value, as on most CLIs."""
    return dict(parse_pair(item, option=option) for item in items or ())


def parse_tag_filters(items: Iterable[str] | None, *, option: str | None = "--tag") -> dict[str, str | None]:
    """Model list filters: `key` (the tag is present, any value) or `key=value` (the tag has that value)."""
    filters: dict[str, str | None] = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        key = key.strip()
        if not key:
            raise typer.BadParameter(f"tag filter {item!r} has no key: use KEY or KEY=VALUE", param_hint=option)
        filters[key] = value if sep else None
    return filters


def parse_model_ref(text: str, *, require_version: bool = False, param: str | None = "MODEL") -> ModelRef:
    """`NAME`, `NAME:VERSION` or `NAME:latest`; with `require_version` a number must be given."""
    name, sep, version = text.partition(":")
    if not name:
        raise typer.BadParameter(f"{text!r} names no model: use NAME:VERSION, for example digits:3", param_hint=param)
    if not sep or version == "latest":
        if require_version:
            raise typer.BadParameter(
                f"{text!r} needs a version number: use NAME:VERSION, for example {name}:1", param_hint=param
            )
        return ModelRef(name=name)
    if not version.isdigit() or int(version) < 1:
        raise typer.BadParameter(
            f"model version {version!r} in {text!r} is not a number >= 1 (or 'latest')", param_hint=param
        )
    return ModelRef(name=name, version=int(version))
