"""Files saved in place in two slots: the newest intact save is read, a torn or failed save leaves the one before."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from edgewise.runtime.agent.slotfile import SlotFile


def save(base: Path, content: bytes) -> None:
    SlotFile(base).write(content)


def test_saves_alternate_between_the_slots_and_the_newest_is_read(tmp_path: Path) -> None:
    base = tmp_path / "state"
    assert SlotFile(base).read() is None
    save(base, b"one")
    assert SlotFile(base).read() == b"one"
    assert [p.exists() for p in SlotFile(base).paths] == [True, False]
    save(base, b"two")
    save(base, b"three")
    assert SlotFile(base).read() == b"three"
    assert sorted(os.listdir(tmp_path)) == ["state.a", "state.b"]
    first, second = (p.read_bytes() for p in SlotFile(base).paths)
    assert first.endswith(b"\nthree") and second.endswith(b"\ntwo")
    assert first.split(b"\n", 1)[0].startswith(b"edgewise-slot 1 ")  # `tail -n +2` shows the content


def test_one_object_reads_and_writes_in_turn(tmp_path: Path) -> None:
    slots = SlotFile(tmp_path / "state")
    for _ in range(5):  # a read-modify-write each time, then writes without reads
        content = slots.read()
        slots.write((content or b"") + b"x")
    slots.write(b"y")
    slots.write(b"z")
    assert SlotFile(tmp_path / "state").read() == b"z"
    assert slots.read() == b"z"
    assert [p.read_bytes().split(b"\n", 1)[1] for p in slots.paths] == [b"z", b"y"]


def test_a_shorter_save_over_a_longer_one_reads_exactly(tmp_path: Path) -> None:
    base = tmp_path / "state"
    save(base, b"x" * 5000)
    save(base, b"y" * 4000)
    save(base, b"short")  # over the 5000-byte slot
    assert SlotFile(base).read() == b"short"
    assert SlotFile(base).paths[0].read_bytes().split(b"\n", 1)[1] == b"short"  # `tail -n +2` shows it alone
    save(base, b"")
    assert SlotFile(base).read() == b""


@pytest.mark.parametrize("damage", ["truncated", "flipped", "header"])
def test_a_torn_newest_slot_leaves_the_save_before_it(tmp_path: Path, damage: str) -> None:
    base = tmp_path / "state"
    save(base, b"before" * 100)
    save(base, b"after" * 100)
    newest = SlotFile(base).paths[1]
    raw = bytearray(newest.read_bytes())
    if damage == "truncated":  # the power went during the write
        raw = raw[: len(raw) // 2]
    elif damage == "flipped":
        raw[-10] ^= 0xFF
    else:
        raw[20] = ord("z")
    newest.write_bytes(bytes(raw))
    assert SlotFile(base).read() == b"before" * 100
    save(base, b"next")  # goes over the torn slot: the intact one is kept
    assert SlotFile(base).read() == b"next"
    assert SlotFile(base).paths[0].read_bytes().endswith(b"before" * 100)


def test_a_failed_save_keeps_the_one_before(tmp_path: Path) -> None:
    base = tmp_path / "state"
    save(base, b"kept")
    SlotFile(base).paths[1].mkdir()  # the slot to be written cannot be
    with pytest.raises(OSError):
        save(base, b"lost")
    assert SlotFile(base).read() == b"kept"


def test_removed_slots_read_as_never_saved(tmp_path: Path) -> None:
    base = tmp_path / "state"
    save(base, b"one")
    save(base, b"two")
    SlotFile(base).remove()
    SlotFile(base).remove()  # nothing left to remove is fine
    assert SlotFile(base).read() is None and os.listdir(tmp_path) == []
    save(base, b"again")
    assert SlotFile(base).read() == b"again"
