"""The `edgewise` command: global options, the command groups, and how errors end a command."""

from __future__ import annotations

import sys
from typing import Annotated, NoReturn

import typer
from edgewise.cloud.cli import activities, broker, deployments, devices, experiments, images, models, output, runs
from edgewise.cloud.cli.context import CliSettings
from edgewise.cloud.cli.telemetry import telemetry
from edgewise.cloud.cli.up import up
from edgewise.cloud.cli.webservices import app as webservice_app
from edgewise.cloud.errors import ServiceUnavailableError

from edgewise import __version__

app = typer.Typer(
    name="edgewise",
    help="Train, track and register models in an edgewise workspace.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,  # locals may hold the bearer token
    rich_markup_mode="rich",
)
app.command("up")(up)
app.add_typer(runs.app, name="run")
app.add_typer(experiments.app, name="experiment")
app.add_typer(models.app, name="model")
app.add_typer(images.app, name="image")
app.add_typer(activities.app, name="activity")
app.add_typer(devices.app, name="device")
app.add_typer(broker.app, name="broker")
app.command("telemetry")(telemetry)
app.add_typer(deployments.app, name="deploy")
app.add_typer(webservice_app, name="webservice")

_START_HINT = "; start the service with `edgewise up`, or point --url / EDGEWISE_URL at a running workspace"


def _show_version(value: bool) -> None:
    if value:
        output.out.print(f"edgewise {__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def _global_options(
    ctx: typer.Context,
    url: Annotated[
        str | None, typer.Option("--url", help="workspace URL (default: $EDGEWISE_URL, else http://127.0.0.1:8080)")
    ] = None,
    token: Annotated[
        str | None,
        typer.Option("--token", help="bearer token (default: $EDGEWISE_TOKEN, else $EDGEWISE_DATA/token)"),
    ] = None,
    version: Annotated[
        bool, typer.Option("--version", help="print the version and exit", callback=_show_version, is_eager=True)
    ] = False,
) -> None:
    ctx.obj = CliSettings(url=url, token=token)


def run(argv: list[str] | None = None) -> NoReturn:
    """Run the command line; a workspace or local file error ends it with one red line and exit code 1."""
    from edgewise import EdgewiseError

    try:
        app(args=argv, prog_name="edgewise")
    except ServiceUnavailableError as exc:
        message = str(exc)
        output.error(message if "edgewise up" in message else message + _START_HINT)
    except EdgewiseError as exc:
        output.error(str(exc) or type(exc).__name__)
    except OSError as exc:
        output.error(str(exc))
    sys.exit(1)
