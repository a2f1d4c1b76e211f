"""`edgewise deploy ...`: deployments of images to devices — create, list, show (per-device status), delete."""

from __future__ import annotations

from typing import Annotated

import typer
from edgewise.cloud.cli import output
from edgewise.cloud.cli.context import OutputOption, client_from
from edgewise.cloud.cli.output import OutputFormat
from edgewise.cloud.cli.parsing import parse_pairs
from edgewise.cloud.deployments.records import Deployment, DeploymentReport
from rich.markup import escape
from rich.table import Table

app = typer.Typer(help="Deploy images as modules to edge devices, with priorities and staged rollouts.")

NameArg = Annotated[str, typer.Argument(metavar="NAME", help="deployment name")]
_STATE_STYLE = {"succeeded": "green", "failed": "red", "rolled-back": "yellow", "pending": "dim", "overridden": "dim"}
# IoT Hub's four counts always; the states only some deployments have, when a device is in them
_COUNTS = ("targeted", "applied", "succeeded", "failed")
_OTHER_COUNTS = ("pending", "overridden", "rolled-back")


@app.command("create")
def create(
    ctx: typer.Context,
    name: NameArg,
    image: Annotated[str, typer.Option("--image", help="IMAGE[:VERSION] (default: the latest version)")],
    device: Annotated[str | None, typer.Option("--device", help="deploy to this device id")] = None,
    target: Annotated[
        str | None, typer.Option("--target", help="condition over tags, e.g. \"tags.site = 'berlin'\"")
    ] = None,
    priority: Annotated[int, typer.Option(help="the highest priority wins a module name on a device")] = 0,
    module: Annotated[str | None, typer.Option(help="module name on the device (default: the image name)")] = None,
    env: Annotated[list[str] | None, typer.Option("--env", help="KEY=VALUE for the module (repeatable)")] = None,
    restart_policy: Annotated[str, typer.Option(help="always, on-failure or never")] = "always",
    http_port: Annotated[int | None, typer.Option(help="REST port on the device (default: assigned)")] = None,
    grpc_port: Annotated[int | None, typer.Option(help="gRPC port on the device (default: assigned)")] = None,
    batch_size: Annotated[int | None, typer.Option(help="roll out this many devices at a time", min=1)] = None,
    batch_percent: Annotated[float | None, typer.Option(help="roll out this percentage of devices at a time")] = None,
    max_failures: Annotated[
        int | None, typer.Option(help="roll every device back once more than this many fail", min=0)
    ] = None,
    wait: Annotated[
        bool, typer.Option("--wait", help="wait until every device succeeded, failed or is overridden")
    ] = False,
    timeout: Annotated[float, typer.Option(help="seconds --wait waits at most")] = 600.0,
    output_format: OutputOption = OutputFormat.TABLE,
) -> None:
    """Deploy an image to one device (--device) or to every device a condition matches (--target)."""
    image_name, _, version = image.partition(":")
    if version and not version.isdigit():
        raise typer.BadParameter(f"{image!r}: use IMAGE or IMAGE:VERSION with a version number", param_hint="--image")
    client = client_from(ctx)
    created = client.create_deployment(
        name,
        image=image_name,
        version=int(version) if version else None,
        device_id=device,
        target=target,
        priority=priority,
        module=module,
        env=parse_pairs(env, option="--env"),
        restart_policy=restart_policy,
        http_port=http_port,
        grpc_port=grpc_port,
        batch_size=batch_size,
        batch_percent=batch_percent,
        max_failures=max_failures,
    )
    if target is not None and not client.get_deployment(name).counts.get("targeted"):
        output.note(f"no device matches {target!r} yet; devices that match it later (device add, device tag) get it")
    if wait:
        report = client.wait_deployment(name, timeout=timeout)
        if output_format is OutputFormat.JSON:
            output.print_json(report.to_dict())
        else:
            _print_report(report)
        if report.deployment.status == "rolled-back" or report.counts.get("failed", 0):
            raise typer.Exit(1)
        return
    if output_format is OutputFormat.JSON:
        output.print_json(created.to_dict())
    else:
        output.out.print(
            f"created deployment {escape(created.name)}: {escape(created.image_name)}:{created.image_version} as "
            f"module {escape(created.module)} ({created.status}); see `edgewise deploy show {escape(created.name)}`",
            highlight=False,
        )


@app.command("list")
def list_deployments(ctx: typer.Context, output_format: OutputOption = OutputFormat.TABLE) -> None:
    """Every deployment, oldest first."""
    deployments = client_from(ctx).list_deployments()
    if output_format is OutputFormat.JSON:
        output.print_json([d.to_dict() for d in deployments])
        return
    table = Table()
    for column in ("name", "image", "module", "target", "priority", "status", "created"):
        table.add_column(column)
    for d in deployments:
        table.add_row(
            escape(d.name),
            escape(f"{d.image_name}:{d.image_version}"),
            escape(d.module),
            escape(_target(d)),
            str(d.priority),
            escape(d.status),
            output.when(d.created_at),
        )
    output.out.print(table)


@app.command("show")
def show(ctx: typer.Context, name: NameArg, output_format: OutputOption = OutputFormat.TABLE) -> None:
    """A deployment: targeted, applied, succeeded and failed devices, with the reasons."""
    report = client_from(ctx).get_deployment(name)
    if output_format is OutputFormat.JSON:
        output.print_json(report.to_dict())
        return
    _print_report(report)


@app.command("delete")
def delete(ctx: typer.Context, name: NameArg, output_format: OutputOption = OutputFormat.TABLE) -> None:
    """Delete a deployment: its modules are removed from its devices."""
    client_from(ctx).delete_deployment(name)
    if output_format is OutputFormat.JSON:
        output.print_json({"name": name, "deleted": True})
    else:
        output.out.print(f"deleted deployment {escape(name)}", highlight=False)


def _target(d: Deployment) -> str:
    return f"device {d.device_id}" if d.device_id is not None else str(d.target)


def _print_report(report: DeploymentReport) -> None:
    d, counts = report.deployment, report.counts
    rollout = (
        f"batches of {d.batch_size}"
        if d.batch_size
        else f"batches of {d.batch_percent}%"
        if d.batch_percent
        else "all at once"
    )
    output.key_values(
        f"deployment {escape(d.name)}",
        [
            ("image", escape(f"{d.image_name}:{d.image_version} ({d.image})")),
            ("module", escape(d.module)),
            ("target", escape(_target(d))),
            ("priority", str(d.priority)),
            ("rollout", f"{rollout}, max failures {'-' if d.max_failures is None else d.max_failures}"),
            ("status", escape(d.status + (f": {d.reason}" if d.reason else ""))),
            (
                "devices",
                ", ".join(
                    [f"{k} {counts.get(k, 0)}" for k in _COUNTS]
                    + [f"{k} {counts[k]}" for k in _OTHER_COUNTS if counts.get(k)]
                ),
            ),
        ],
    )
    table = Table(title="\ndevices", title_justify="left")
    for column in ("device", "state", "batch", "manifest", "reason"):
        table.add_column(column)
    for row in report.devices:
        style = _STATE_STYLE.get(row.state, "")
        table.add_row(
            escape(row.device_id),
            f"[{style}]{escape(row.state)}[/{style}]" if style else escape(row.state),
            "-" if row.batch is None else str(row.batch),
            "-" if row.version is None else f"v{row.version}",
            escape(row.reason or ""),
        )
    output.out.print(table)
