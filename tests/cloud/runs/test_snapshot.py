"""Snapshots of real folders: ignore rules, links, limits and hashing."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from edgewise.cloud.errors import SnapshotTooLargeError, UnsafePathError
from edgewise.cloud.runs.snapshot import hash_snapshot, take_snapshot


def write(root: Path, files: dict[str, str | bytes]) -> Path:
    for relative, content in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    return root


def paths(source: Path) -> list[str]:
    return [f.path for f in take_snapshot(source).files]


def test_nested_gitignore_edgewiseignore_and_git_folder(tmp_path: Path) -> None:
    source = write(
        tmp_path / "src",
        {
            "train.py": "print(1)\n",
            ".gitignore": "*.log\n__pycache__/\n/build/\n",
            ".edgewiseignore": "data/raw/\n!keep.log\n",
            "keep.log": "kept: re-included by .edgewiseignore\n",
            "debug.log": "ignored by the root .gitignore\n",
            "__pycache__/x.pyc": b"\x00",
            "build/out.bin": b"\x01",
            "lib/build/kept.txt": "only /build/ at the root is ignored\n",
            "lib/.gitignore": "*.tmp\n!important.tmp\nsecret.txt\n",
            "lib/a.tmp": "x",
            "lib/important.tmp": "kept by a negation in the nested file",
            "lib/secret.txt": "ignored by the nested file only",
            "secret.txt": "the nested rule does not apply at the root",
            "lib/deep/b.tmp": "nested rules apply below their folder",
            "lib/deep/notes.log": "root rules apply everywhere",
            "data/raw/huge.csv": "1,2,3\n",
            "data/clean.csv": "1\n",
            ".git/HEAD": "ref: refs/heads/main\n",
            "sub/.git": "gitdir: ../.git/modules/sub\n",
        },
    )
    assert paths(source) == [
        ".edgewiseignore",
        ".gitignore",
        "data/clean.csv",
        "keep.log",
        "lib/.gitignore",
        "lib/build/kept.txt",
        "lib/important.tmp",
        "secret.txt",
        "train.py",
    ]


def test_files_carry_sizes_modes_and_hashes(tmp_path: Path) -> None:
    source = write(tmp_path / "src", {"run.sh": "echo hi\n", "a/b.bin": b"\x00" * 5000})
    os.chmod(source / "run.sh", 0o755)
    snapshot = take_snapshot(source)
    assert snapshot.total_bytes == 5000 + 8
    by_path = {f.path: f for f in snapshot.files}
    assert by_path["run.sh"].mode == 0o755 and by_path["a/b.bin"].size == 5000
    entries = {e.path: e for e in hash_snapshot(snapshot)}
    assert entries["a/b.bin"].digest == "sha256:" + hashlib.sha256(b"\x00" * 5000).hexdigest()
    assert entries["run.sh"].mode == 0o755 and entries["run.sh"].size == 8


def test_a_link_inside_the_source_is_stored_as_the_file(tmp_path: Path) -> None:
    source = write(tmp_path / "src", {"data/real.csv": "a\n", "train.py": "x"})
    (source / "alias.csv").symlink_to("data/real.csv")
    (source / "data-link").symlink_to("data", target_is_directory=True)
    snapshot = take_snapshot(source)
    assert [f.path for f in snapshot.files] == ["alias.csv", "data-link/real.csv", "data/real.csv", "train.py"]
    alias = next(f for f in snapshot.files if f.path == "alias.csv")
    assert alias.abspath == (source / "data/real.csv").resolve() and alias.size == 2


def test_a_link_outside_the_source_is_refused_by_name(tmp_path: Path) -> None:
    outside = write(tmp_path / "outside", {"secret.txt": "s"})
    source = write(tmp_path / "src", {"train.py": "x"})
    (source / "leak.txt").symlink_to(outside / "secret.txt")
    with pytest.raises(UnsafePathError, match=r"leak\.txt.*outside the source"):
        take_snapshot(source)
    (source / ".edgewiseignore").write_text("leak.txt\n")
    assert paths(source) == [".edgewiseignore", "train.py"]


def test_a_dangling_link_is_refused_by_name(tmp_path: Path) -> None:
    source = write(tmp_path / "src", {"train.py": "x"})
    (source / "sub").mkdir()
    (source / "sub" / "gone.txt").symlink_to(tmp_path / "nowhere")
    with pytest.raises(UnsafePathError, match=r"sub/gone\.txt.*dangling"):
        take_snapshot(source)


def test_a_link_loop_is_refused(tmp_path: Path) -> None:
    source = write(tmp_path / "src", {"a/train.py": "x"})
    (source / "a" / "loop").symlink_to("..", target_is_directory=True)
    with pytest.raises(UnsafePathError, match=r"a/loop.*loop"):
        take_snapshot(source)


def test_too_many_bytes_names_the_biggest_offenders(tmp_path: Path) -> None:
    source = write(
        tmp_path / "src",
        {
            "train.py": "x",
            "data/big/model.bin": b"\x00" * 60_000,
            "data/small.csv": b"\x00" * 10,
            "checkpoints/a.pt": b"\x00" * 20_000,
            "checkpoints/b.pt": b"\x00" * 20_000,
            "notes.txt": b"\x00" * 1_500,
        },
    )
    with pytest.raises(SnapshotTooLargeError) as caught:
        take_snapshot(source, max_bytes=50_000)
    message = str(caught.value)
    assert "6 files" in message and "99.1 KiB" in message and "48.8 KiB" in message
    # the folder that is big because of one file is named by that file; a folder of several stays a folder
    lines = message.splitlines()
    offenders = [line.strip().split()[0] for line in lines if line.startswith("  ")]
    assert offenders[:3] == ["data/big/model.bin", "checkpoints/", "notes.txt"]
    assert ".edgewiseignore" in message and "/data/big/model.bin" in message


def test_too_many_files_names_the_folders_with_most_files(tmp_path: Path) -> None:
    source = write(tmp_path / "src", {"train.py": "x"})
    write(source, {f"cache/{i:04d}.npy": "1" for i in range(30)})
    write(source, {f"images/{i:04d}.png": "1" for i in range(12)})
    with pytest.raises(SnapshotTooLargeError) as caught:
        take_snapshot(source, max_files=20)
    message = str(caught.value)
    assert "43 files" in message and "limits: 20 files" in message
    assert "cache/  30 B in 30 files" in message and "images/  12 B in 12 files" in message
    (source / ".edgewiseignore").write_text("cache/\n")
    assert len(take_snapshot(source, max_files=20).files) == 14


def test_two_thousand_small_files(tmp_path: Path) -> None:
    source = write(tmp_path / "src", {f"d{i % 20}/f{i}.txt": str(i) for i in range(2000)})
    snapshot = take_snapshot(source)
    assert len(snapshot.files) == 2000
    entries = hash_snapshot(snapshot)
    assert len({e.path for e in entries}) == 2000
    assert entries[0].digest.startswith("sha256:")
