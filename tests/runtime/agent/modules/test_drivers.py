"""Sandbox drivers: the command line a module gets, with and without bubblewrap."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from edgewise.runtime.agent.drivers import BubblewrapSandbox, PlainSandbox, choose_sandbox
from edgewise.runtime.agent.drivers.base import strip_owned_options
from edgewise.runtime.agent.errors import ConfigError, ModuleError
from edgewise.runtime.agent.model import ModuleSettings

from tests.runtime.agent.modules.conftest import HAVE_BWRAP, LaunchFactory, needs_bwrap


def option(argv: list[str], name: str) -> list[str]:
    return [argv[i + 1] for i, arg in enumerate(argv) if arg == name]


def test_strip_owned_options_drops_both_forms_and_flags() -> None:
    args = ["--model-repository", "/m", "--host", "0.0.0.0", "--http-port=80", "--metrics", "--log-level", "info"]
    args += ["--repository-poll-secs", "5"]
    assert strip_owned_options(args) == ["--model-repository", "/m", "--log-level", "info"]


def test_plain_command_points_into_the_rootfs(make_launch: LaunchFactory) -> None:
    settings = ModuleSettings(http_port=9100, grpc_port=9101, host="127.0.0.1", metrics=False)
    launch = make_launch(settings=settings, sample_file=Path("/tmp/x/samples.jsonl"), sample_rate=0.25)
    command = PlainSandbox().command(launch)
    argv = command.argv
    assert Path(argv[0]).parent == Path(sys.executable).parent and argv[0].endswith("edgewise-score")
    assert option(argv, "--model-repository") == [str(launch.rootfs / "var/lib/edgewise/models")]
    # The image said 0.0.0.0:8000/8001; the module's settings win, and only once.
    assert option(argv, "--host") == ["127.0.0.1"]
    assert option(argv, "--http-port") == ["9100"] and option(argv, "--grpc-port") == ["9101"]
    assert option(argv, "--admin-socket-dir") == [str(launch.admin_dir)]
    assert option(argv, "--sample-file") == ["/tmp/x/samples.jsonl"] and option(argv, "--sample-rate") == ["0.25"]
    assert "--metrics" not in argv and "--defer-listen" not in argv
    assert option(argv, "--log-level") == ["info"]  # the image's Cmd is kept
    assert option(argv, "--repository-poll-secs") == ["0"]  # the image's repository never changes
    assert command.cwd == launch.data_dir
    assert command.env["HOME"] == str(launch.data_dir)
    assert command.env["OMP_NUM_THREADS"] == "1" and command.env["MODEL_NAME"] == "iris"


def test_metrics_and_defer_listen_flags(make_launch: LaunchFactory) -> None:
    launch = make_launch(defer_listen=True)
    argv = PlainSandbox().argv(launch)
    assert "--metrics" in argv and "--defer-listen" in argv


def test_bubblewrap_layout(make_launch: LaunchFactory) -> None:
    launch = make_launch(sample_file=None)
    command = BubblewrapSandbox().command(launch)
    argv = command.argv
    sep = argv.index("--")
    outer, inner = argv[:sep], argv[sep + 1 :]
    assert outer[0] == "bwrap"
    for flag in ("--unshare-pid", "--unshare-ipc", "--unshare-uts", "--new-session"):
        assert flag in outer
    # Modules outlive the agent, and serve on the host's network.
    assert "--die-with-parent" not in outer and "--unshare-net" not in outer
    binds = {(outer[i + 1], outer[i + 2]) for i, arg in enumerate(outer) if arg == "--bind"}
    ro_binds = {(outer[i + 1], outer[i + 2]) for i, arg in enumerate(outer) if arg == "--ro-bind"}
    assert (str(launch.data_dir), "/var/lib/edgewise/data") in binds
    assert (str(launch.admin_dir), str(launch.admin_dir)) in binds
    assert len(binds) == 2  # nothing else is writable
    assert (str(launch.rootfs), "/image") in ro_binds
    assert (str(launch.rootfs / "var/lib/edgewise/models"), "/var/lib/edgewise/models") in ro_binds
    assert (str(launch.rootfs / "etc/edgewise/module.json"), "/etc/edgewise/module.json") in ro_binds
    assert (sys.prefix, sys.prefix) in ro_binds or any(sys.prefix.startswith(src + "/") for src, _ in ro_binds)
    assert ("/usr", "/usr") in ro_binds
    assert ("/etc/hosts", "/etc/hosts") in ro_binds and ("/etc/shadow", "/etc/shadow") not in ro_binds
    assert outer[outer.index("--remount-ro") + 1] == "/etc"
    assert "--tmpfs" in outer and option(outer, "--proc") == ["/proc"]
    assert option(inner, "--model-repository") == ["/var/lib/edgewise/models"]
    assert command.env["HOME"] == "/var/lib/edgewise/data"


def test_bubblewrap_sample_file_in_data_dir_is_translated(make_launch: LaunchFactory, tmp_path: Path) -> None:
    launch = make_launch(sample_file=tmp_path / "data" / "samples.jsonl", sample_rate=0.5)
    argv = BubblewrapSandbox().argv(launch)
    assert option(argv, "--sample-file") == ["/var/lib/edgewise/data/samples.jsonl"]


def test_image_that_is_not_a_scoring_server_is_refused(make_launch: LaunchFactory) -> None:
    launch = make_launch(image_config={"Entrypoint": ["/bin/sh", "-c", "evil"]})
    with pytest.raises(ModuleError, match="only edgewise-score images"):
        PlainSandbox().argv(launch)
    with pytest.raises(ModuleError, match="no entrypoint"):
        PlainSandbox().argv(make_launch(2, image_config={}))


def test_choose_sandbox() -> None:
    assert choose_sandbox("none").name == "none"
    assert choose_sandbox("auto").name == ("bubblewrap" if HAVE_BWRAP else "none")
    with pytest.raises(ConfigError):
        choose_sandbox("docker")


@needs_bwrap
def test_choose_bubblewrap_when_asked() -> None:
    assert choose_sandbox("bubblewrap").name == "bubblewrap"
