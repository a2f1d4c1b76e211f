"""Files saved in place in two slots: the newest intact save is read, a torn or failed save leaves the one before."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from edgewise.runtime.agent.slotfile import read_slots, remove_slots, slot_paths, write_slots


def test_saves_alternate_between_the_slots_and_the_newest_is_read(tmp_path: Path) -> None:
    base = tmp_path / "state"
    assert read_slots(base) is None
    write_slots(base, b"one")
    assert read_slots(base) == b"one"
    assert [p.exists() for p in slot_paths(base)] == [True, False]
    write_slots(base, b"two")
    write_slots(base, b"three")
    assert read_slots(base) == b"three"
    assert sorted(os.listdir(tmp_path)) == ["state.a", "state.b"]
    first, second = (p.read_bytes() for p in slot_paths(base))
    assert first.endswith(b"\nthree") and second.endswith(b"\ntwo")
    assert first.split(b"\n", 1)[0].startswith(b"edgewise-slot 1 ")  # `tail -n +2` shows the content


def test_a_shorter_save_over_a_longer_one_reads_exactly(tmp_path: Path) -> None:
    base = tmp_path / "state"
    write_slots(base, b"x" * 5000)
    write_slots(base, b"y" * 4000)
    write_slots(base, b"short")  # over the 5000-byte slot, which keeps its length on disk
    assert read_slots(base) == b"short"
    write_slots(base, b"")
    assert read_slots(base) == b""


@pytest.mark.parametrize("damage", ["truncated", "flipped", "header"])
def test_a_torn_newest_slot_leaves_the_save_before_it(tmp_path: Path, damage: str) -> None:
    base = tmp_path / "state"
    write_slots(base, b"before" * 100)
    write_slots(base, b"after" * 100)
    newest = slot_paths(base)[1]
    raw = bytearray(newest.read_bytes())
    if damage == "truncated":  # the power went during the write
        raw = raw[: len(raw) // 2]
    elif damage == "flipped":
        raw[-10] ^= 0xFF
    else:
        raw[20] = ord("z")
    newest.write_bytes(bytes(raw))
    assert read_slots(base) == b"before" * 100
    write_slots(base, b"next")  # goes over the torn slot: the intact one is kept
    assert read_slots(base) == b"next"
    assert slot_paths(base)[0].read_bytes().endswith(b"before" * 100)


def test_a_failed_save_keeps_the_one_before(tmp_path: Path) -> None:
    base = tmp_path / "state"
    write_slots(base, b"kept")
    slot_paths(base)[1].mkdir()  # the slot to be written cannot be
    with pytest.raises(OSError):
        write_slots(base, b"lost")
    assert read_slots(base) == b"kept"


def test_removed_slots_read_as_never_saved(tmp_path: Path) -> None:
    base = tmp_path / "state"
    write_slots(base, b"one")
    write_slots(base, b"two")
    remove_slots(base)
    remove_slots(base)  # nothing left to remove is fine
    assert read_slots(base) is None and os.listdir(tmp_path) == []
    write_slots(base, b"again")
    assert read_slots(base) == b"again"
