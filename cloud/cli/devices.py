"""`edgewise device ...`: the device registry — add (prints the connection string), list, show, tag, remove."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from edgewise.cloud.cli import output
from edgewise.cloud.cli.context import OutputOption, client_from
from edgewise.cloud.cli.output import OutputFormat
from edgewise.cloud.cli.parsing import parse_pairs, parse_tag_filters
from edgewise.cloud.names import WEBSERVICE_HOST_ID
from edgewise.cloud.store.device_records import Device
from rich.markup import escape
from rich.table import Table

app = typer.Typer(help="Edge devices: credentials, connection strings and tags.", no_args_is_help=True)

DeviceArg = Annotated[str, typer.Argument(metavar="ID", help="device id")]
AllOption = Annotated[
    bool, typer.Option("--all", help=f"include {WEBSERVICE_HOST_ID}, the workspace host that runs web services")
]


def _hide_host(ids: list[str], show_all: bool) -> set[str]:
    """The ids to leave out: the workspace's own web-service host, unless --all (a note says so in a table)."""
    return set() if show_all or WEBSERVICE_HOST_ID not in ids else {WEBSERVICE_HOST_ID}


def _hidden_note(hidden: set[str]) -> None:
    if hidden:
        output.note(f"{WEBSERVICE_HOST_ID} (the workspace host that runs web services) is not listed; --all lists it")


@app.command("add")
def add(
    ctx: typer.Context,
    device_id: DeviceArg,
    tag: Annotated[list[str] | None, typer.Option("--tag", help="tag KEY=VALUE (repeatable)")] = None,
    output_format: OutputOption = OutputFormat.TABLE,
) -> None:
    """Register a device and print its connection string (the only time its secret is shown)."""
    added = client_from(ctx).add_device(device_id, tags=parse_pairs(tag, option="--tag"))
    if output_format is OutputFormat.JSON:
        output.print_json(added.to_dict())
        return
    output.note(f"added device {added.device.id}; give it this connection string (it is not shown again):")
    output.out.print(added.connection_string, highlight=False, markup=False)


@app.command("list")
def list_devices(
    ctx: typer.Context,
    tag: Annotated[
        list[str] | None, typer.Option("--tag", help="KEY (tag present) or KEY=VALUE (tag equal); repeatable")
    ] = None,
    limit: Annotated[int | None, typer.Option(help="at most this many devices", min=1)] = None,
    show_all: AllOption = False,
    output_format: OutputOption = OutputFormat.TABLE,
) -> None:
    """List devices by id."""
    devices = client_from(ctx).list_devices(tags=parse_tag_filters(tag), limit=None if limit is None else limit + 1)
    hidden = _hide_host([d.id for d in devices], show_all)
    devices = [d for d in devices if d.id not in hidden][:limit]
    if output_format is OutputFormat.JSON:
        output.print_json([device.to_dict() for device in devices])
        return
    table = Table()
    for column in ("id", "status", "last seen", "desired", "reported", "tags"):
        table.add_column(column)
    for device in devices:
        table.add_row(
            escape(device.id),
            escape(device.status or "-"),
            output.when(device.last_seen_at),
            _version(device.desired_version),
            _version(device.reported_version),
            escape(output.pairs(device.tags)),
        )
    output.out.print(table)
    _hidden_note(hidden)


@app.command("show")
def show(ctx: typer.Context, device_id: DeviceArg, output_format: OutputOption = OutputFormat.TABLE) -> None:
    """One device: tags, online status, last seen, and desired beside reported state."""
    device = client_from(ctx).get_device(device_id)
    if output_format is OutputFormat.JSON:
        output.print_json(device.to_dict())
        return
    output.key_values(
        f"device {escape(device.id)}",
        [
            ("status", escape(device.status or "never connected")),
            ("last seen", output.when(device.last_seen_at)),
            ("created", output.when(device.created_at)),
            ("tags", escape(output.pairs(device.tags))),
        ],
    )
    table = Table(title="\nstate", title_justify="left")
    for column in ("", "desired", "reported"):
        table.add_column(column)
    for key, desired, reported in _state_rows(device):
        table.add_row(key, escape(desired), escape(reported))
    output.out.print(table)


