"""`edgewise webservice ...`: images served on the workspace host — create, list, show, delete."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from edgewise.cloud.cli import output
from edgewise.cloud.cli.context import OutputOption, client_from
from edgewise.cloud.cli.output import OutputFormat
from edgewise.cloud.cli.parsing import parse_pairs
from rich.markup import escape
from rich.table import Table

if TYPE_CHECKING:
    from edgewise.cloud.webservices.records import WebService

app = typer.Typer(help="Serve images on the workspace host, with gRPC and REST scoring URLs.")

NameArg = Annotated[str, typer.Argument(metavar="NAME", help="web service name (also its module's name)")]
_STATE_STYLE = {"succeeded": "green", "failed": "red", "targeted": "yellow", "applied": "yellow"}


@app.command("create")
def create(
    ctx: typer.Context,
    name: NameArg,
    image: Annotated[str, typer.Option("--image", help="IMAGE[:VERSION] (default: the latest version)")],
    http_port: Annotated[int | None, typer.Option(help="REST port on this host (default: a free one)")] = None,
    grpc_port: Annotated[int | None, typer.Option(help="gRPC port on this host (default: a free one)")] = None,
    env: Annotated[list[str] | None, typer.Option("--env", help="KEY=VALUE for the module (repeatable)")] = None,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="wait until it serves (or failed)")] = True,
    timeout: Annotated[float, typer.Option(help="seconds --wait waits at most")] = 300.0,
    output_format: OutputOption = OutputFormat.TABLE,
) -> None:
    """Serve an image on the workspace host and print its scoring URLs."""
    image_name, _, version = image.partition(":")
    if version and not version.isdigit():
        raise typer.BadParameter(f"{image!r}: use IMAGE or IMAGE:VERSION with a version number", param_hint="--image")
    service = client_from(ctx).create_webservice(
        name,
        image=image_name,
        version=int(version) if version else None,
        http_port=http_port,
        grpc_port=grpc_port,
        env=parse_pairs(env, option="--env"),
        wait=wait,
        timeout=timeout,
    )
    if output_format is OutputFormat.JSON:
        output.print_json(service.to_dict())
    else:
        _print_service(service)
    if wait and service.state != "succeeded":
        if output_format is not OutputFormat.JSON:
            output.error(
                f"web service {name} is {service.state}"
                + (f": {service.reason}" if service.reason else f" after {timeout:g}s")
            )
        raise typer.Exit(1)


@app.command("list")
def list_webservices(ctx: typer.Context, output_format: OutputOption = OutputFormat.TABLE) -> None:
    """Every web service with its state and scoring URLs."""
    services = client_from(ctx).list_webservices()
    if output_format is OutputFormat.JSON:
        output.print_json([s.to_dict() for s in services])
        return
    table = Table()
    for column in ("name", "image", "state", "runtime", "REST", "gRPC", "created"):
        table.add_column(column)
    for s in services:
        table.add_row(
            escape(s.name),
            escape(f"{s.image_name}:{s.image_version}"),
            _state(s.state),
            escape(s.runtime_status or "-"),
            escape(s.rest_url),
            escape(s.grpc_url),
            output.when(s.created_at),
        )
    output.out.print(table)


@app.command("show")
def show(ctx: typer.Context, name: NameArg, output_format: OutputOption = OutputFormat.TABLE) -> None:
    """A web service: its state on the host, the module's runtime status and its scoring URLs."""
    service = client_from(ctx).get_webservice(name)
    if output_format is OutputFormat.JSON:
        output.print_json(service.to_dict())
        return
    _print_service(service)


@app.command("delete")
def delete(ctx: typer.Context, name: NameArg, output_format: OutputOption = OutputFormat.TABLE) -> None:
    """Stop serving: the module is removed from the host and the image released."""
    client_from(ctx).delete_webservice(name)
    if output_format is OutputFormat.JSON:
        output.print_json({"name": name, "deleted": True})
    else:
        output.out.print(f"deleted web service {escape(name)}", highlight=False)


def _state(state: str) -> str:
    style = _STATE_STYLE.get(state, "")
    return f"[{style}]{escape(state)}[/{style}]" if style else escape(state)


def _print_service(s: WebService) -> None:
    runtime = s.runtime_status or "-"
    if s.status_description:
        runtime += f" ({s.status_description})"
    rows = [
        ("image", escape(f"{s.image_name}:{s.image_version}")),
        ("models", escape(", ".join(s.models) or "-")),
        ("state", _state(s.state) + (f": {escape(s.reason)}" if s.reason else "")),
        ("runtime", escape(runtime)),
        ("REST", escape(s.rest_url)),
    ]
    if s.infer_url:
        rows.append(("infer", escape(s.infer_url)))
    rows.append(("gRPC", escape(s.grpc_url)))
    if s.env:
        rows.append(("env", escape(output.pairs(s.env))))
    output.key_values(f"web service {escape(s.name)}", rows)
