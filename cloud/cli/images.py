"""`edgewise image ...`: build OCI images of registered models, list, show, export and delete them."""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from edgewise.cloud.cli import output
from edgewise.cloud.cli.activities import follow
from edgewise.cloud.cli.context import OutputOption, client_from
from edgewise.cloud.cli.output import OutputFormat
from edgewise.cloud.cli.parsing import parse_model_ref, parse_pairs, parse_tag_filters
from edgewise.cloud.store.records import ActivityStatus, Image
from rich.markup import escape
from rich.table import Table

app = typer.Typer(help="Image registry: OCI images of model versions and their scoring code.", no_args_is_help=True)

ImageArg = Annotated[str, typer.Argument(metavar="NAME[:VERSION]", help="image, latest version by default")]
VersionedImageArg = Annotated[str, typer.Argument(metavar="NAME:VERSION", help="image version")]
FORMATS = ("oci", "oci-archive", "docker-archive")


MAIN_RESOURCES = ("ICESTORM_LC", "ICESTORM_RAM", "ICESTORM_DSP")


class ImageKind(StrEnum):
    OCI = "oci"
    FPGA = "fpga"


def _image_ref(text: str, *, require_version: bool = False) -> tuple[str, int | None]:
    name, sep, version = text.partition(":")
    if not name:
        raise typer.BadParameter(f"{text!r} names no image: use NAME:VERSION, for example digits:1", param_hint="IMAGE")
    if not sep or version == "latest":
        if require_version:
            raise typer.BadParameter(f"{text!r} needs a version: use {name}:1", param_hint="IMAGE")
        return name, None
    if not version.isdigit() or int(version) < 1:
        raise typer.BadParameter(f"image version {version!r} in {text!r} is not a number >= 1", param_hint="IMAGE")
    return name, int(version)


