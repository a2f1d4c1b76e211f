"""`edgewise model ...`: the model registry — register, find, fetch, tag and delete model versions."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from edgewise.cloud.cli import output
from edgewise.cloud.cli.context import OutputOption, client_from
from edgewise.cloud.cli.output import OutputFormat
from edgewise.cloud.cli.parsing import parse_model_ref, parse_pairs, parse_tag_filters
from edgewise.cloud.store.records import ModelVersion
from rich.markup import escape

app = typer.Typer(help="Model registry: versioned, tagged, searchable models.", no_args_is_help=True)

ModelArg = Annotated[str, typer.Argument(metavar="NAME[:VERSION]", help="model, latest version by default")]
VersionedModelArg = Annotated[str, typer.Argument(metavar="NAME:VERSION", help="model version")]


@app.command("register")
def register(
    ctx: typer.Context,
    name: Annotated[str, typer.Option(help="model name; each registration adds the next version")],
    run: Annotated[str | None, typer.Option("--run", help="id of the run whose artifact to register")] = None,
    path: Annotated[
        str | None, typer.Option(help="artifact path in the run, e.g. outputs/model.onnx (with --run)")
    ] = None,
    file: Annotated[
        Path | None, typer.Option(help="local model file or folder (instead of --run)", exists=True)
    ] = None,
    tag: Annotated[list[str] | None, typer.Option("--tag", help="tag KEY=VALUE (repeatable)")] = None,
    prop: Annotated[list[str] | None, typer.Option("--property", help="property KEY=VALUE (repeatable)")] = None,
    description: Annotated[str | None, typer.Option(help="free text shown with the model")] = None,
    convert: Annotated[
        str | None, typer.Option(help="convert to this format while registering (onnx: from scikit-learn pickles)")
    ] = None,
    output_format: OutputOption = OutputFormat.TABLE,
) -> None:
    """Register a model version from a run's output or from a local file."""
    if (run is None) == (file is None):
        raise typer.BadParameter("give either --run ID --path ARTIFACT or --file PATH", param_hint="--run / --file")
    if run is not None and not path:
        raise typer.BadParameter("--run needs --path, e.g. --path outputs/model.onnx", param_hint="--path")
    if file is not None and path:
        raise typer.BadParameter("--path names a run artifact; use it with --run, not --file", param_hint="--path")
    if convert is not None and convert != "onnx":
        raise typer.BadParameter(f"cannot convert to {convert!r}; the only target is onnx", param_hint="--convert")
    tags = parse_pairs(tag, option="--tag")
    properties = parse_pairs(prop, option="--property")
    model = client_from(ctx).register_model(
        name=name,
        run_id=run,
        path=path,
        file=file,
        tags=tags,
        properties=properties,
        description=description,
        convert=convert,
    )
    if output_format is OutputFormat.JSON:
        output.print_json(model.to_dict())
    else:
        output.out.print(f"registered {escape(model.ref)}", highlight=False)


@app.command("list")
def list_models(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Option(help="only versions of this model")] = None,
    tag: Annotated[
        list[str] | None, typer.Option("--tag", help="KEY (tag present) or KEY=VALUE (tag equal); repeatable")
    ] = None,
    limit: Annotated[int, typer.Option(help="at most this many versions", min=1)] = 100,
    output_format: OutputOption = OutputFormat.TABLE,
) -> None:
    """List model versions, newest first."""
    models = client_from(ctx).list_models(name=name, tags=parse_tag_filters(tag), limit=limit)
    if output_format is OutputFormat.JSON:
        output.print_json([model.to_dict() for model in models])
    else:
        output.models_table(models)


@app.command("show")
def show(ctx: typer.Context, model: ModelArg, output_format: OutputOption = OutputFormat.TABLE) -> None:
    """One model version: where it came from, its files, tags and properties."""
    ref = parse_model_ref(model)
    found = client_from(ctx).get_model(ref.name, ref.version)
    if output_format is OutputFormat.JSON:
        output.print_json(found.to_dict())
        return
    output.key_values(f"model {escape(found.ref)}", _model_fields(found))
    if found.files:
        output.key_values("\nfiles", [(escape(f.path), output.size(f.size)) for f in found.files])


def _model_fields(model: ModelVersion) -> list[tuple[str, str]]:
    return [
        ("format", escape(model.format)),
        ("framework", escape(model.framework or "-")),
        ("created", output.when(model.created_at)),
        ("run", escape(model.run_id or "-")),
        ("experiment", escape(model.experiment or "-")),
        ("description", escape(model.description or "-")),
        ("tags", escape(output.pairs(model.tags))),
        ("properties", escape(output.pairs(model.properties))),
    ]


@app.command("download")
def download(
    ctx: typer.Context,
    model: ModelArg,
    to: Annotated[Path, typer.Option("--to", help="local folder to write the model's files into", file_okay=False)],
) -> None:
    """Download a model version's files, at their relative paths under --to."""
    ref = parse_model_ref(model)
    for path in client_from(ctx).download_model(ref.name, ref.version, dest=to):
        output.out.print(str(path), highlight=False)


@app.command("tag")
def tag(
    ctx: typer.Context,
    model: VersionedModelArg,
    set_: Annotated[list[str] | None, typer.Option("--set", help="set tag KEY=VALUE (repeatable)")] = None,
    remove: Annotated[list[str] | None, typer.Option("--remove", help="remove tag KEY (repeatable)")] = None,
    output_format: OutputOption = OutputFormat.TABLE,
) -> None:
    """Set or remove tags of a model version."""
    ref = parse_model_ref(model, require_version=True)
    assert ref.version is not None  # require_version guarantees it
    values = parse_pairs(set_, option="--set")
    if not values and not remove:
        raise typer.BadParameter("nothing to change: give --set KEY=VALUE or --remove KEY", param_hint="--set")
    updated = client_from(ctx).tag_model(ref.name, ref.version, set=values, remove=list(remove or ()))
    if output_format is OutputFormat.JSON:
        output.print_json(updated.to_dict())
    else:
        output.out.print(f"{escape(updated.ref)} tags: {escape(output.pairs(updated.tags))}", highlight=False)


@app.command("delete")
def delete(
    ctx: typer.Context,
    model: VersionedModelArg,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask for confirmation")] = False,
) -> None:
    """Delete a model version (refused while a deployment uses it)."""
    ref = parse_model_ref(model, require_version=True)
    if not yes:
        typer.confirm(f"delete model {ref}?", abort=True)
    assert ref.version is not None
    client_from(ctx).delete_model(ref.name, ref.version)
    output.out.print(f"deleted {escape(str(ref))}", highlight=False)
