"""`.edgewise/run.yml` files and command-line flags."""

from __future__ import annotations

from pathlib import Path

import pytest
from edgewise.cloud.errors import InvalidInputError
from edgewise.cloud.runs.runconfig import RunConfig, load_runconfig, merge

EXAMPLE = """
script: train.py
arguments: ["--epochs", 5]
requirements: requirements.txt
compute: local
experiment: digits
environment: {OMP_NUM_THREADS: "1", SEED: 7}
name: baseline
tags: {team: vision}
"""


def write_config(source: Path, text: str, name: str = "run.yml") -> Path:
    path = source / ".edgewise" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_the_default_file_is_read(tmp_path: Path) -> None:
    write_config(tmp_path, EXAMPLE)
    config = load_runconfig(tmp_path)
    assert config == RunConfig(
        script="train.py",
        arguments=("--epochs", "5"),
        requirements="requirements.txt",
        compute="local",
        experiment="digits",
        environment={"OMP_NUM_THREADS": "1", "SEED": "7"},
        name="baseline",
        tags={"team": "vision"},
    )


def test_no_file_gives_the_defaults_and_an_empty_file_too(tmp_path: Path) -> None:
    assert load_runconfig(tmp_path) == RunConfig()
    write_config(tmp_path, "# nothing yet\n")
    assert load_runconfig(tmp_path) == RunConfig(compute="local")


def test_an_explicit_file(tmp_path: Path) -> None:
    path = tmp_path / "elsewhere.yml"
    path.write_text("script: other.py\n")
    write_config(tmp_path, EXAMPLE)
    assert load_runconfig(tmp_path, path).script == "other.py"


def test_an_explicit_file_that_is_missing(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match=r"nope\.yml does not exist"):
        load_runconfig(tmp_path, tmp_path / "nope.yml")


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("script: train.py\nepochs: 5\n", r"unknown key 'epochs' in .*run\.yml"),
        ("script: [train.py]\n", r"'script' in .*run\.yml must be a non-empty string"),
        ("arguments: --epochs 5\n", r"'arguments' in .*run\.yml must be a list"),
        ("arguments: [--epochs, {a: 1}]\n", r"'arguments\[1\]' in .*run\.yml must be a string"),
        ("environment: [A=1]\n", r"'environment' in .*run\.yml must be a mapping"),
        ("tags: {team: [a]}\n", r"'tags.team' in .*run\.yml must be a string"),
        ("experiment: 'bad name!'\n", r"'experiment' in .*run\.yml: invalid experiment name"),
        ("- just\n- a list\n", r"run\.yml must be a mapping"),
        ("script: [unclosed\n", r"run\.yml is not valid YAML at line"),
    ],
)
def test_errors_name_the_key_and_the_file(tmp_path: Path, text: str, pattern: str) -> None:
    write_config(tmp_path, text)
    with pytest.raises(InvalidInputError, match=pattern):
        load_runconfig(tmp_path)


def test_flags_override_the_file(tmp_path: Path) -> None:
    write_config(tmp_path, EXAMPLE)
    config = merge(
        load_runconfig(tmp_path),
        script="eval.py",
        arguments=["--fast"],
        experiment=None,
        environment={"SEED": "8", "EXTRA": "1"},
        tags=None,
    )
    assert config.script == "eval.py" and config.arguments == ("--fast",)
    assert config.experiment == "digits" and config.tags == {"team": "vision"}
    assert config.environment == {"OMP_NUM_THREADS": "1", "SEED": "8", "EXTRA": "1"}


def test_merge_refuses_unknown_settings_and_bad_values() -> None:
    with pytest.raises(InvalidInputError, match="unknown run configuration setting 'epochs'"):
        merge(RunConfig(), epochs=5)
    with pytest.raises(InvalidInputError, match="'experiment' in the command line"):
        merge(RunConfig(), experiment="../x")