@app.command("build")
def build(
    ctx: typer.Context,
    model: Annotated[str, typer.Option(metavar="NAME[:VERSION]", help="registered model (latest version default)")],
    name: Annotated[str, typer.Option(help="image name; each build adds the next version")],
    score: Annotated[
        Path | None, typer.Option(help="scoring script, shipped as score.py", exists=True, dir_okay=False)
    ] = None,
    requirements: Annotated[
        Path | None,
        typer.Option(
            help="pip requirements of the scoring script: recorded in the model's config.json and shipped as "
            "requirements.txt (not installed at build time)",
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    base: Annotated[
        str | None,
        typer.Option(
            metavar="REF",
            help="image to build on: oci:DIR[:REF] (or a layout folder), oci-archive:FILE[:REF], "
            "docker://HOST:PORT/REPO:TAG",
        ),
    ] = None,
    tag: Annotated[list[str] | None, typer.Option("--tag", help="tag KEY=VALUE (repeatable)")] = None,
    kind: Annotated[
        ImageKind, typer.Option(help="oci: the scoring server on the CPU; fpga: the model compiled for an FPGA")
    ] = ImageKind.OCI,
    device: Annotated[str | None, typer.Option(help="FPGA device (--kind fpga; default up5k)")] = None,
    parallelism: Annotated[
        int | None, typer.Option(min=1, help="multiply-accumulate units on the FPGA (--kind fpga; default 8)")
    ] = None,
    calibration: Annotated[
        Path | None,
        typer.Option(
            help="calibration data for quantization (--kind fpga): .npz with x (and labels y for the accuracy "
            "report), .npy or .csv; default: the model's own calibration.npz",
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    no_wait: Annotated[bool, typer.Option("--no-wait", help="print the build's activity id and return")] = False,
    output_format: OutputOption = OutputFormat.TABLE,
) -> None:
    """Build an image of a model version: an OCI image of the scoring server, or an FPGA image (--kind fpga)."""
    ref = parse_model_ref(model, param="--model")
    tags = parse_pairs(tag, option="--tag")
    fpga_only = {"--device": device, "--parallelism": parallelism, "--calibration": calibration}
    if kind is ImageKind.OCI and any(value is not None for value in fpga_only.values()):
        given = ", ".join(option for option, value in fpga_only.items() if value is not None)
        raise typer.BadParameter(f"{given} only apply with --kind fpga")
    client = client_from(ctx)
    activity = client.build_image(
        name=name, model=ref.name, model_version=ref.version, score=score, requirements=requirements, base=base,
        tags=tags, kind=kind.value, device=device, parallelism=parallelism, calibration=calibration,
    )  # fmt: skip
    if no_wait:
        if output_format is OutputFormat.JSON:
            output.print_json(activity.to_dict())
        else:
            output.out.print(activity.id, highlight=False)
        return
    ended = follow(client, activity, description=f"building {name}")
    if ended.status is not ActivityStatus.SUCCEEDED or ended.result is None:
        output.error(f"build {ended.id} failed: {ended.error or ended.message or 'no reason given'}")
        raise typer.Exit(1)
    image_name, _, version = ended.result.partition(":")
    image = client.get_image(image_name, int(version))
    if output_format is OutputFormat.JSON:
        output.print_json(image.to_dict())
    else:
        output.out.print(f"built {escape(image.ref)} {image.manifest_digest}", highlight=False)


@app.command("list")
def list_images(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Option(help="only versions of this image")] = None,
    tag: Annotated[
        list[str] | None, typer.Option("--tag", help="KEY (tag present) or KEY=VALUE (tag equal); repeatable")
    ] = None,
    limit: Annotated[int, typer.Option(help="at most this many images", min=1)] = 100,
    output_format: OutputOption = OutputFormat.TABLE,
) -> None:
    """List images, newest first."""
    images = client_from(ctx).list_images(name=name, tags=parse_tag_filters(tag), limit=limit)
    if output_format is OutputFormat.JSON:
        output.print_json([image.to_dict() for image in images])
        return
    table = Table()
    for column in ("name", "version", "models", "size", "digest", "created", "tags"):
        table.add_column(column, justify="right" if column in ("version", "size") else "left")
    for image in images:
        table.add_row(
            escape(image.name),
            str(image.version),
            escape(", ".join(image.models) or "-"),
            output.size(image.size),
            escape(image.manifest_digest[:19]),
            output.when(image.created_at),
            escape(output.pairs(image.tags)),
        )
    output.out.print(table)


@app.command("show")
def show(ctx: typer.Context, image: ImageArg, output_format: OutputOption = OutputFormat.TABLE) -> None:
    """One image version: digests, size, the models inside, the build that made it, and who uses it."""
    name, version = _image_ref(image)
    client = client_from(ctx)
    found = client.get_image(name, version)
    references = client.image_references(found.name, found.version)
    if output_format is OutputFormat.JSON:
        output.print_json({**found.to_dict(), "references": [r.to_dict() for r in references]})
        return
    output.key_values(f"image {escape(found.ref)}", _image_fields(found))
    if references:
        rows = [(escape(f"{r.kind} {r.name}"), "active" if r.active else "inactive") for r in references]
        output.key_values("\nused by", rows)


def _image_fields(image: Image) -> list[tuple[str, str]]:
    return [
        ("kind", image.kind),
        ("manifest", escape(image.manifest_digest)),
        ("config", escape(image.config_digest)),
        ("media type", escape(image.media_type)),
        ("size", output.size(image.size)),
        ("models", escape(", ".join(image.models) or "-")),
        ("model digest", escape(image.model_digest or "-")),
        ("base", escape(image.base or "-")),
        ("built by", escape(image.activity_id or "-")),
        ("created", output.when(image.created_at)),
        ("tags", escape(output.pairs(image.tags))),
        *_fpga_fields(image.details),
    ]


def _fpga_fields(details: dict[str, Any]) -> list[tuple[str, str]]:
    """An FPGA image's build report: resources out of available, Fmax against the target, cycles, accuracy."""
    if not details:
        return []
    fields: list[tuple[str, str]] = []
    for name, pair in (details.get("resources") or {}).items():
        used, available = pair
        if not used and name not in MAIN_RESOURCES:
            continue  # the UP5K's I2C, SPI, LED drivers and the like, unused by the design
        fields.append((escape(str(name)), f"{used} / {available} ({100 * used / max(available, 1):.0f}%)"))
    if "fmax_mhz" in details:
        fields.append(("Fmax", f"{details['fmax_mhz']:.1f} MHz (target {details.get('target_mhz', '?')} MHz)"))
    if "cycles" in details:
        fields.append(("cycles per inference", str(details["cycles"])))
    accuracy = details.get("accuracy") or {}
    if "integer_accuracy" in accuracy:
        fields.append(
            ("accuracy", f"{accuracy['integer_accuracy']:.4f} integer, {accuracy['float_accuracy']:.4f} float")
        )
    if "build" in details:
        fields.append(("bitstream", escape(str(details["build"]))))
    return fields


@app.command("export")
def export(
    ctx: typer.Context,
    image: ImageArg,
    format: Annotated[str, typer.Option("--format", help="oci (a layout folder), oci-archive or docker-archive")],
    to: Annotated[Path, typer.Option("--output-path", "-o", help="where to write the folder or archive")],
    ref: Annotated[
        str | None,
        typer.Option("--ref", help="ref name in the layout (default NAME-VERSION) or docker tag (edgewise/NAME:V)"),
    ] = None,
) -> None:
    """Write an image locally, for skopeo, umoci, docker load or podman."""
    if format not in FORMATS:
        raise typer.BadParameter(f"unknown format {format!r}; use one of {', '.join(FORMATS)}", param_hint="--format")
    name, version = _image_ref(image)
    written = client_from(ctx).export_image(name, version, format=format, dest=to, ref_name=ref)
    output.out.print(str(written), highlight=False)


@app.command("delete")
def delete(
    ctx: typer.Context,
    image: VersionedImageArg,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask for confirmation")] = False,
) -> None:
    """Delete an image version (refused while a deployment uses it)."""
    name, version = _image_ref(image, require_version=True)
    assert version is not None
    if not yes:
        typer.confirm(f"delete image {name}:{version}?", abort=True)
    client_from(ctx).delete_image(name, version)
    output.out.print(f"deleted {escape(name)}:{version}", highlight=False)


@app.command("push")
def push(
    ctx: typer.Context,
    image: ImageArg,
    to: Annotated[
        str, typer.Option("--to", help="HOST:PORT/REPO[:TAG] of the registry (the tag defaults to the version)")
    ],
    username: Annotated[str | None, typer.Option("--username", "-u", help="registry user (basic auth)")] = None,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="read the registry password from stdin")
    ] = False,
) -> None:
    """Push an image to an OCI registry; blobs it already has are not sent again."""
    name, version = _image_ref(image)
    password = sys.stdin.readline().rstrip("\n") if password_stdin else None
    if password_stdin and username is None:
        raise typer.BadParameter("--password-stdin needs --username", param_hint="--username")
    sent: dict[str, bool] = {}

    def progress(event: Any) -> None:
        if event.skipped or event.done >= event.size:
            sent[event.digest] = not event.skipped

    digest = client_from(ctx).push_image(
        name, version, target=to.removeprefix("docker://"), username=username, password=password, progress=progress
    )
    uploaded = sum(sent.values())
    output.err.print(f"{uploaded} blob(s) uploaded, {len(sent) - uploaded} already there", highlight=False)
    output.out.print(digest, highlight=False)
