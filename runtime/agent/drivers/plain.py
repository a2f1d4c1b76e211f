"""No sandbox: the module runs as a plain process with its image paths pointing into the unpacked root.

Used where bubblewrap is missing or does not work (reported as `agent.sandbox: none`). The module then sees the
whole host file system; only the paths on its command line are translated.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path, PurePosixPath

from edgewise.runtime.agent.drivers.base import (
    DATA_DIR,
    Command,
    LaunchSpec,
    agent_bin_path,
    module_env,
    score_args,
    score_settings,
    scoring_executable,
    under,
)
from edgewise.runtime.agent.drivers.forking import (
    ForkSpec,
    LauncherCommand,
    LauncherSpec,
    RootDir,
    launcher_argv,
    launcher_env,
)

ROOT = PurePosixPath("/")


class PlainSandbox:
    name = "none"

    def argv(self, launch: LaunchSpec) -> list[str]:
        return self.command(launch).argv

    def command(self, launch: LaunchSpec) -> Command:
        argv, env = self._argv_env(launch)
        return Command(argv=argv, env=env, cwd=Path(launch.data_dir))

    def fork_plan(self, launch: LaunchSpec, *, roots: tuple[RootDir, ...]) -> tuple[LauncherSpec, ForkSpec] | None:
        argv, env = self._argv_env(launch)
        executable = scoring_executable()
        fork = ForkSpec(
            module=launch.module,
            generation=launch.generation,
            args=tuple(argv[len(executable) :]),
            title=tuple(argv),
            env=env,
            cwd=str(launch.data_dir),
            settings=score_settings(argv[len(executable) :]),
        )
        return LauncherSpec.of(sandbox=self.name, env=env), fork

    def launcher_command(self, spec: LauncherSpec, *, control_fd: int) -> LauncherCommand:
        return LauncherCommand(
            argv=launcher_argv(sys.executable, control_fd=control_fd, sandbox=self.name),
            env=launcher_env(spec),
            cwd=Path("/"),
        )

    @staticmethod
    def _argv_env(launch: LaunchSpec) -> tuple[list[str], dict[str, str]]:
        def path_in_image(path: str) -> str:
            data = under(path, DATA_DIR)
            if data is not None:
                return str(launch.data_dir / data)
            rel = under(path, ROOT)
            if rel is not None:
                candidate = launch.rootfs / rel
                if os.path.lexists(candidate):
                    return str(candidate)
            return path

        sample = str(launch.sample_file) if launch.sample_file is not None else None
        argv = [*scoring_executable(), *score_args(launch, path_in_image=path_in_image, sample_file=sample)]
        env = module_env(launch, home=str(launch.data_dir), path=agent_bin_path())
        return argv, env
