"""No sandbox: the module runs as a plain process with its image paths pointing into the unpacked root.

Used where bubblewrap is missing or does not work (reported as `agent.sandbox: none`). The module then sees the
whole host file system; only the paths on its command line are translated.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from edgewise.runtime.agent.drivers.base import (
    DATA_DIR,
    Command,
    LaunchSpec,
    agent_bin_path,
    module_env,
    score_argv,
    under,
)

ROOT = PurePosixPath("/")


class PlainSandbox:
    name = "none"

    def argv(self, launch: LaunchSpec) -> list[str]:
        return self.command(launch).argv

    def command(self, launch: LaunchSpec) -> Command:
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
        argv = score_argv(launch, path_in_image=path_in_image, sample_file=sample)
        env = module_env(launch, home=str(launch.data_dir), path=agent_bin_path())
        return Command(argv=argv, env=env, cwd=Path(launch.data_dir))
