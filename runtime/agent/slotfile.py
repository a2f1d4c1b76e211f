"""Small files rewritten in place and still crash-safe: two slots taken in turn, each stamped with a sequence number
and a checksum.

Replacing a file through a temporary file and a rename costs a new inode, a freed one and two fsyncs per save, and
on ext4 without a journal the allocation of an inode also steps over every inode freed in the last minutes, so a
busy disk makes each save slower. An agent saves its state several times per deployment. Here a save overwrites
the older of two slots in place and syncs its data once; a power cut in the middle of it can tear that slot only,
and a read then takes the other one, which holds the save before. The newest slot whose checksum holds wins.

A slot is one header line and the content, so `tail -n +2 manifest.a` shows what was saved:

    edgewise-slot 1 SEQUENCE LENGTH CRC32     (hexadecimal, fixed width)

Writes to one base path must not run concurrently (the agent's `StateWriter` runs them in order); reads may.
A `SlotFile` object is made for one operation (read, then written, then dropped), or kept by the only writer of
its base: after its first read it knows which slot each write takes, and later writes read nothing.
"""

from __future__ import annotations

import contextlib
import os
import zlib
from pathlib import Path

SUFFIXES = (".a", ".b")
_MAGIC = b"edgewise-slot 1 "
_HEADER = len(_MAGIC) + 16 + 1 + 8 + 1 + 8 + 1  # sequence, length, crc32, spaces and the newline


class _Slot:
    """One intact save: which slot (0 or 1) holds it, its sequence number and its content."""

    __slots__ = ("content", "index", "sequence")  # a plain class: the agent imports this at idle, and it counts

    def __init__(self, *, index: int, sequence: int, content: bytes) -> None:
        self.index, self.sequence, self.content = index, sequence, content


class SlotFile:
    """The two slots behind `base` (`base.a`, `base.b`). A `write` after a `read` of the same object goes over the
    slot that read did not take, without reading them again (a read-modify-write reads once)."""

    def __init__(self, base: Path) -> None:
        self.paths = (base.with_name(base.name + SUFFIXES[0]), base.with_name(base.name + SUFFIXES[1]))
        self._newest: _Slot | None = None
        self._read = False

    def read(self) -> bytes | None:
        """The content of the newest intact slot, or None when neither holds one (never saved, or both torn)."""
        slots = [slot for slot in (_read_slot(path, i) for i, path in enumerate(self.paths)) if slot is not None]
        self._newest = max(slots, key=lambda slot: slot.sequence) if slots else None
        self._read = True
        return self._newest.content if self._newest is not None else None

    def write(self, content: bytes) -> None:
        """Save `content` over the slot that does not hold the newest intact save; on disk when this returns.

        OSError when the slot cannot be written: the other slot, and so `read`, keeps the previous content.
        """
        if not self._read:
            self.read()
        newest = self._newest
        index = 1 - newest.index if newest is not None else 0
        sequence = newest.sequence + 1 if newest is not None else 1
        target = self.paths[index]
        data = _header(sequence, content) + content
        flags = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC
        try:
            fd = os.open(target, flags | os.O_EXCL, 0o600)
            created = True
        except FileExistsError:
            fd = os.open(target, flags)
            created = False
        try:
            view = memoryview(data)
            offset = 0
            while offset < len(data):
                offset += os.pwrite(fd, view[offset:], offset)
            if os.fstat(fd).st_size > len(data):  # a longer save before: its tail would follow the content
                os.ftruncate(fd, len(data))
            os.fdatasync(fd)
        finally:
            os.close(fd)
        if created:  # the new name must survive a power cut too
            directory = os.open(target.parent, os.O_RDONLY | os.O_CLOEXEC)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)
        self._newest = _Slot(index=index, sequence=sequence, content=content)

    def remove(self) -> None:
        """Forget what was saved (both slots; missing ones are fine)."""
        for path in self.paths:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        self._newest, self._read = None, True


def _header(sequence: int, content: bytes) -> bytes:
    return b"%s%016x %08x %08x\n" % (_MAGIC, sequence, len(content), zlib.crc32(content))


def _read_slot(path: Path, index: int) -> _Slot | None:
    """The slot's save when it is whole: header intact, content as long as it says and matching its checksum."""
    try:
        raw = path.read_bytes()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None
    if len(raw) < _HEADER or not raw.startswith(_MAGIC) or raw[_HEADER - 1 : _HEADER] != b"\n":
        return None
    try:
        sequence_hex, length_hex, crc_hex = raw[len(_MAGIC) : _HEADER - 1].split(b" ")
        sequence, length, crc = int(sequence_hex, 16), int(length_hex, 16), int(crc_hex, 16)
    except ValueError:
        return None
    content = raw[_HEADER : _HEADER + length]
    if len(content) != length or zlib.crc32(content) != crc:
        return None
    return _Slot(index=index, sequence=sequence, content=content)
