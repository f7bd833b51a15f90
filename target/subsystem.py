"""Subsystems and namespaces: the storage a host reaches by NQN and NSID (no I/O here)."""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Generic, TypeVar

from target.backends import Backend, FileBackend, open_backend
from target.config import NamespaceConfig, SubsystemConfig, derived_ids, derived_serial
from target.reservation_store import ReservationStore, VolatileStore, store_for
from target.reservations import Reservations

log = logging.getLogger("nvmeof.target")

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
            backend
            if backend is not None
            else open_backend(cfg.backend, cfg.size, cfg.path, cfg.sync)
        )
        self.nlbas = cfg.size >> self.lba_shift
        ns_uuid, nguid, eui64 = derived_ids(nqn, cfg.nsid)
        self.uuid = cfg.uuid or ns_uuid
        self.nguid = cfg.nguid or nguid
        self.eui64 = cfg.eui64 or eui64
        self.ana_group = cfg.ana_group
        self.enabled = cfg.enabled
        self.config = cfg
        #: None: reservation commands are Invalid Opcode (nvmet's resv_enable = 0).
        self.reservations: Reservations | None = None
        self.reservation_store: ReservationStore = VolatileStore()
        if cfg.reservations:
            self.reservation_store = store_for(cfg.backend, cfg.path)
            self.reservations = Reservations(can_persist=self.reservation_store.can_persist)
            self._reload_reservations()
        self._log_durability(nqn)

    @property
    def durability(self) -> str:
        """What survives the target, in a few words (status, logs): ``volatile`` (RAM),
        ``discarded`` (null), or the file backend's sync mode (``sync=flush``...)."""
        if self.config.backend == "ram":
            return "volatile"
        if self.config.backend == "null":
            return "discarded"
        return f"sync={self.config.sync}"

    def _log_durability(self, nqn: str) -> None:
        """Say once, when the namespace is created, what its data survives: an operator who
        expects a disk must not learn from a restart that it was RAM."""
        cfg = self.config
        where = f"subsystem={nqn} nsid={cfg.nsid} backend={cfg.backend}"
        if cfg.backend == "ram":
            log.info("namespace %s volatile: lost when the target stops", where)
        elif cfg.backend == "null":
            log.info("namespace %s writes are discarded, reads return zeros", where)
        elif cfg.sync == "none":
            log.warning("namespace %s path=%s sync=none: Flush and FUA do not sync, data the "
                        "host flushed can be lost in a crash or power loss (unsafe, for speed "
                        "tests)", where, cfg.path)  # fmt: skip
        else:
            log.info("namespace %s path=%s sync=%s", where, cfg.path, cfg.sync)

    def set_sync(self, mode: str) -> None:
        """Change the file backend's sync mode in place (a live change; I/O goes on)."""
        backend = self.backend
        if isinstance(backend, FileBackend):
            backend.sync = mode
        self.config = replace(self.config, sync=mode)

    def _reload_reservations(self) -> None:
        """Registrations made with PTPL on come back after a restart (a power loss)."""
        assert self.reservations is not None
        snapshot = self.reservation_store.load()
        if snapshot is None or not snapshot.get("ptpl"):
            return
        try:
            self.reservations.restore(snapshot)
        except ValueError as err:
            log.warning("reservation state ignored nsid=%s: %s", self.nsid, str(err))
            return
        log.info("reservations restored nsid=%s registrants=%s rtype=%s", self.nsid,
                 len(self.reservations.registrants), self.reservations.rtype)  # fmt: skip

    def persist_reservations(self) -> None:
        """After a change: keep the state if PTPL is on, forget any kept state if it is off."""
        resv = self.reservations
        if resv is None:
            return
        if resv.ptpl:
            self.reservation_store.save(resv.snapshot())
        else:
            self.reservation_store.discard()

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

    def has_reservations(self) -> bool:
        """Some namespace serves reservations (Identify ONCS bit 5, features 0x82/0x83, log
        page 0x80); with none, those answer as a kernel without reservations does."""
        return any(ns.reservations is not None for ns in self.namespaces.values())

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