@app.command("tag")
def tag(
    ctx: typer.Context,
    device_id: DeviceArg,
    pairs: Annotated[list[str] | None, typer.Argument(metavar="KEY=VALUE...", help="tags to set")] = None,
    remove: Annotated[list[str] | None, typer.Option("--remove", help="remove tag KEY (repeatable)")] = None,
    output_format: OutputOption = OutputFormat.TABLE,
) -> None:
    """Set or remove tags of a device."""
    values = parse_pairs(pairs, option="KEY=VALUE")
    if not values and not remove:
        raise typer.BadParameter("nothing to change: give KEY=VALUE or --remove KEY", param_hint="KEY=VALUE")
    updated = client_from(ctx).tag_device(device_id, set=values, remove=list(remove or ()))
    if output_format is OutputFormat.JSON:
        output.print_json(updated.to_dict())
    else:
        output.out.print(f"{escape(updated.id)} tags: {escape(output.pairs(updated.tags))}", highlight=False)


@app.command("remove")
def remove(
    ctx: typer.Context,
    device_id: DeviceArg,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask for confirmation")] = False,
    output_format: OutputOption = OutputFormat.TABLE,
) -> None:
    """Remove a device: its credentials are revoked at once, so it can no longer connect."""
    if not yes:
        typer.confirm(f"remove device {device_id} and revoke its credentials?", abort=True)
    client_from(ctx).remove_device(device_id)
    if output_format is OutputFormat.JSON:
        output.print_json({"id": device_id, "removed": True})
    else:
        output.out.print(f"removed {escape(device_id)}", highlight=False)


def _version(value: int | None) -> str:
    return "-" if value is None else str(value)


def _state_rows(device: Device) -> list[tuple[str, str, str]]:
    """Desired beside reported: the manifest version, then what the device said about applying it."""
    reported: dict[str, Any] = device.reported or {}
    status = reported.get("lastDesiredStatus")
    rows = [("version", _version(device.desired_version), _version(device.reported_version))]
    if isinstance(status, dict):
        rows.append(("outcome", "", f"{status.get('code', '-')} {status.get('description') or ''}".strip()))
    modules = reported.get("modules")
    if isinstance(modules, dict):
        for name, module in sorted(modules.items()):
            rows.append((f"module {name}", "", _module_text(module)))
    return rows


def _module_text(module: object) -> str:
    """A running module's scoring URLs, or why another one is not running."""
    if not isinstance(module, dict):
        return json.dumps(module)
    status = str(module.get("runtimeStatus") or "-")
    if status != "running":
        description = module.get("statusDescription")
        return f"{status}: {description}" if description else status
    endpoints = module.get("endpoints")
    urls = endpoints if isinstance(endpoints, dict) else {}
    labels = (("http", "REST"), ("grpc", "gRPC"))
    return " · ".join([status, *(f"{label} {urls[key]}" for key, label in labels if urls.get(key))])


@app.command("health")
def health(
    ctx: typer.Context,
    tag: Annotated[
        list[str] | None, typer.Option("--tag", help="KEY (tag present) or KEY=VALUE (tag equal); repeatable")
    ] = None,
    show_all: AllOption = False,
    output_format: OutputOption = OutputFormat.TABLE,
) -> None:
    """The fleet's health: online, last seen, failing modules, CPU, memory, disk, request and error rates."""
    fleet = client_from(ctx).fleet_health(tags=parse_tag_filters(tag))
    hidden = _hide_host([d.id for d in fleet], show_all)
    fleet = [d for d in fleet if d.id not in hidden]
    if output_format is OutputFormat.JSON:
        output.print_json([device.to_dict() for device in fleet])
        return
    table = Table()
    for column in ("id", "status", "last seen", "failing modules", "cpu", "memory", "disk free", "req/s", "errors"):
        table.add_column(
            column, justify="right" if column in ("cpu", "memory", "disk free", "req/s", "errors") else "left"
        )
    for device in fleet:
        failing = ", ".join(f"{m.get('module')} ({m.get('status')})" for m in device.failing_modules)
        unavailable = ", ".join(f"{name} (unavailable)" for name in device.unavailable_modules)
        status = device.status or "never connected"
        table.add_row(
            escape(device.id),
            f"[green]{status}[/]" if device.online else f"[red]{escape(status)}[/]",
            output.when(device.last_seen_at),
            escape(", ".join(part for part in (failing, unavailable) if part) or "-"),
            "-" if device.cpu_percent is None else f"{device.cpu_percent:.0f}%",
            _fraction(device.memory_used_bytes, device.memory_total_bytes),
            "-" if device.disk_free_bytes is None else output.size(device.disk_free_bytes),
            "-" if device.requests_per_second is None else f"{device.requests_per_second:.3g}",
            "-" if device.error_rate is None else f"{device.error_rate:.1%}",
        )
    output.out.print(table)
    _hidden_note(hidden)


def _fraction(used: int | None, total: int | None) -> str:
    if used is None or not total:
        return "-"
    return f"{used / total:.0%}"
