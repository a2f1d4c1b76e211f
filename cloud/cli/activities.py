"""`edgewise activity ...`: long operations of the service (image builds), and the progress bar that follows one."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from edgewise.cloud.cli import output
from edgewise.cloud.cli.context import OutputOption, client_from
from edgewise.cloud.cli.output import OutputFormat
from edgewise.cloud.store.records import Activity, ActivityStatus
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

if TYPE_CHECKING:
    from edgewise.cloud.client import Client

app = typer.Typer(help="Long operations of the workspace, such as image builds.", no_args_is_help=True)

_STYLE = {
    ActivityStatus.QUEUED: "dim",
    ActivityStatus.RUNNING: "blue",
    ActivityStatus.SUCCEEDED: "green",
    ActivityStatus.FAILED: "red",
}


def status(value: ActivityStatus) -> str:
    return f"[{_STYLE.get(value, '')}]{value.value}[/]"


def follow(client: Client, activity: Activity, *, description: str) -> Activity:
    """Show a progress bar on stderr until the activity ends; answer its last state."""
    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"))
    with Progress(*columns, TimeElapsedColumn(), TextColumn("{task.fields[message]}"), console=output.err) as bar:
        task = bar.add_task(escape(description), total=1.0, message="")

        def update(current: Activity) -> None:
            bar.update(task, completed=current.progress, message=escape(current.message or current.status.value))

        update(activity)
        return client.wait_activity(activity.id, progress=update)


def activity_fields(activity: Activity) -> list[tuple[str, str]]:
    return [
        ("kind", escape(activity.kind)),
        ("status", status(activity.status)),
        ("progress", f"{activity.progress:.0%}"),
        ("message", escape(activity.message or "-")),
        ("error", escape(activity.error or "-")),
        ("result", escape(activity.result or "-")),
        ("created", output.when(activity.created_at)),
        ("started", output.when(activity.started_at)),
        ("ended", output.when(activity.ended_at)),
        ("parameters", escape(", ".join(f"{k}={v}" for k, v in activity.parameters.items()) or "-")),
    ]


@app.command("show")
def show(
    ctx: typer.Context,
    activity_id: Annotated[str, typer.Argument(metavar="ID", help="activity id")],
    output_format: OutputOption = OutputFormat.TABLE,
) -> None:
    """One activity: status, progress, and how it ended."""
    activity = client_from(ctx).get_activity(activity_id)
    if output_format is OutputFormat.JSON:
        output.print_json(activity.to_dict())
    else:
        output.key_values(f"activity {escape(activity.id)}", activity_fields(activity))


@app.command("list")
def list_activities(
    ctx: typer.Context,
    kind: Annotated[str | None, typer.Option(help="only activities of this kind, e.g. image-build")] = None,
    state: Annotated[
        str | None, typer.Option("--status", help="queued, running, succeeded or failed", show_default=False)
    ] = None,
    limit: Annotated[int, typer.Option(help="at most this many activities", min=1)] = 50,
    output_format: OutputOption = OutputFormat.TABLE,
) -> None:
    """Recent activities, newest first."""
    activities = client_from(ctx).list_activities(kind=kind, status=state, limit=limit)
    if output_format is OutputFormat.JSON:
        output.print_json([activity.to_dict() for activity in activities])
        return
    table = Table()
    for column in ("id", "kind", "status", "progress", "created", "result / message"):
        table.add_column(column, no_wrap=column in ("id", "created"))
    for activity in activities:
        outcome = activity.error if activity.status is ActivityStatus.FAILED else activity.result or activity.message
        table.add_row(
            escape(activity.id),
            escape(activity.kind),
            status(activity.status),
            f"{activity.progress:.0%}",
            output.when(activity.created_at),
            escape(outcome or "-"),
        )
    output.out.print(table)
