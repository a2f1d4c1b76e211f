"""What every command shares: the global `--url`/`--token` options and the client built from them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

import typer
from edgewise.cloud.cli.output import OutputFormat

if TYPE_CHECKING:
    from edgewise.cloud.client import Client


@dataclass(frozen=True, kw_only=True)
class CliSettings:
    """The global options; None falls back on the Client's own defaults (EDGEWISE_URL, EDGEWISE_TOKEN, token file)."""

    url: str | None = None
    token: str | None = None


def client_from(ctx: typer.Context) -> Client:
    """A client for the workspace; imported here so that `--help` and `up` never load the HTTP stack."""
    from edgewise.cloud.client import Client

    settings = ctx.find_object(CliSettings) or CliSettings()
    kwargs: dict[str, Any] = {}
    if settings.url:
        kwargs["url"] = settings.url
    if settings.token:
        kwargs["token"] = settings.token
    return Client(**kwargs)


OutputOption = Annotated[OutputFormat, typer.Option("--output", "-o", help="table or json (the records' fields)")]
