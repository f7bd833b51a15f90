"""Storage behind a namespace: RAM (default), a sparse file, or null.

RAM and null backends answer synchronously (``synchronous`` is True), so the connection serves
them inline without a task per command; the file backend runs its ``pread``/``pwrite`` in a
worker thread.

Durability (docs/DURABILITY.md): RAM is lost when the target stops and null keeps nothing; the
file backend's ``sync`` mode says when written data is forced to stable storage. A write's
``pwrite`` has returned before its completion is sent, in every mode.
"""

from __future__ import annotations

import errno
import mmap
import os
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import trio

T = TypeVar("T")


class BackendClosed(OSError):
    """I/O asked of a backend whose namespace was removed meanwhile (the command raced the
    removal): the command is answered Invalid Namespace, like nvmet after nvmet_ns_disable."""


class Backend(Protocol):
    """What a namespace needs from its storage. Offsets and lengths are in bytes."""

    size: int
    synchronous: bool

    def read_sync(self, offset: int, length: int) -> memoryview | bytes: ...
    def write_sync(self, offset: int, data: memoryview | bytes | bytearray) -> None: ...
    async def read(self, offset: int, length: int) -> memoryview | bytes: ...
    async def write(self, offset: int, data: memoryview | bytes | bytearray,
                    fua: bool = False) -> None: ...  # fmt: skip
    async def write_zeroes(self, offset: int, length: int) -> None: ...
    async def flush(self) -> None: ...
    def resize(self, size: int) -> None: ...
    def close(self) -> None: ...


class RamBackend:
    """Anonymous memory: pages are allocated by the kernel on first write, zero until then."""

    synchronous = True

    def __init__(self, size: int) -> None:
        self.size = size
        self._map = mmap.mmap(-1, size)
        self._view = memoryview(self._map)

    def read_sync(self, offset: int, length: int) -> memoryview:
        return self._view[offset : offset + length]

    def write_sync(self, offset: int, data: memoryview | bytes | bytearray) -> None:
        self._view[offset : offset + len(data)] = data

    async def read(self, offset: int, length: int) -> memoryview:
        return self.read_sync(offset, length)

    async def write(self, offset: int, data: memoryview | bytes | bytearray,
                    fua: bool = False) -> None:  # fmt: skip
        self.write_sync(offset, data)  # FUA or not: memory is as durable as it gets here

    async def write_zeroes(self, offset: int, length: int) -> None:
        step = 1 << 20
        zeros = bytes(min(step, length))
        end = offset + length
        while offset < end:
            n = min(step, end - offset)
            self._view[offset : offset + n] = zeros[:n]
            offset += n

    async def flush(self) -> None:
        return None

    def resize(self, size: int) -> None:
        new = mmap.mmap(-1, size)
        keep = min(size, self.size)
        new[:keep] = self._view[:keep]
        # Reads in flight may still hold views of the old map: let them keep it alive (it is
        # unmapped when the last one goes) instead of closing it under them.
        self._map, self._view, self.size = new, memoryview(new), size

    def close(self) -> None:
        try:
            self._view.release()
            self._map.close()
        except BufferError:
            pass  # a response being sent still references it; freed with the last view


class NullBackend:
    """Reads return zeros, writes are discarded (nvmet's null_blk equivalent)."""

    synchronous = True

    def __init__(self, size: int) -> None:
        self.size = size
        self._zeros = bytes(1 << 20)

    def read_sync(self, offset: int, length: int) -> memoryview | bytes:
        return memoryview(self._zeros)[:length] if length <= len(self._zeros) else bytes(length)

    def write_sync(self, offset: int, data: memoryview | bytes | bytearray) -> None:
        return None

    async def read(self, offset: int, length: int) -> memoryview | bytes:
        return self.read_sync(offset, length)

    async def write(self, offset: int, data: memoryview | bytes | bytearray,
                    fua: bool = False) -> None:  # fmt: skip
        return None

    async def write_zeroes(self, offset: int, length: int) -> None:
        return None

    async def flush(self) -> None:
        return None

    def resize(self, size: int) -> None:
        self.size = size

    def close(self) -> None:
        return None


