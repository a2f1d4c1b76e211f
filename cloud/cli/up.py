"""`edgewise up`: start the workspace service in this process, until SIGINT or SIGTERM."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def up(
    data: Annotated[
        Path | None,
        typer.Option("--data", help="data directory (default: $EDGEWISE_DATA, else ~/.edgewise)", show_default=False),
    ] = None,
    port: Annotated[int, typer.Option(help="HTTP port (0: any free port)", min=0, max=65535)] = 8080,
    host: Annotated[str, typer.Option(help="address to listen on (0.0.0.0 to accept other machines)")] = "127.0.0.1",
    db: Annotated[
        str | None,
        typer.Option("--db", help="database URL, e.g. postgresql://user@host/db (default: SQLite in the data dir)"),
    ] = None,
    max_concurrent_runs: Annotated[
        int | None,
        typer.Option(help="runs executed at once; the rest wait queued (default: the number of CPUs)", min=1),
    ] = None,
    broker: Annotated[
        str,
        typer.Option(
            help="MQTT broker: auto (mosquitto when installed, else embedded), embedded, mosquitto, "
            "or mqtt://host:port of a broker run elsewhere"
        ),
    ] = "auto",
    mqtt_port: Annotated[
        int, typer.Option("--mqtt-port", help="port of the broker it starts (0: any free port)", min=0, max=65535)
    ] = 1883,
) -> None:
    """Start the workspace service: HTTP API, run queue, model registry and MQTT broker."""
    from edgewise.cloud.auth import default_data_dir
    from edgewise.cloud.server import serve

    data_dir = (data.expanduser() if data is not None else default_data_dir()).absolute()
    serve(
        data_dir=data_dir,
        host=host,
        port=port,
        db_url=db,
        max_concurrent_runs=max_concurrent_runs,
        broker=broker,
        mqtt_port=mqtt_port,
    )
