"""`edgewise experiment ...`: the experiments of the workspace."""

from __future__ import annotations

import typer
from edgewise.cloud.cli import output
from edgewise.cloud.cli.context import OutputOption, client_from
from edgewise.cloud.cli.output import OutputFormat

app = typer.Typer(help="Experiments: named groups of runs, created on first submission.", no_args_is_help=True)


@app.command("list")
def list_experiments(ctx: typer.Context, output_format: OutputOption = OutputFormat.TABLE) -> None:
    """List the experiments and how many runs each has."""
    experiments = client_from(ctx).list_experiments()
    if output_format is OutputFormat.JSON:
        output.print_json([experiment.to_dict() for experiment in experiments])
    else:
        output.experiments_table(experiments)
