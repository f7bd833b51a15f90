"""Host-side controller bring-up, as the Linux host does it (docs/PROTOCOL.md §7.1, §7.2).

ICReq, admin Connect, CC.EN and CSTS.RDY, Identify, ANA log, number of queues, I/O queue
Connects, async event configuration and an AER, then keep-alive every KATO/2.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from typing import Any

import trio

from initiator.auth import AuthState, authenticate_queue, parse_secrets
from initiator.queue import Completion, HostQueue
from initiator.tls import TlsCounts, TlsHandshakeError, check_tls_options, queue_psk
from nvmeof.constants import (
    CNTLID_DYNAMIC,
    DISCOVERY_NQN,
    NSID_ALL,
    AdminOpcode,
    Cns,
    FabricsType,
    FeatureId,
    IoOpcode,
    LogPage,
    Property,
)
from nvmeof.errors import CommandError, NvmeofError
from nvmeof.properties import CSTS_RDY
from nvmeof.wire.fabrics import (
    CONNECT_COMMAND,
    CONNECT_DATA,
    PROPERTY_GET_COMMAND,
    PROPERTY_SET_COMMAND,
)
from nvmeof.wire.fast import RW_TAIL, RW_TAIL_OFFSET
from nvmeof.wire.identify import (
    parse_active_ns_list,
    parse_identify_ctrl,
    parse_identify_ns,
    parse_ns_desc_list,
)
from nvmeof.wire.logpages import AnaLog, parse_ana_log
from nvmeof.wire.sqe import (
    FEATURES_COMMAND,
    GET_LOG_PAGE_COMMAND,
    IDENTIFY_COMMAND,
    NO_FIELDS_COMMAND,
)

log = logging.getLogger("nvmeof.initiator")

CC_ENABLE = 0x00460001
CC_DISABLED = 0x00460000
CC_SHUTDOWN = 0x00464001
CMIC_ANA = 1 << 3


def default_host_nqn() -> tuple[str, bytes]:
    """A fresh ``nqn.2014-08.org.nvmexpress:uuid:...`` host NQN and its host ID."""
    host_id = uuid.uuid4()
    return f"nqn.2014-08.org.nvmexpress:uuid:{host_id}", host_id.bytes


@dataclass
class ControllerOptions:
    """What ``nvme connect`` would take: identity, keep-alive, queues, digests."""

    hostnqn: str = ""
    hostid: bytes = b""
    kato_ms: int = 5000
    io_queues: int = 1
    queue_size: int = 32
    header_digest: bool = False
    data_digest: bool = False
    #: Admin and I/O command timeout (the kernel's admin_timeout/io_timeout).
    command_timeout: float = 30.0
    #: Seconds between reconnect attempts (``-c``; the kernel defaults to 10).
    reconnect_delay: float = 2.0
    #: Seconds to keep reconnecting before giving the controller up; -1 = forever (``-l``).
    ctrl_loss_tmo: float = 600.0
    #: Seconds I/O may wait for a reconnecting path before failing; None/-1 = off.
    fast_io_fail_tmo: float | None = None
    #: DH-HMAC-CHAP host secret, ``DHHC-1:..`` (``--dhchap-secret``); used only when a
    #: queue's Connect result asks for authentication (ATR). Kept out of the repr.
    dhchap_secret: str = field(default="", repr=False)
    #: Controller secret (``--dhchap-ctrl-secret``): authenticate the controller too.
    dhchap_ctrl_secret: str = field(default="", repr=False)
    #: TLS 1.3 with a PSK on every queue (``--tls``, TP 8011, docs/TLS.md); needs ``tls_key``.
    tls: bool = False
    #: The PSK, nvme-cli's interchange text ``NVMeTLSkey-1:01:..:`` (``--tls-key``; giving it
    #: implies ``tls``). Kept out of the repr.
    tls_key: str = field(default="", repr=False)
    #: PSK identity version: 0 ``NVMe0R0x <hostnqn> <subnqn>`` (what Linux 6.12 looks up) or 1
    #: (with the PSK digest).
    tls_identity_version: int = 0
    #: How the TLS PSK is derived from the key: ``compat`` (nvme-cli 2.13 / libnvme 1.13, the
    #: Debian 13 reference peer) or ``rfc8446`` (newer nvme-cli).
    tls_psk_derivation: str = "compat"
    #: An ``02`` (SHA-384) key under a SHA-256 suite, which tlshd 1.0.0 needs; False: the
    #: TLS_AES_256_GCM_SHA384 suite TP 8011 names (``--tls-sha384-r02``).
    tls_r02_sha256: bool = True

    def __post_init__(self) -> None:
        parse_secrets(self.dhchap_secret, self.dhchap_ctrl_secret)  # one-line ValueError
        if self.tls_key:
            self.tls = True
        elif self.tls:
            raise ValueError("--tls needs --tls-key (there is no kernel keyring here)")
        check_tls_options(self.tls_key, self.tls_identity_version, self.tls_psk_derivation)
        if not self.hostnqn:
            self.hostnqn, self.hostid = default_host_nqn()
        elif not self.hostid:
            self.hostid = uuid.uuid5(uuid.NAMESPACE_URL, self.hostnqn).bytes


@dataclass
class NamespaceInfo:
    nsid: int
    nlbas: int
    block_size: int
    ana_group: int
    ids: dict[str, Any] = field(default_factory=dict)


class HostController:
    """A connected controller: admin queue, I/O queues, keep-alive.

    Create with :func:`connect_controller` inside a nursery that outlives it.
    """

    def __init__(self, admin: HostQueue, subnqn: str, addr: tuple[str, int],
                 options: ControllerOptions, auth: AuthState | None = None) -> None:  # fmt: skip
        self.admin = admin
        self.auth = auth if auth is not None else AuthState()
        self.subnqn = subnqn
        self.addr = addr
        self.options = options
        self.cntlid = 0
        self.io_queues: list[HostQueue] = []
        self.identify: Any = None
        self.identify_data = b""
        self.vs = 0
        self.cap = 0
        self._shutting_down = False

    # -- admin helpers ---------------------------------------------------------------------------

    async def admin_command(self, sqe: bytes, *, read: int = 0,
                            write: bytes | None = None) -> tuple[Completion, bytearray]:  # fmt: skip
        """Run an admin command; raises CommandError on a failed status."""
        buffer = bytearray(read)
        done = await self.admin.submit(sqe, write=write, read=buffer if read else None,
                                       timeout=self.options.command_timeout)  # fmt: skip
        if not done.ok:
            raise CommandError(done.status, f"admin opcode {sqe[0]:#x} failed: {done.status}")
        return done, buffer

    async def property_get(self, offset: int, size8: bool = False) -> int:
        sqe = PROPERTY_GET_COMMAND.build(dict(fctype=FabricsType.PROPERTY_GET,
                                              attrib=int(size8), offset=offset))  # fmt: skip
        done, _ = await self.admin_command(sqe)
        return done.dw0 | (done.dw1 << 32 if size8 else 0)

    async def property_set(self, offset: int, value: int) -> None:
        sqe = PROPERTY_SET_COMMAND.build(dict(fctype=FabricsType.PROPERTY_SET, offset=offset,
                                              value=value))  # fmt: skip
        await self.admin_command(sqe)

    async def identify_raw(self, cns: int, nsid: int = 0, csi: int = 0) -> bytearray:
        sqe = IDENTIFY_COMMAND.build(dict(opcode=AdminOpcode.IDENTIFY, nsid=nsid, cns=cns,
                                          csi=csi))  # fmt: skip
        return (await self.admin_command(sqe, read=4096))[1]

    async def get_log_page(self, lid: int, length: int, *, nsid: int = NSID_ALL,
                           offset: int = 0, lsp: int = 0, rae: bool = False) -> bytearray:  # fmt: skip
        numd = length // 4 - 1
        sqe = GET_LOG_PAGE_COMMAND.build(dict(
            opcode=AdminOpcode.GET_LOG_PAGE, nsid=nsid, lid=lid, lsp=lsp | (0x80 if rae else 0),
            numdl=numd & 0xFFFF, numdu=numd >> 16, lpol=offset & 0xFFFFFFFF, lpou=offset >> 32,
        ))  # fmt: skip
        return (await self.admin_command(sqe, read=length))[1]

    async def set_features(self, fid: int, value: int) -> int:
        sqe = FEATURES_COMMAND.build(dict(opcode=AdminOpcode.SET_FEATURES, fid=fid,
                                          dword11=value))  # fmt: skip
        return (await self.admin_command(sqe))[0].dw0

    async def keep_alive(self) -> None:
        """One Keep Alive; it must complete within KATO or the admin queue is torn down."""
        sqe = NO_FIELDS_COMMAND.build(dict(opcode=AdminOpcode.KEEP_ALIVE))
        timeout = self.options.kato_ms / 1000 or self.options.command_timeout
        done = await self.admin.submit(sqe, timeout=timeout)
        if not done.ok:
            raise CommandError(done.status, f"Keep Alive failed: {done.status}")

    async def ana_log(self) -> AnaLog:
        ident = self.identify
        size = 16 + 32 * ident.nanagrpid + 4 * ident.mnan
        return parse_ana_log(await self.get_log_page(LogPage.ANA, size))

    async def active_namespaces(self) -> list[int]:
        return parse_active_ns_list(await self.identify_raw(Cns.ACTIVE_NS_LIST))

    async def namespace(self, nsid: int) -> NamespaceInfo:
        ns = parse_identify_ns(await self.identify_raw(Cns.NAMESPACE, nsid))
        ids = parse_ns_desc_list(await self.identify_raw(Cns.NS_DESC_LIST, nsid))
        fmt = ns.lbaf[ns.flbas & 0xF]
        return NamespaceInfo(nsid, ns.nsze, 1 << fmt.ds, ns.anagrpid, ids)

    # -- I/O -------------------------------------------------------------------------------------

    def _io_queue(self, index: int | None) -> HostQueue:
        if not self.io_queues:
            raise NvmeofError("no I/O queues")
        return self.io_queues[(index or 0) % len(self.io_queues)]

    async def io(self, opcode: int, nsid: int, slba: int, nlb: int, *,
                 write: bytes | bytearray | memoryview | None = None,
                 read: bytearray | memoryview | None = None, queue: int | None = None) -> Completion:  # fmt: skip
        """Submit one NVM command (NLB is a block count, not 0's based)."""
        sqe = bytearray(64)
        sqe[0] = opcode
        sqe[1] = 0x40
        sqe[4:8] = nsid.to_bytes(4, "little")
        RW_TAIL.pack_into(sqe, RW_TAIL_OFFSET, slba, nlb - 1, 0, 0, 0, 0, 0)
        return await self._io_queue(queue).submit(sqe, write=write, read=read,
                                                  timeout=self.options.command_timeout)  # fmt: skip

    async def write(self, nsid: int, slba: int, data: bytes | bytearray | memoryview,
                    block_size: int, queue: int | None = None) -> Completion:  # fmt: skip
        return await self.io(IoOpcode.WRITE, nsid, slba, len(data) // block_size, write=data,
                             queue=queue)  # fmt: skip

    async def read(self, nsid: int, slba: int, nlb: int, block_size: int,
                   queue: int | None = None) -> tuple[Completion, bytearray]:  # fmt: skip
        buffer = bytearray(nlb * block_size)
        done = await self.io(IoOpcode.READ, nsid, slba, nlb, read=buffer, queue=queue)
        return done, buffer

    # -- lifecycle -------------------------------------------------------------------------------

    async def keep_alive_loop(self) -> None:
        """Send Keep Alive every KATO/2 until the admin queue closes."""
        period = self.options.kato_ms / 2000
        while period > 0 and not self.admin.closed:
            await trio.sleep(period)
            try:
                await self.keep_alive()
            except (NvmeofError, trio.TooSlowError) as err:
                if not self._shutting_down:
                    why = str(err) or f"no answer within {self.options.kato_ms} ms"
                    log.warning("keep-alive failed %s:%s: %s", *self.addr, why)
                return

    async def shutdown(self) -> None:
        """Close the I/O queues, request a normal shutdown (CC.SHN), close the admin queue."""
        self._shutting_down = True
        for queue in self.io_queues:
            await queue.aclose()
        if not self.admin.closed:
            try:
                with trio.move_on_after(5):
                    await self.property_set(Property.CC, CC_SHUTDOWN)
            except NvmeofError:
                pass
        await self.admin.aclose()


async def _connect_queue(ctrl: HostController, queue: HostQueue, qid: int, sqsize: int) -> int:
    opts = ctrl.options
    sqe = CONNECT_COMMAND.build(dict(fctype=FabricsType.CONNECT, qid=qid, sqsize=sqsize - 1,
                                     kato=opts.kato_ms if qid == 0 else 0))  # fmt: skip
    data = CONNECT_DATA.build(dict(hostid=opts.hostid, subsysnqn=ctrl.subnqn,
                                   hostnqn=opts.hostnqn,
                                   cntlid=CNTLID_DYNAMIC if qid == 0 else ctrl.cntlid))  # fmt: skip
    done = await queue.submit(sqe, write=data, timeout=opts.command_timeout)
    if not done.ok:
        # DW0 of a refused Connect: IATTR (bit 16) and IPO, the offending field (nvmet's
        # IPO_IATTR_CONNECT_DATA/SQE), e.g. 0x10200 = the host NQN in the Connect data
        raise CommandError(done.status, f"Connect qid {qid} to {ctrl.subnqn} refused: "
                           f"{done.status.describe(fabrics=True)} "
                           f"(DW0 {done.dw0:#x}{_connect_field(done.dw0)})")  # fmt: skip
    secret, ctrl_secret = parse_secrets(opts.dhchap_secret, opts.dhchap_ctrl_secret)
    await authenticate_queue(queue, qid, done.dw0, secret=secret, ctrl_secret=ctrl_secret,
                             hostnqn=opts.hostnqn, subsysnqn=ctrl.subnqn, state=ctrl.auth,
                             timeout=opts.command_timeout)  # fmt: skip
    return done.dw0 & 0xFFFF


async def connect_controller(
    nursery: trio.Nursery, host: str, port: int, subnqn: str,
    options: ControllerOptions | None = None, *, auth: AuthState | None = None,
    tls_counts: TlsCounts | None = None,
) -> HostController:  # fmt: skip
    """Bring a controller up like ``nvme connect`` and start its keep-alive task.

    With ``options.tls`` every queue does its TLS handshake first, with the PSK identity for
    (host NQN, ``subnqn``); ``tls_counts`` counts them (a session's, across reconnects).
    Each queue authenticates after its Connect when the controller asks (ATR); ``auth``
    carries the T_ID counter across reconnects (a :class:`~initiator.session.Session`'s).
    """
    opts = options or ControllerOptions()
    discovery = subnqn == DISCOVERY_NQN
    psk = None
    if opts.tls:
        psk = queue_psk(opts.tls_key, opts.hostnqn, subnqn,
                        identity_version=opts.tls_identity_version,
                        derivation=opts.tls_psk_derivation, r02_sha256=opts.tls_r02_sha256)  # fmt: skip
    counts = tls_counts if tls_counts is not None else TlsCounts()

    async def open_queue(qid: int, depth: int) -> HostQueue:
        try:
            queue = await HostQueue.connect(nursery, host, port, qid=qid, depth=depth,
                                            header_digest=opts.header_digest,
                                            data_digest=opts.data_digest, tls=psk)  # fmt: skip
        except TlsHandshakeError:
            counts.failed += 1
            raise
        if psk is not None:
            counts.ok += 1
        return queue

    admin = await open_queue(0, 32)
    if psk is not None:
        log.info("controller %s:%s %s: tls cipher=%s identity=%s", host, port, subnqn,
                 admin.tls_cipher, psk.identity.decode(errors="replace"))  # fmt: skip
    ctrl = HostController(admin, subnqn, (host, port), opts, auth)
    try:
        ctrl.cntlid = await _connect_queue(ctrl, admin, 0, 32)
        ctrl.cap = await ctrl.property_get(Property.CAP, size8=True)
        await ctrl.property_set(Property.CC, CC_DISABLED)
        await ctrl.property_set(Property.CC, CC_ENABLE)
        with trio.fail_after(max(1.0, ((ctrl.cap >> 24) & 0xFF) / 2)):
            # Polling a remote register, as nvme_wait_ready does; there is nothing to wait on.
            while not await ctrl.property_get(Property.CSTS) & CSTS_RDY:  # noqa: ASYNC110
                await trio.sleep(0.002)
        ctrl.vs = await ctrl.property_get(Property.VS)
        ctrl.identify_data = bytes(await ctrl.identify_raw(Cns.CONTROLLER))
        ctrl.identify = parse_identify_ctrl(ctrl.identify_data)
        if ctrl.identify.cntlid != ctrl.cntlid:
            raise NvmeofError(f"Identify CNTLID {ctrl.identify.cntlid} != Connect {ctrl.cntlid}")
        if not discovery and opts.io_queues:
            want = opts.io_queues - 1
            granted = await ctrl.set_features(FeatureId.NUM_QUEUES, want | (want << 16))
            count = min((granted & 0xFFFF) + 1, (granted >> 16) + 1, opts.io_queues)
            sqsize = min(opts.queue_size, (ctrl.cap & 0xFFFF) + 1, ctrl.identify.maxcmd or 1 << 16)
            for qid in range(1, count + 1):
                queue = await open_queue(qid, sqsize)
                queue.in_capsule_limit = max(ctrl.identify.ioccsz * 16 - 64, 0)
                ctrl.io_queues.append(queue)
                await _connect_queue(ctrl, queue, qid, sqsize)
    except BaseException:
        await ctrl.shutdown()
        raise
    if opts.kato_ms:
        nursery.start_soon(ctrl.keep_alive_loop)
    return ctrl


#: Connect data fields by offset (NVMe-oF Connect command data): what a refusal's IPO names.
_CONNECT_DATA_FIELDS = {0: "host ID", 16: "CNTLID", 256: "subsystem NQN", 512: "host NQN"}


def _connect_field(dw0: int) -> str:
    """``: <field>`` for a refused Connect's DW0 that points into the Connect data."""
    if not dw0 >> 16 & 1:  # IATTR 0: the offset is in the SQE
        return f": SQE byte {dw0 & 0xFFFF}" if dw0 else ""
    field = _CONNECT_DATA_FIELDS.get(dw0 & 0xFFFF)
    return f": {field}" if field else f": Connect data byte {dw0 & 0xFFFF}"