class FileBackend:
    """A (sparse) file; created and extended to ``size`` if shorter.

    ``sync`` says when written data is forced to stable storage with ``fdatasync`` (nvmet's
    Flush is ``vfs_fsync(file, 1)``, a datasync): ``flush`` on a Flush command and after a write
    with FUA set (nvmet's buffered file backend: FUA is IOCB_DSYNC); ``always`` after every
    write, write zeroes and deallocate, before its completion; ``none`` never, not even on a
    Flush (unsafe: for speed tests).
    """

    synchronous = False

    def __init__(self, path: str, size: int, sync: str = "flush") -> None:
        self.path = path
        self.size = size
        self.sync = sync
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        self._busy = 0  # I/O running in worker threads
        self._closing = False
        if os.fstat(self._fd).st_size < size:
            os.ftruncate(self._fd, size)

    def read_sync(self, offset: int, length: int) -> bytes:
        data = os.pread(self._fd, length, offset)
        return data if len(data) == length else data.ljust(length, b"\0")

    def write_sync(self, offset: int, data: memoryview | bytes | bytearray) -> None:
        view = memoryview(data)
        while view:
            n = os.pwrite(self._fd, view, offset)
            view, offset = view[n:], offset + n

    def _write_durably(self, offset: int, data: memoryview | bytes | bytearray) -> None:
        self.write_sync(offset, data)
        os.fdatasync(self._fd)

    async def read(self, offset: int, length: int) -> bytes:
        return await self._in_thread(self.read_sync, offset, length)

    async def write(self, offset: int, data: memoryview | bytes | bytearray,
                    fua: bool = False) -> None:  # fmt: skip
        durable = self.sync == "always" or (fua and self.sync == "flush")
        await self._in_thread(self._write_durably if durable else self.write_sync, offset, data)

    async def write_zeroes(self, offset: int, length: int) -> None:
        def punch() -> None:
            step = 1 << 20
            zeros = bytes(min(step, length))
            pos, end = offset, offset + length
            while pos < end:
                n = min(step, end - pos)
                self.write_sync(pos, zeros[:n])
                pos += n
            if self.sync == "always":
                os.fdatasync(self._fd)

        await self._in_thread(punch)

    async def flush(self) -> None:
        if self.sync != "none":
            await self._in_thread(os.fdatasync, self._fd)

    async def _in_thread(self, work: Callable[..., T], *args: Any) -> T:
        """Run blocking file I/O in a worker thread, counted so that :meth:`close` does not
        close the descriptor under it (a namespace removed under I/O: the number could be
        reused by the next open and a late pwrite land in another file)."""
        if self._closing:
            raise BackendClosed(errno.EBADF, f"{self.path}: namespace removed")
        self._busy += 1
        try:
            return await trio.to_thread.run_sync(work, *args)
        finally:
            self._busy -= 1
            if self._closing and not self._busy:
                os.close(self._fd)

    def resize(self, size: int) -> None:
        os.ftruncate(self._fd, size)
        self.size = size

    def close(self) -> None:
        """Close now, or when the last I/O in a worker thread returns."""
        if self._closing:
            return
        self._closing = True
        if not self._busy:
            os.close(self._fd)


def open_backend(kind: str, size: int, path: str | None = None, sync: str = "flush") -> Backend:
    """Create the backend named in the configuration (``sync``: the file backend's mode)."""
    if kind == "ram":
        return RamBackend(size)
    if kind == "null":
        return NullBackend(size)
    if kind == "file":
        if not path:
            raise ValueError("the file backend needs a path")
        return FileBackend(path, size, sync)
    raise ValueError(f"unknown backend {kind!r}")
