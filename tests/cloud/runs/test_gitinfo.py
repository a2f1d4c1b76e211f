"""Git information of real repositories made in temporary folders."""

from __future__ import annotations

import subprocess
from pathlib import Path

from edgewise.cloud.runs.gitinfo import git_info, strip_credentials


def git(repo: Path, *args: str) -> str:
    result = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True)
    return result.stdout.strip()


def make_repo(path: Path) -> Path:
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    git(path, "config", "user.name", "Test User")
    git(path, "config", "user.email", "test@example.invalid")
    git(path, "config", "commit.gpgsign", "false")
    (path / ".gitignore").write_text("*.log\n")
    (path / "train.py").write_text("print('hi')\n")
    git(path, "add", ".")
    git(path, "commit", "-q", "-m", "first")
    return path


def test_no_repository(tmp_path: Path) -> None:
    (tmp_path / "plain").mkdir()
    assert git_info(tmp_path / "plain") is None


def test_a_missing_folder_gives_nothing(tmp_path: Path) -> None:
    assert git_info(tmp_path / "missing") is None


def test_clean_repository_with_origin(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    git(repo, "remote", "add", "backup", "https://example.invalid/backup.git")
    git(repo, "remote", "add", "origin", "https://alice:s3cret@example.invalid/team/repo.git")
    info = git_info(repo)
    assert info is not None
    assert info.url == "https://example.invalid/team/repo.git"
    assert info.branch == "main" and info.commit == git(repo, "rev-parse", "HEAD") and info.dirty is False


def test_a_subfolder_reports_its_repository_and_the_first_remote_without_origin(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    (repo / "src").mkdir()
    git(repo, "remote", "add", "upstream", "git@example.invalid:team/repo.git")
    info = git_info(repo / "src")
    assert info is not None and info.url == "git@example.invalid:team/repo.git" and info.dirty is False


def test_ignored_files_keep_it_clean_untracked_and_modified_make_it_dirty(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    (repo / "debug.log").write_text("ignored\n")
    info = git_info(repo)
    assert info is not None and info.dirty is False and info.url is None
    (repo / "new.py").write_text("untracked\n")
    assert (info := git_info(repo)) is not None and info.dirty is True
    (repo / "new.py").unlink()
    (repo / "train.py").write_text("print('changed')\n")
    assert (info := git_info(repo)) is not None and info.dirty is True


def test_detached_head_has_no_branch(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    commit = git(repo, "rev-parse", "HEAD")
    git(repo, "checkout", "-q", "--detach", commit)
    info = git_info(repo)
    assert info is not None and info.branch is None and info.commit == commit


def test_a_repository_without_commits(tmp_path: Path) -> None:
    repo = tmp_path / "empty"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    info = git_info(repo)
    assert info is not None and info.commit is None and info.branch == "main" and info.dirty is False


def test_strip_credentials() -> None:
    assert strip_credentials("https://token@example.invalid/r.git") == "https://example.invalid/r.git"
    assert strip_credentials("http://u:p@example.invalid:8080/r") == "http://example.invalid:8080/r"
    assert strip_credentials("ssh://git@example.invalid/r.git") == "ssh://git@example.invalid/r.git"
    assert strip_credentials("/srv/git/r.git") == "/srv/git/r.git"
