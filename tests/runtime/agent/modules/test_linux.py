"""The process-title helpers a forked module uses: what /proc shows changes, what the C library reads does not."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

_CHILD = textwrap.dedent(
    """
    import ctypes, json, os
    from edgewise.runtime.agent import linux

    libc = ctypes.CDLL(None)
    libc.getenv.restype = ctypes.c_char_p
    linux.detach_environment()
    shown = linux.set_environment_strings({"SHOWN": "only-in-proc"})
    linux.set_command_line(["renamed", "--flag"])
    pid = os.fork()
    if pid == 0:  # a forked child reuses the areas its parent found
        os.environ["GREETING"] = "hello from the child"
        linux.set_environment_strings({"CHILD": "yes"})
        with open("/proc/self/environ", "rb") as f:
            os.write(1, f.read().split(b"\\0")[0] + b"\\n")
        os._exit(0)
    os.waitpid(pid, 0)
    print(json.dumps({
        "shown": shown,
        "c_getenv": {k: (libc.getenv(k.encode()) or b"").decode() for k in ("GREETING", "PADDING")},
        "proc_environ": open("/proc/self/environ", "rb").read().split(b"\\0")[0].decode(),
        "proc_cmdline": open("/proc/self/cmdline", "rb").read().split(b"\\0")[:2],
    }, default=lambda b: b.decode()))
    """
)


def test_the_shown_environment_is_rewritten_while_the_c_library_keeps_reading_the_real_one() -> None:
    env = {**os.environ, "GREETING": "hello", "PADDING": "x" * 200}
    done = subprocess.run(
        [sys.executable, "-c", _CHILD], env=env, capture_output=True, text=True, timeout=60, check=True
    )
    child_line, report = done.stdout.splitlines()[0], json.loads(done.stdout.splitlines()[-1])
    assert child_line == "CHILD=yes"
    assert report["shown"] is True
    assert report["proc_environ"] == "SHOWN=only-in-proc"
    assert report["c_getenv"] == {"GREETING": "hello", "PADDING": "x" * 200}
    assert report["proc_cmdline"] == ["renamed", "--flag"]
