"""The few Linux system calls the module launcher needs and the standard library lacks (Python 3.11):
namespaces, mounts, capabilities, process names. Each raises OSError with the call and its target on failure.
"""

from __future__ import annotations

import ctypes
import functools
import os
from pathlib import Path

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWPID = 0x20000000

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000

_PR_SET_NAME = 15
_PR_CAPBSET_DROP = 24
_PR_SET_NO_NEW_PRIVS = 38
_PR_CAP_AMBIENT = 47
_PR_CAP_AMBIENT_CLEAR_ALL = 4
_CAPABILITY_VERSION_3 = 0x20080522

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
_libc.unshare.argtypes = [ctypes.c_int]
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
_libc.sethostname.argtypes = [ctypes.c_char_p, ctypes.c_size_t]


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def unshare(flags: int) -> None:
    _check(_libc.unshare(flags), "unshare")


def setns(fd: int, nstype: int) -> None:
    _check(_libc.setns(fd, nstype), "setns")


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    _check(
        _libc.mount(
            os.fsencode(source) if source is not None else None,
            os.fsencode(target),
            fstype.encode() if fstype is not None else None,
            flags,
            data.encode() if data is not None else None,
        ),
        f"mount {fstype or 'bind'} {source or ''} on {target}",
    )


def make_private(target: str = "/") -> None:
    """Mount events below `target` no longer propagate to or from the parent mount namespace."""
    mount(None, target, None, MS_REC | MS_PRIVATE)


def bind(source: str, target: str, *, writable: bool) -> None:
    mount(source, target, None, MS_BIND | MS_REC)
    if not writable:
        remount_read_only(target)


def remount_read_only(target: str) -> None:
    """Read-only for this mount only (a bind remount leaves the file system's other mounts as they are)."""
    mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)


def tmpfs(target: str, *, mode: int = 0o755) -> None:
    mount("tmpfs", target, "tmpfs", MS_NOSUID | MS_NODEV, f"mode={mode:o}")


def sethostname(name: str) -> None:
    raw = name.encode()
    _check(_libc.sethostname(raw, len(raw)), "sethostname")


def set_process_name(name: str) -> None:
    """The name `ps` and /proc/<pid>/comm show (at most 15 bytes)."""
    buffer = ctypes.create_string_buffer(name.encode()[:15])
    _check(_libc.prctl(_PR_SET_NAME, ctypes.addressof(buffer), 0, 0, 0), "prctl(PR_SET_NAME)")


def drop_capabilities() -> None:
    """Drop every capability for good (bounding, ambient, effective, permitted, inheritable) and forbid gaining
    privileges through exec: the process keeps its uid but can no more than an unprivileged one could."""
    _check(_libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(PR_SET_NO_NEW_PRIVS)")
    for cap in range(last_capability() + 1):
        _check(_libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0), f"prctl(PR_CAPBSET_DROP, {cap})")
    _check(_libc.prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0), "prctl(PR_CAP_AMBIENT_CLEAR_ALL)")
    header = _CapHeader(_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    _check(_libc.capset(ctypes.byref(header), data), "capset")


@functools.cache
def last_capability() -> int:
    """The highest capability number this kernel knows (read once: a forked process inherits it)."""
    return int(Path("/proc/sys/kernel/cap_last_cap").read_text())


@functools.cache
def _areas() -> tuple[int, int, int, int]:
    """Where this process's original argument and environment strings lie (what /proc/<pid>/cmdline and
    /proc/<pid>/environ read): proc(5) fields 48 to 51, arg_start, arg_end, env_start, env_end. They stay put for
    the life of the process and a forked child has them at the same addresses, so they are read once."""
    raw = Path("/proc/self/stat").read_text()
    fields = raw[raw.rindex(")") + 2 :].split()
    return int(fields[45]), int(fields[46]), int(fields[47]), int(fields[48])


def _overwrite(start: int, end: int, items: list[bytes]) -> bool:
    room = end - start
    text = b"".join(item + b"\0" for item in items)
    if not items or room <= 1 or len(items[0]) + 1 > room:
        return False
    text = text[: room - 1] + b"\0"
    ctypes.memmove(start, text.ljust(room, b"\0"), room)
    return True


def set_command_line(argv: list[str]) -> bool:
    """Show `argv` as this process's command line, in place of the original one (truncated to its room).

    Python keeps its own copies of the arguments, so writing over the originals is safe. False when there is no
    room for even the first argument.
    """
    start, end, _, _ = _areas()
    return _overwrite(start, end, [os.fsencode(arg) for arg in argv])


def set_environment_strings(env: dict[str, str]) -> bool:
    """Show `env` as this process's initial environment (/proc/<pid>/environ), truncated to the room there.

    Only safe once no environment pointer refers to the original strings any more: after every variable was
    set again (`detach_environment`) or unset.
    """
    _, _, start, end = _areas()
    return _overwrite(start, end, [os.fsencode(f"{key}={value}") for key, value in env.items()])


def detach_environment() -> None:
    """Set every environment variable again, so that the C environment points at copies and no longer at the
    original strings: `set_environment_strings` may then write over them (here or in a forked child)."""
    for key, value in list(os.environ.items()):
        os.environ[key] = value
