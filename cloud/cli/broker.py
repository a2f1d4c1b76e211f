"""`edgewise broker ...`: the files an external MQTT broker's operator installs to enforce the workspace's rules."""

from __future__ import annotations

import enum
from typing import Annotated

import typer
from edgewise.cloud.cli import output
from edgewise.cloud.cli.context import OutputOption, client_from
from edgewise.cloud.cli.output import OutputFormat

app = typer.Typer(help="The workspace's MQTT broker: accounts and topic rules.", no_args_is_help=True)


class ConfigFormat(enum.StrEnum):
    MOSQUITTO = "mosquitto"


@app.command("config")
def config(
    ctx: typer.Context,
    format: Annotated[ConfigFormat, typer.Option("--format", help="broker whose file formats to print")] = (
        ConfigFormat.MOSQUITTO
    ),
    output_format: OutputOption = OutputFormat.TABLE,
) -> None:
    """Print the password and ACL files (salted hashes only) and the settings that use them.

    They change with every device added or removed: copy them again and reload the broker (SIGHUP) then.
    """
    answer = client_from(ctx).broker_config(format=format.value)
    if output_format is OutputFormat.JSON:
        output.print_json(answer)
        return
    lines = [f"# broker: {answer['broker']['kind']} at {answer['broker']['url']}"]
    for item in answer["files"]:
        lines += ["", f"# ---- {item['name']} (the service keeps it at {item['path']}) ----", item["content"].rstrip()]
    lines += ["", "# ---- mosquitto.conf: point these at where you copy the two files ----"]
    lines.append(answer["mosquitto_conf"].rstrip())
    output.out.print("\n".join(lines), highlight=False, markup=False)
