"""Where the submitted code came from: remote URL, branch, commit and whether it had uncommitted changes.

Recorded with every run so a result can be traced back to its code. It is best effort by design: no git
binary, a folder outside a repository, a repository git refuses to read or a slow filesystem must never stop
a submission, so every failure simply means "no information".
"""

from __future__ import annotations

import os
import subprocess
import urllib.parse
from pathlib import Path

from edgewise.cloud.store.records import GitInfo

GIT_TIMEOUT = 5.0  # seconds per git command


def git_info(source: Path) -> GitInfo | None:
    """The git state of the repository containing `source`, or None outside a git work tree."""
    try:
        return _git_info(Path(source))
    except Exception:  # best effort: a submission never fails for want of git information
        return None


def _git_info(source: Path) -> GitInfo | None:
    if _git(source, "rev-parse", "--is-inside-work-tree") != "true":
        return None
    commit = _git(source, "rev-parse", "--verify", "--quiet", "HEAD")
    branch = _git(source, "symbolic-ref", "--quiet", "--short", "HEAD")
    status = _git(source, "status", "--porcelain", "--untracked-files=normal", "--ignore-submodules=none")
    return GitInfo(
        url=_remote_url(source),
        branch=branch or None,
        commit=commit or None,
        dirty=bool(status),
    )


def _remote_url(source: Path) -> str | None:
    remotes = (_git(source, "remote") or "").split()
    if not remotes:
        return None
    name = "origin" if "origin" in remotes else remotes[0]
    url = _git(source, "remote", "get-url", name)
    return strip_credentials(url) if url else None


def strip_credentials(url: str) -> str:
    """Drop a user name and password (or token) from an http(s) URL; other URLs are returned unchanged."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return url
    if parts.scheme.lower() not in ("http", "https") or "@" not in parts.netloc:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit(parts._replace(netloc=host))


def _git(source: Path, *args: str) -> str | None:
    """The stripped output of a git command, or None when it fails or takes too long."""
    env = dict(os.environ)
    env.update(
        {
            "GIT_TERMINAL_PROMPT": "0",  # never wait for credentials
            "GIT_OPTIONAL_LOCKS": "0",  # `git status` must not take the index lock of a repository in use
            "LC_ALL": "C",
        }
    )
    try:
        result = subprocess.run(
            ["git", "-C", str(source), *args],
            capture_output=True,
            stdin=subprocess.DEVNULL,
            env=env,
            timeout=GIT_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if result.returncode != 0:
        return None
    return result.stdout.decode("utf-8", errors="replace").strip()
