"""Queued saves of the state directory: on disk once `saved()` returns, the latest state wins, removals and
saves keep their order, a failed write is reported without stopping the others."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest
from edgewise.runtime.agent import slotfile, state_writer
from edgewise.runtime.agent.model import RuntimeStatus
from edgewise.runtime.agent.state import ModuleRecord, StateDir, read_record_documents
from edgewise.runtime.agent.state_writer import writer_for


def on_disk(state: StateDir, name: str) -> dict[str, object]:
    loaded: dict[str, object] = read_record_documents(state.root)[name]
    return loaded


def test_a_queued_save_is_on_disk_when_saved_returns(tmp_path: Path) -> None:
    state = StateDir(root=tmp_path)

    async def save() -> None:
        state.queue_manifest(b'{"version": 3}\n')
        state.queue_record(ModuleRecord(name="iris", generation=4, status=RuntimeStatus.RUNNING))
        await state.saved()

    asyncio.run(save())
    assert state.saved_manifest() == b'{"version": 3}\n'
    assert on_disk(state, "iris")["generation"] == 4
    assert on_disk(state, "iris")["status"] == "running"
    assert state.data_dir("iris").is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images", "manifest.a", "modules", "records.a"]
    assert [p.name for p in state.module_dir("iris").iterdir()] == ["data"]


def test_saves_that_pile_up_end_with_the_latest_state(tmp_path: Path) -> None:
    state = StateDir(root=tmp_path)

    async def saver(name: str) -> None:
        for generation in range(1, 201):
            state.queue_record(ModuleRecord(name=name, generation=generation))
            if generation % 7 == 0:
                await asyncio.sleep(0)  # let the other savers and the writer interleave

    async def run() -> None:
        await asyncio.gather(*(saver(f"m{i}") for i in range(5)))
        await state.saved()

    asyncio.run(run())
    assert {name: on_disk(state, name)["generation"] for name in (f"m{i}" for i in range(5))} == {
        f"m{i}": 200 for i in range(5)
    }


def test_concurrent_waiters_all_see_their_saves(tmp_path: Path) -> None:
    state = StateDir(root=tmp_path)

    async def save_and_wait(name: str) -> int:
        state.queue_record(ModuleRecord(name=name, generation=len(name)))
        await state.saved()
        return int(str(on_disk(state, name)["generation"]))

    async def run() -> list[int]:
        return await asyncio.gather(*(save_and_wait("x" * n) for n in range(1, 21)))

    assert asyncio.run(run()) == list(range(1, 21))


def test_a_removal_and_the_saves_around_it_keep_their_order(tmp_path: Path) -> None:
    state = StateDir(root=tmp_path)

    async def run() -> None:
        state.queue_record(ModuleRecord(name="gone", generation=1))
        state.queue_record(ModuleRecord(name="back", generation=1))
        state.queue_module_removal("gone")
        state.queue_module_removal("back")
        state.queue_record(ModuleRecord(name="back", generation=2))
        await state.saved()

    asyncio.run(run())
    assert not state.module_dir("gone").exists()
    assert on_disk(state, "back")["generation"] == 2


def test_a_failed_write_is_raised_once_and_later_saves_still_land(tmp_path: Path) -> None:
    state = StateDir(root=tmp_path)
    state.save_record(ModuleRecord(name="good", generation=1))
    state.module_dir("broken").write_text("")  # a file where the module's folder should go

    async def run() -> None:
        state.queue_record(ModuleRecord(name="broken", generation=1))
        state.queue_record(ModuleRecord(name="good", generation=2))
        with pytest.raises(OSError):
            await state.saved()
        await state.saved()  # reported once
        state.queue_record(ModuleRecord(name="good", generation=3))
        await state.saved()

    asyncio.run(run())
    assert on_disk(state, "good")["generation"] == 3
    assert "broken" not in read_record_documents(state.root)


def test_saves_after_the_first_read_no_slot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    state = StateDir(root=tmp_path)
    reads: list[str] = []
    read_slot = slotfile._read_slot

    def counted(path: Path, index: int) -> object:
        reads.append(path.name)
        return read_slot(path, index)

    monkeypatch.setattr(slotfile, "_read_slot", counted)
    state.save_manifest(b'{"version": 1}\n')
    state.save_record(ModuleRecord(name="iris", generation=1))
    assert sorted(reads) == ["manifest.a", "manifest.b", "records.a", "records.b"]  # the first saves look
    reads.clear()
    for version in range(2, 6):
        state.save_manifest(b'{"version": %d}\n' % version)
        state.save_record(ModuleRecord(name="iris", generation=version))
        state.save_record(ModuleRecord(name=f"m{version}", generation=1))
    assert reads == []
    monkeypatch.undo()
    assert StateDir(root=tmp_path).saved_manifest() == b'{"version": 5}\n'
    documents = read_record_documents(tmp_path)
    assert documents["iris"]["generation"] == 5
    assert sorted(documents) == ["iris", "m2", "m3", "m4", "m5"]
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix in (".a", ".b")) == [
        "manifest.a", "manifest.b", "records.a", "records.b"
    ]


def test_after_a_failed_records_save_the_next_one_reads_the_slots_again(tmp_path: Path) -> None:
    state = StateDir(root=tmp_path)
    state.save_record(ModuleRecord(name="first", generation=1))  # records.a
    (tmp_path / "records.b").mkdir()  # the slot the next save takes cannot be written

    async def run() -> None:
        state.queue_record(ModuleRecord(name="lost", generation=1))
        with pytest.raises(OSError):
            await state.saved()
        (tmp_path / "records.b").rmdir()
        state.queue_record(ModuleRecord(name="second", generation=1))
        await state.saved()

    asyncio.run(run())
    assert sorted(read_record_documents(tmp_path)) == ["first", "second"]  # what the slots held, and the new one


def test_a_new_state_dir_on_the_same_folder_reads_what_the_old_one_queued(tmp_path: Path) -> None:
    first = StateDir(root=tmp_path / "state")
    for generation in range(1, 51):
        first.queue_record(ModuleRecord(name="iris", generation=generation))
    first.queue_manifest(b"{}")
    second = StateDir(root=tmp_path / "state" / ".." / "state")  # the same folder, spelt differently
    assert second.load_records()["iris"].generation == 50
    assert second.saved_manifest() == b"{}"


def test_the_blocking_saves_are_on_disk_when_they_return(tmp_path: Path) -> None:
    state = StateDir(root=tmp_path)
    state.save_record(ModuleRecord(name="iris", generation=7))
    assert on_disk(state, "iris")["generation"] == 7
    state.save_manifest(b"{}")
    assert state.saved_manifest() == b"{}"
    state.delete_module("iris")
    assert not state.module_dir("iris").exists()
    assert read_record_documents(state.root) == {}


def test_a_state_dir_somebody_waits_on_is_written_before_those_nobody_waits_on(tmp_path: Path) -> None:
    gate = threading.Event()
    busy = threading.Semaphore(0)
    order: list[str] = []

    def blocked() -> None:
        busy.release()
        gate.wait(10)

    occupied = [writer_for(tmp_path / f"busy-{i}") for i in range(state_writer._WORKERS)]
    for writer in occupied:  # every worker thread held up
        writer.queue("x", blocked)
    for _ in occupied:
        assert busy.acquire(timeout=10)
    background = [writer_for(tmp_path / f"later-{i}") for i in range(5)]
    for i, writer in enumerate(background):
        writer.queue("x", lambda i=i: order.append(f"later-{i}"))
    urgent = writer_for(tmp_path / "urgent")
    urgent.queue("x", lambda: order.append("urgent"))

    async def wait_for_urgent() -> None:
        waiting = asyncio.ensure_future(urgent.flushed())
        await asyncio.sleep(0.05)  # the wait is registered before any worker is free again
        gate.set()
        await waiting

    asyncio.run(wait_for_urgent())
    for writer in [*background, *occupied]:
        writer.wait()
    assert order[0] == "urgent"
    assert order[1:] == [f"later-{i}" for i in range(5)]  # the others in the order they asked
