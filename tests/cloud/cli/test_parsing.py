"""Unit tests of the command line's small value languages and of its usage errors (no service needed)."""

from __future__ import annotations

import pytest
import typer
from edgewise.cloud.cli.app import app
from edgewise.cloud.cli.output import duration, size
from edgewise.cloud.cli.parsing import ModelRef, parse_model_ref, parse_pairs, parse_tag_filters
from typer.testing import CliRunner


def test_pairs_split_on_the_first_equals_sign() -> None:
    assert parse_pairs(["team=vision", "query=a=b", "empty="]) == {"team": "vision", "query": "a=b", "empty": ""}
    assert parse_pairs(None) == {}
    assert parse_pairs(["k=1", "k=2"]) == {"k": "2"}


@pytest.mark.parametrize("bad", ["novalue", "=value", " =x", ""])
def test_pairs_without_a_key_or_equals_sign_are_usage_errors(bad: str) -> None:
    with pytest.raises(typer.BadParameter, match="KEY=VALUE") as info:
        parse_pairs([bad], option="--tag")
    assert info.value.param_hint == "--tag"


def test_tag_filters_take_keys_alone_or_with_values() -> None:
    assert parse_tag_filters(["stage", "team=vision", "note="]) == {"stage": None, "team": "vision", "note": ""}
    with pytest.raises(typer.BadParameter, match="no key"):
        parse_tag_filters(["=prod"])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("digits", ModelRef(name="digits")),
        ("digits:latest", ModelRef(name="digits")),
        ("digits:3", ModelRef(name="digits", version=3)),
    ],
)
def test_model_refs(text: str, expected: ModelRef) -> None:
    assert parse_model_ref(text) == expected


@pytest.mark.parametrize("bad", [":3", "digits:0", "digits:v2", "digits:-1", "digits:1.5"])
def test_bad_model_refs_are_usage_errors(bad: str) -> None:
    with pytest.raises(typer.BadParameter):
        parse_model_ref(bad)


def test_operations_on_one_version_need_its_number() -> None:
    assert parse_model_ref("digits:2", require_version=True).version == 2
    for text in ("digits", "digits:latest"):
        with pytest.raises(typer.BadParameter, match="needs a version number"):
            parse_model_ref(text, require_version=True)


def test_model_ref_prints_as_typed() -> None:
    assert str(ModelRef(name="digits", version=4)) == "digits:4"
    assert str(ModelRef(name="digits")) == "digits"


def test_durations_and_sizes_read_naturally() -> None:
    assert duration(None) == "-"
    assert duration(2.345) == "2.3s"
    assert duration(125) == "2m 05s"
    assert duration(3 * 3600 + 61) == "3h 01m 01s"
    assert size(512) == "512 B"
    assert size(3 * 1024 * 1024) == "3.0 MiB"


@pytest.mark.parametrize(
    "args",
    [
        ["model", "register", "--name", "m"],  # neither --run nor --file
        ["model", "register", "--name", "m", "--run", "abc"],  # --run without --path
        ["model", "tag", "digits", "--set", "a=b"],  # no version
        ["model", "tag", "digits:1"],  # nothing to change
        ["model", "delete", "digits:latest", "--yes"],
        ["model", "show", "digits:zero"],
        ["model", "list", "--tag", "=x"],
        ["run", "list", "--output", "yaml"],
        ["run", "logs", "abc", "--stream", "stdin"],
        ["run", "submit", "--experiment", "e", "--script", "t.py", "--tag", "novalue"],
        ["run", "submit", "--experiment", "e", "--script", "t.py", "--env", "NOVALUE"],
    ],
)
def test_usage_errors_exit_with_2_before_any_request(args: list[str]) -> None:
    # The URL points at a port nobody listens on: any request would turn into exit code 1, not 2.
    result = CliRunner().invoke(app, ["--url", "http://127.0.0.1:9", *args])
    assert result.exit_code == 2, result.output


def test_version_flag_prints_the_version() -> None:
    from edgewise import __version__

    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"edgewise {__version__}"
