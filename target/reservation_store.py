"""Where a namespace's reservation state lives through a power loss (PTPL).

One interface, :class:`ReservationStore`, so that a gateway group can later keep the state in
etcd for several daemons; today there are two: :class:`VolatileStore` (RAM and null namespaces:
nothing survives, RESCAP says so) and :class:`SidecarFile` (file namespaces: a small JSON file
next to the data, replaced atomically).
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any, Protocol

log = logging.getLogger("nvmeof.target")

#: The sidecar's name: the backing file's path plus this suffix.
SIDECAR_SUFFIX = ".reservations.json"


class ReservationStore(Protocol):
    """Keeps one namespace's reservation snapshot (``Reservations.snapshot()``)."""

    can_persist: bool

    def load(self) -> dict[str, Any] | None: ...
    def save(self, snapshot: dict[str, Any]) -> None: ...
    def discard(self) -> None: ...


class VolatileStore:
    """Nothing persists: a power loss (a restart) forgets every registration."""

    can_persist = False

    def load(self) -> dict[str, Any] | None:
        return None

    def save(self, snapshot: dict[str, Any]) -> None:
        pass

    def discard(self) -> None:
        pass


class SidecarFile:
    """The snapshot as JSON in ``path``: written to a temporary file, fsynced, renamed over the
    old one and the directory fsynced, so a crash at any point leaves the old or the new state,
    never a torn one."""

    can_persist = True

    def __init__(self, path: str) -> None:
        self.path = path

    def load(self) -> dict[str, Any] | None:
        try:
            with open(self.path, encoding="utf-8") as file:
                snapshot = json.load(file)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.warning("reservation state unreadable path=%s: %s", self.path, exc)
            return None
        return snapshot if isinstance(snapshot, dict) else None

    def save(self, snapshot: dict[str, Any]) -> None:
        tmp = f"{self.path}.tmp"
        data = json.dumps(snapshot, sort_keys=True).encode()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        self._sync_directory()

    def discard(self) -> None:
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            return
        self._sync_directory()

    def _sync_directory(self) -> None:
        fd = os.open(os.path.dirname(os.path.abspath(self.path)), os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def store_for(backend: str, path: str | None) -> ReservationStore:
    """The store a namespace of this backend gets."""
    if backend == "file" and path and not path.startswith("/dev/"):  # not beside a device node
        return SidecarFile(path + SIDECAR_SUFFIX)
    return VolatileStore()
