"""`edgewise run ...`: submit, list, inspect, follow, cancel runs and fetch their files."""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Annotated

import typer
from edgewise.cloud.cli import output
from edgewise.cloud.cli.context import OutputOption, client_from
from edgewise.cloud.cli.logs import LogStream, follow_logs, print_logs
from edgewise.cloud.cli.output import OutputFormat
from edgewise.cloud.cli.submit import submit
from edgewise.cloud.errors import NotFoundError
from edgewise.cloud.names import check_relpath
from edgewise.cloud.store.records import Artifact, Run
from rich.markup import escape

app = typer.Typer(
    help="Runs: submit training scripts and look at their metrics, logs and outputs.", no_args_is_help=True
)
app.command("submit")(submit)

RunId = Annotated[str, typer.Argument(help="run id", show_default=False)]


@app.command("list")
def list_runs(
    ctx: typer.Context,
    experiment: Annotated[str | None, typer.Option(help="only this experiment's runs")] = None,
    filter_: Annotated[
        str | None, typer.Option("--filter", help="e.g. \"metrics.accuracy > 0.9 AND tags.team = 'vision'\"")
    ] = None,
    order_by: Annotated[str | None, typer.Option(help='e.g. "metrics.accuracy desc" or "created_at"')] = None,
    children: Annotated[bool, typer.Option("--children", help="include child runs")] = False,
    limit: Annotated[int, typer.Option(help="at most this many runs", min=1)] = 100,
    output_format: OutputOption = OutputFormat.TABLE,
) -> None:
    """List runs, newest first unless --order-by says otherwise."""
    runs = client_from(ctx).list_runs(
        experiment=experiment, filter=filter_, order_by=order_by, include_children=children, limit=limit
    )
    if output_format is OutputFormat.JSON:
        output.print_json([run.to_dict() for run in runs])
    else:
        output.runs_table(runs)


@app.command("show")
def show_run(ctx: typer.Context, run_id: RunId, output_format: OutputOption = OutputFormat.TABLE) -> None:
    """Status, times, spec, git, tags, latest metrics, artifacts and child runs of one run."""
    client = client_from(ctx)
    run = client.get_run(run_id)
    if output_format is OutputFormat.JSON:
        output.print_json(run.to_dict())
        return
    output.key_values(f"run {escape(run.id)}", _run_fields(run))
    if run.metrics:
        output.key_values("\nlatest metrics", [(escape(k), output.number(v)) for k, v in sorted(run.metrics.items())])
    artifacts = client.list_artifacts(run.id, None)
    if artifacts:
        output.key_values("\nartifacts", [(escape(a.path), output.size(a.size)) for a in artifacts])
    child_runs = client.list_runs(
        experiment=run.experiment, filter=None, order_by=None, include_children=True, parent_id=run.id, limit=1000
    )
    if child_runs:
        output.out.print()
        output.runs_table(child_runs, title="child runs")


def _run_fields(run: Run) -> list[tuple[str, str]]:
    rows = [
        ("experiment", escape(run.experiment)),
        ("name", escape(run.name or "-")),
        ("status", output.status(run.status)),
    ]
    if run.status_reason:
        rows.append(("reason", escape(run.status_reason)))
    rows += [
        ("exit code", "-" if run.exit_code is None else str(run.exit_code)),
        ("created", output.when(run.created_at)),
        ("started", output.when(run.started_at)),
        ("ended", output.when(run.ended_at)),
        ("duration", output.duration(run.duration)),
    ]
    if run.parent_id:
        rows.append(("parent", escape(run.parent_id)))
    if run.spec is not None:
        rows += [
            ("script", escape(" ".join([run.spec.script, *run.spec.arguments]))),
            ("compute", escape(run.spec.compute)),
            ("requirements", f"{len(run.spec.requirements.splitlines())} lines" if run.spec.requirements else "-"),
            ("environment", escape(output.pairs(run.spec.environment))),
        ]
    if run.git is not None and (run.git.commit or run.git.url):
        dirty = " (dirty)" if run.git.dirty else ""
        rows.append(("git", escape(f"{run.git.url or '-'} {run.git.branch or '-'} {run.git.commit or '-'}{dirty}")))
    rows.append(("tags", escape(output.pairs(run.tags))))
    return rows


@app.command("metrics")
def run_metrics(
    ctx: typer.Context,
    run_id: RunId,
    name: Annotated[str | None, typer.Option(help="only this metric")] = None,
    output_format: OutputOption = OutputFormat.TABLE,
) -> None:
    """Every logged value of the run's metrics, with steps, in logging order."""
    points = client_from(ctx).get_metrics(run_id, name)
    if output_format is OutputFormat.JSON:
        output.print_json([point.to_dict() for point in points])
    elif not points:
        output.note(f"run {run_id} has no metrics" + (f" named {name!r}" if name else ""))
    else:
        output.metrics_table(points)


@app.command("logs")
def run_logs(
    ctx: typer.Context,
    run_id: RunId,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="keep printing until the run ends")] = False,
    stream: Annotated[LogStream, typer.Option(help="which output of the script")] = LogStream.BOTH,
) -> None:
    """Print the run's stdout and stderr (the script's stderr goes to stderr)."""
    client = client_from(ctx)
    if follow:
        follow_logs(client, run_id, stream)
    else:
        print_logs(client, run_id, stream)


@app.command("cancel")
def cancel_run(ctx: typer.Context, run_id: RunId) -> None:
    """Cancel a queued or running run."""
    run = client_from(ctx).cancel_run(run_id)
    output.out.print(f"run {escape(run.id)} {output.status(run.status)}", highlight=False)


@app.command("download")
def download(
    ctx: typer.Context,
    run_id: RunId,
    path: Annotated[str, typer.Argument(help="artifact file or folder, e.g. outputs/model.onnx or outputs")],
    to: Annotated[Path, typer.Option("--to", help="local folder to write into", file_okay=False)] = Path("."),
) -> None:
    """Download an artifact, or a folder of them (kept as a folder under --to)."""
    client = client_from(ctx)
    wanted = check_relpath(path.rstrip("/"), what="artifact path")
    chosen = [a for a in client.list_artifacts(run_id, wanted) if _inside(a, wanted)]
    if not chosen:
        raise NotFoundError(f"run {run_id} has no artifact {wanted!r}; see `edgewise run show {run_id}`")
    base = PurePosixPath(wanted).parent
    for artifact in chosen:
        dest = to.joinpath(*PurePosixPath(artifact.path).relative_to(base).parts)
        dest.parent.mkdir(parents=True, exist_ok=True)
        client.download_artifact(run_id, artifact.path, dest)
        output.out.print(str(dest), highlight=False)


def _inside(artifact: Artifact, wanted: str) -> bool:
    return artifact.path == wanted or artifact.path.startswith(wanted + "/")
