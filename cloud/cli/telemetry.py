"""`edgewise telemetry DEVICE`: a device's telemetry records, newest last."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from edgewise.cloud.cli import output
from edgewise.cloud.cli.context import OutputOption, client_from
from edgewise.cloud.cli.output import OutputFormat
from rich.markup import escape
from rich.table import Table

DATA_WIDTH = 120


def telemetry(
    ctx: typer.Context,
    device_id: Annotated[str, typer.Argument(metavar="DEVICE", help="device id")],
    since: Annotated[
        str | None, typer.Option(help="from this time: a duration before now (30s, 10m, 2h, 7d) or an ISO 8601 time")
    ] = None,
    until: Annotated[str | None, typer.Option(help="up to this time (same forms as --since)")] = None,
    name: Annotated[
        str | None, typer.Option(help="records of this kind, or whose data has this key (its value is shown)")
    ] = None,
    kind: Annotated[str | None, typer.Option(help="health, scoring, sample or event")] = None,
    module: Annotated[str | None, typer.Option(help="records of this module")] = None,
    limit: Annotated[int, typer.Option(help="the newest this many records", min=1, max=10000)] = 100,
    output_format: OutputOption = OutputFormat.TABLE,
) -> None:
    """Show a device's telemetry records (health, scoring statistics, samples), oldest first."""
    records = client_from(ctx).device_telemetry(
        device_id, since=since, until=until, kind=kind, module=module, name=name, limit=limit
    )
    if output_format is OutputFormat.JSON:
        output.print_json([record.to_dict() for record in records])
        return
    if not records:
        output.note(f"no telemetry records of {device_id} match")
        return
    found = [_values_of(record.data, name) for record in records] if name is not None else []
    key = name if any(found) else None
    table = Table()
    for column in ("seq", "time", "kind", "module", key or "data"):
        table.add_column(column, no_wrap=column != "data", justify="right" if column == "seq" else "left")
    for index, record in enumerate(records):
        shown = _compact(_one_or_all(found[index]) if key is not None else record.data)
        table.add_row(
            str(record.seq), output.when(record.ts), escape(record.kind), escape(record.module or "-"), escape(shown)
        )
    output.out.print(table)


def _values_of(data: Any, key: str) -> list[Any]:
    """The values of `key` at any depth, in document order (a scoring record has one per model)."""
    if isinstance(data, dict):
        found = [data[key]] if key in data else []
        return found + [v for k, value in data.items() if k != key for v in _values_of(value, key)]
    if isinstance(data, list):
        return [v for item in data for v in _values_of(item, key)]
    return []


def _one_or_all(values: list[Any]) -> Any:
    return values[0] if len(values) == 1 else values


def _compact(value: Any) -> str:
    text = json.dumps(value, separators=(",", ":"), sort_keys=False)
    return text if len(text) <= DATA_WIDTH else text[: DATA_WIDTH - 1] + "…"
