"""Subsystems and namespaces: the storage a host reaches by NQN and NSID (no I/O here)."""

from __future__ import annotations

from typing import Generic, TypeVar

from target.backends import Backend, open_backend
from target.config import NamespaceConfig, SubsystemConfig, derived_ids, derived_serial

#: What a subsystem keeps by CNTLID: :class:`target.controller.Controller`, which refers back to
#: its subsystem; a type parameter so this module need not import it (``Subsystem[Controller]``).
C = TypeVar("C")


class Namespace:
    """One namespace: identifiers, LBA format, ANA group and its backend."""

    def __init__(self, nqn: str, cfg: NamespaceConfig, backend: Backend | None = None) -> None:
        self.nsid = cfg.nsid
        self.block_size = cfg.block_size
        self.lba_shift = cfg.block_size.bit_length() - 1
        self.backend = (
            backend if backend is not None else open_backend(cfg.backend, cfg.size, cfg.path)
        )
        self.nlbas = cfg.size >> self.lba_shift
        ns_uuid, nguid, eui64 = derived_ids(nqn, cfg.nsid)
        self.uuid = cfg.uuid or ns_uuid
        self.nguid = cfg.nguid or nguid
        self.eui64 = cfg.eui64 or eui64
        self.ana_group = cfg.ana_group
        self.enabled = cfg.enabled
        self.config = cfg

    @property
    def size(self) -> int:
        return self.nlbas << self.lba_shift

    def resize(self, size: int) -> None:
        self.backend.resize(size)
        self.nlbas = size >> self.lba_shift

    def __repr__(self) -> str:
        return f"Namespace(nsid={self.nsid}, lbas={self.nlbas}x{self.block_size})"


class Subsystem(Generic[C]):
    """An NVM subsystem: namespaces, allowed hosts and the live controllers (by CNTLID)."""

    def __init__(self, cfg: SubsystemConfig) -> None:
        self.nqn = cfg.nqn
        self.namespaces: dict[int, Namespace] = {
            ns.nsid: Namespace(cfg.nqn, ns) for ns in cfg.namespaces
        }
        self.controllers: dict[int, C] = {}
        self.update(cfg)
        self._next_cntlid = self.cntlid_min

    def update(self, cfg: SubsystemConfig) -> None:
        """Take the attributes of ``cfg`` (not its namespaces): they apply to new controllers,
        as nvmet's configfs attributes do."""
        self.serial = cfg.serial or derived_serial(cfg.nqn)
        self.model = cfg.model
        self.allow_any_host = cfg.allow_any_host
        self.allowed_hosts = dict.fromkeys(cfg.allowed_hosts)  # ordered, for export
        self.max_io_queues = cfg.max_io_queues
        self.queue_size = cfg.queue_size
        self.cntlid_min, self.cntlid_max = cfg.cntlid_min, cfg.cntlid_max
        self.max_namespaces = cfg.max_namespaces
        self.cqt_ms = cfg.cqt_ms

    def host_allowed(self, hostnqn: str) -> bool:
        return self.allow_any_host or hostnqn in self.allowed_hosts

    def active_namespace(self, nsid: int) -> Namespace | None:
        ns = self.namespaces.get(nsid)
        return ns if ns is not None and ns.enabled else None

    def active_nsids(self) -> list[int]:
        return sorted(nsid for nsid, ns in self.namespaces.items() if ns.enabled)

    def allocate_cntlid(self) -> int | None:
        """A CNTLID unused by live controllers in cntlid_min..cntlid_max, round robin like
        nvmet's IDA; None when every one is taken."""
        low, high = self.cntlid_min, self.cntlid_max
        for _ in range(high - low + 1):
            cntlid = self._next_cntlid if low <= self._next_cntlid <= high else low
            self._next_cntlid = cntlid + 1 if cntlid < high else low
            if cntlid not in self.controllers:
                return cntlid
        return None

    def close(self) -> None:
        """The subsystem is gone: its backends close and commands still arriving on its dying
        controllers find no namespace (Invalid Namespace), as after nvmet_ns_disable."""
        for ns in self.namespaces.values():
            ns.backend.close()
        self.namespaces.clear()
