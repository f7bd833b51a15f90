"""The host: controllers (sessions) and the multipath namespace heads they feed.

async with open_host(ControllerOptions(...)) as host:
    await host.connect("127.0.0.1", 4420, nqn)
    await host.connect("127.0.0.1", 4421, nqn)
    head = host.namespace(nqn, 1)
    ring = head.ring(64)
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from initiator.controller import ControllerOptions, NamespaceInfo, connect_controller
from initiator.multipath import MultipathHead, Path
from initiator.session import Session, SessionState
from nvmeof.constants import (
    DISCOVERY_NQN,
    DiscoverySubtype,
    LogPage,
    SecureChannel,
    TcpSecurityType,
)
from nvmeof.errors import NvmeofError
from nvmeof.wire.logpages import DiscoveryEntry, parse_discovery_entries, parse_discovery_header

log = logging.getLogger("nvmeof.initiator")

DISCOVERY_RETRIES = 5


def requires_tls(entry: DiscoveryEntry) -> bool:
    """The entry's port takes TLS 1.3 only: TREQ secure channel required with TSAS SECTYPE
    TLS 1.3 (nvmet's ``addr_treq=required``, ``addr_tsas=tls1.3``), what libnvme reads to
    connect such an entry with ``--tls`` (``nvmf_update_tls_concat``)."""
    return (entry.treq & 0x3 == SecureChannel.REQUIRED
            and entry.tsas[:1] == bytes([TcpSecurityType.TLS13]))  # fmt: skip


class Host:
    """An NVMe/TCP host: sessions (controllers) and namespace heads (one per shared namespace).

    Create with :func:`open_host`.
    """

    def __init__(self, nursery: trio.Nursery, options: ControllerOptions,
                 iopolicy: str = "numa") -> None:  # fmt: skip
        self.nursery = nursery
        self.options = options
        self.iopolicy = iopolicy
        self.sessions: list[Session] = []
        self.heads: dict[tuple[str, int], MultipathHead] = {}

    # -- controllers -----------------------------------------------------------------------------

    async def connect(self, addr: str, port: int, subnqn: str,
                      options: ControllerOptions | None = None) -> Session:  # fmt: skip
        """Connect one controller (a path) like ``nvme connect``; it reconnects on its own."""
        session = Session(self, addr, port, subnqn, options or self.options)
        await self.nursery.start(session.run)
        self.sessions.append(session)
        return session

    async def connect_entry(self, entry: DiscoveryEntry) -> Session:
        """Connect a discovery log entry. One whose port requires TLS needs a key: without
        one, a one-line error says so before anything is sent (the port would only close a
        plaintext ICReq)."""
        if requires_tls(entry) and not self.options.tls:
            raise NvmeofError(f"{entry.subnqn} at {entry.traddr}:{entry.trsvcid}: the discovery "
                              "log says the port requires TLS: give --tls-key")  # fmt: skip
        return await self.connect(entry.traddr, int(entry.trsvcid), entry.subnqn)

    async def discover(self, addr: str, port: int) -> list[DiscoveryEntry]:
        """Read the discovery log like nvme-cli: header, entries, header again until stable."""
        async with trio.open_nursery() as nursery:
            ctrl = await connect_controller(
                nursery, addr, port, DISCOVERY_NQN,
                ControllerOptions(hostnqn=self.options.hostnqn, hostid=self.options.hostid,
                                  kato_ms=0, io_queues=0,
                                  command_timeout=self.options.command_timeout,
                                  dhchap_secret=self.options.dhchap_secret,
                                  dhchap_ctrl_secret=self.options.dhchap_ctrl_secret,
                                  tls=self.options.tls, tls_key=self.options.tls_key,
                                  tls_identity_version=self.options.tls_identity_version,
                                  tls_psk_derivation=self.options.tls_psk_derivation,
                                  tls_r02_sha256=self.options.tls_r02_sha256),
            )  # fmt: skip
            try:
                for _ in range(DISCOVERY_RETRIES):
                    header = parse_discovery_header(
                        await ctrl.get_log_page(LogPage.DISCOVERY, 20, nsid=0)
                    )
                    size = 1024 * header.numrec
                    raw = bytearray()
                    if size:
                        raw = await ctrl.get_log_page(LogPage.DISCOVERY, size, nsid=0,
                                                      offset=1024)  # fmt: skip
                    again = parse_discovery_header(
                        await ctrl.get_log_page(LogPage.DISCOVERY, 20, nsid=0)
                    )
                    if again.genctr == header.genctr:
                        if again.numrec != header.numrec:
                            raise NvmeofError("discovery log NUMREC changed without GENCTR")
                        return parse_discovery_entries(raw, header.numrec)
                raise NvmeofError("discovery log kept changing")
            finally:
                await ctrl.shutdown()

    async def connect_all(self, addr: str, port: int) -> list[Session]:
        """Discover, then connect every NVM subsystem entry (like ``nvme connect-all``)."""
        sessions = []
        for entry in await self.discover(addr, port):
            if entry.subtype != DiscoverySubtype.NVME:
                continue
            sessions.append(await self.connect_entry(entry))
        return sessions

    # -- namespaces ------------------------------------------------------------------------------

    def register_path(self, session: Session, info: NamespaceInfo) -> Path:
        """Attach ``session``'s namespace ``info`` to its head (created on first sight)."""
        key = (session.subnqn, info.nsid)
        head = self.heads.get(key)
        if head is None:
            head = MultipathHead(session.subnqn, info.nsid, block_size=info.block_size,
                                 nlbas=info.nlbas, ids=info.ids, iopolicy=self.iopolicy)  # fmt: skip
            self.heads[key] = head
            self.nursery.start_soon(head.run_requeue)
        elif head.ids and info.ids and head.ids != info.ids:
            raise NvmeofError(f"namespace {info.nsid} of {session.subnqn}: IDs differ between "
                              f"paths ({session.label})")  # fmt: skip
        path = Path(session, info.nsid)
        head.add_path(path, session.max_transfer)
        return path

    def namespace(self, subnqn: str | None = None, nsid: int = 1) -> MultipathHead:
        """The head of namespace ``nsid`` (of the only subsystem when ``subnqn`` is None)."""
        for (nqn, ns), head in self.heads.items():
            if ns == nsid and (subnqn is None or nqn == subnqn):
                return head
        raise KeyError(f"no namespace {nsid}" + (f" in {subnqn}" if subnqn else ""))

    async def aclose(self) -> None:
        """Disconnect every controller (orderly shutdown), then stop the host's tasks."""
        for session in self.sessions:
            if session.state is not SessionState.DELETED:
                await session.disconnect()
            session.problems.flush()  # the folded repeats still counted
        for head in self.heads.values():
            head.failure_log.flush()
        self.nursery.cancel_scope.cancel()


@asynccontextmanager
async def open_host(options: ControllerOptions | None = None, *,
                    iopolicy: str = "numa") -> AsyncIterator[Host]:  # fmt: skip
    """A :class:`Host` whose tasks live as long as the ``async with`` block."""
    async with trio.open_nursery() as nursery:
        host = Host(nursery, options or ControllerOptions(), iopolicy)
        try:
            yield host
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(10):
                await host.aclose()
            nursery.cancel_scope.cancel()
