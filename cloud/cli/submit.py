"""`edgewise run submit`: snapshot a folder, queue it as a run, and optionally watch it to the end."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from edgewise.cloud.cli import output
from edgewise.cloud.cli.context import client_from
from edgewise.cloud.cli.logs import LogStream, follow_logs
from edgewise.cloud.cli.parsing import parse_pairs
from edgewise.cloud.errors import InvalidInputError
from edgewise.cloud.store.records import RunSpec, RunStatus

if TYPE_CHECKING:
    from edgewise.cloud.client import Client
    from edgewise.cloud.store.records import Run


def submit(
    ctx: typer.Context,
    script_args: Annotated[
        list[str] | None, typer.Argument(help="arguments for the script, after `--`", show_default=False)
    ] = None,
    experiment: Annotated[
        str | None, typer.Option(help="experiment to record the run in (created on first use)")
    ] = None,
    source: Annotated[
        Path, typer.Option(help="folder to snapshot and run", exists=True, file_okay=False, resolve_path=True)
    ] = Path("."),
    script: Annotated[str | None, typer.Option(help="script to run, relative to the source folder")] = None,
    requirements: Annotated[
        str | None, typer.Option(help="pip requirements file, relative to the source folder")
    ] = None,
    compute: Annotated[str | None, typer.Option(help="compute target (default: local)")] = None,
    runconfig: Annotated[
        Path | None, typer.Option(help="run configuration file (default: SOURCE/.edgewise/run.yml if present)")
    ] = None,
    name: Annotated[str | None, typer.Option(help="display name of the run")] = None,
    tag: Annotated[list[str] | None, typer.Option("--tag", help="tag KEY=VALUE (repeatable)")] = None,
    env: Annotated[
        list[str] | None, typer.Option("--env", help="environment variable KEY=VALUE for the script (repeatable)")
    ] = None,
    wait: Annotated[bool, typer.Option("--wait", help="stream the logs and exit 0 only if the run completed")] = False,
) -> None:
    """Submit a training script as a run; prints the run id."""
    tags = parse_pairs(tag, option="--tag")
    environment = parse_pairs(env, option="--env")
    from edgewise.cloud.runs.runconfig import load_runconfig, merge

    flags: dict[str, Any] = {
        "script": script,
        "arguments": list(script_args) if script_args else None,
        "requirements": requirements,
        "compute": compute,
        "experiment": experiment,
        "environment": environment or None,
        "name": name,
        "tags": tags or None,
    }
    config = merge(load_runconfig(source, runconfig), **{k: v for k, v in flags.items() if v is not None})
    if not config.experiment:
        raise InvalidInputError("no experiment given: pass --experiment NAME or set `experiment:` in the run config")
    if not config.script:
        raise InvalidInputError("no script given: pass --script FILE or set `script:` in the run config")
    spec = RunSpec(
        script=config.script,
        arguments=list(config.arguments),
        requirements=_read_requirements(source, config.requirements),
        compute=config.compute,
        environment=dict(config.environment),
    )
    client = client_from(ctx)
    with _upload_progress() as progress:
        run = client.submit_run(
            experiment=config.experiment,
            source=source,
            spec=spec,
            name=config.name,
            tags=dict(config.tags),
            progress=progress,
        )
    output.out.print(run.id, highlight=False)
    output.note(f"run {run.id} queued in experiment {run.experiment}")
    if wait:
        try:
            finished = wait_for_run(client, run.id)
        except KeyboardInterrupt:
            output.note(f"stopped watching; run {run.id} goes on (stop it with `edgewise run cancel {run.id}`)")
            raise typer.Exit(130) from None
        if finished.status is not RunStatus.COMPLETED:
            raise typer.Exit(1)


def wait_for_run(client: Client, run_id: str) -> Run:
    """Stream the run's logs until it ends, then say how it ended."""
    follow_logs(client, run_id, LogStream.BOTH)
    run = client.get_run(run_id)
    if not run.status.terminal:
        run = client.wait_run(run_id, poll=1.0)
    summary = f"run {run.id} {run.status.value} after {output.duration(run.duration)}"
    if run.exit_code is not None:
        summary += f" (exit code {run.exit_code})"
    if run.status_reason:
        summary += f": {run.status_reason}"
    style = "green" if run.status is RunStatus.COMPLETED else "red"
    output.err.print(summary, style=style, highlight=False, markup=False)
    return run


def _read_requirements(source: Path, relative: str | None) -> str | None:
    """The text of the requirements file, which travels in the run spec (the service builds the environment)."""
    if not relative:
        return None
    path = Path(relative) if Path(relative).is_absolute() else source / relative
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InvalidInputError(f"requirements file {path} does not exist (it is read relative to --source)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"cannot read requirements file {path}: {exc}") from None


@contextmanager
def _upload_progress() -> Iterator[Callable[[int, int], None]]:
    """A Rich transfer bar on stderr, fed by the client as snapshot blobs are uploaded."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    with Progress(
        TextColumn("uploading snapshot"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=output.err,
        transient=True,
    ) as bar:
        task = bar.add_task("upload", total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update
