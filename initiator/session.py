"""A controller that stays connected: reconnect, keep-alive, AEN handling, ANA updates.

Like the Linux host's controller states: LIVE while the association works; on connection loss,
keep-alive or I/O timeout it goes CONNECTING — every outstanding command completes as Host
Aborted (0x371) and fails over — then reconnects every ``reconnect_delay`` seconds with a full
new association (docs/PROTOCOL.md §7.3) until ``ctrl_loss_tmo`` expires and it is DELETED.
"""

from __future__ import annotations

import logging
import math
from enum import Enum
from typing import TYPE_CHECKING, Protocol

import trio

from initiator.auth import AuthenticationError, AuthState
from initiator.controller import (
    ControllerOptions,
    HostController,
    NamespaceInfo,
    connect_controller,
)
from initiator.queue import HostQueue, PeerClosed, QueueClosed
from initiator.tls import TlsCounts, TlsHandshakeError
from logfmt.aggregate import Aggregator
from nvmeof.constants import (
    OAES_ANA_CHANGE,
    OAES_NS_ATTR,
    AdminOpcode,
    AenNotice,
    AenType,
    AnaState,
    FeatureId,
    LogPage,
)
from nvmeof.errors import NvmeofError
from nvmeof.wire.sqe import NO_FIELDS_COMMAND

if TYPE_CHECKING:
    from initiator.ring import Slot

log = logging.getLogger("nvmeof.initiator")

#: Transfer cap when a controller reports MDTS 0 ("no limit", as nvmet does over TCP): what the
#: Linux host's block layer would send at most, and below nvmet's multi-PDU digest bug.
DEFAULT_MAX_TRANSFER = 1 << 20

#: Identify Controller bytes 386-387: Command Quiesce Time in milliseconds (NVMe 2.0).
_CQT_OFFSET = 386
_CRDT_OFFSET = 128
_AER_SQE = NO_FIELDS_COMMAND.build(dict(opcode=AdminOpcode.ASYNC_EVENT_REQUEST))


class PathHead(Protocol):
    """What a session tells the namespace head of one of its paths
    (:class:`initiator.multipath.MultipathHead`, which is built on sessions)."""

    def note(self, what: str) -> None: ...
    def kick(self) -> None: ...
    def complete(self, slot: Slot, status: int, dw0: int, dw1: int) -> None: ...


class SessionPath(Protocol):
    """One of the session's namespaces as a path of a head (:class:`initiator.multipath.Path`)."""

    ana_state: AnaState
    ana_group: int
    ana_pending: bool

    @property
    def head(self) -> PathHead | None: ...
    def detach(self) -> None: ...


class SessionOwner(Protocol):
    """Who keeps the namespace heads (:class:`initiator.host.Host`)."""

    def register_path(self, session: Session, info: NamespaceInfo) -> SessionPath: ...


class SessionState(Enum):
    NEW = "new"
    LIVE = "live"
    CONNECTING = "connecting"
    DELETED = "deleted"


#: For the per-I/O checks (``live``): an enum member looked up on its class costs ~0.2 us.
SESSION_LIVE = SessionState.LIVE


class Session:
    """One controller of the host, kept connected.

    Args:
        host: what owns the namespace heads (a :class:`~initiator.host.Host`).
        addr / port / subnqn: where and what to connect to.
        options: identity, queues, timeouts (reconnect_delay, ctrl_loss_tmo, fast_io_fail_tmo).
    """

    def __init__(self, host: SessionOwner, addr: str, port: int, subnqn: str,
                 options: ControllerOptions) -> None:  # fmt: skip
        self.host = host
        self.addr = addr
        self.port = port
        self.subnqn = subnqn
        self.options = options
        self.label = f"{addr}:{port}"
        self.state = SessionState.NEW
        self.assoc: HostController | None = None
        self.paths: dict[int, SessionPath] = {}
        self.crdt: tuple[int, int, int] = (0, 0, 0)
        self.cqt = 0.0
        #: When commands this controller may still be executing are certainly dead (TP4129):
        #: set at the loss of communication; writes failed over from it wait until then.
        self.quiesce_until = -math.inf
        self.quiesce_noted = -math.inf  # the deadline the head last announced
        self.last_failover = -math.inf
        self.problems = Aggregator(log, level=logging.WARNING)
        self.reconnects = 0  # attempts
        self.reconnected = 0  # attempts that brought the controller back
        #: DH-HMAC-CHAP T_ID counter and outcome counts, kept across reconnects.
        self.auth = AuthState()
        #: TLS handshakes by outcome (every queue of every association).
        self.tls = TlsCounts()
        self.lost_at: float | None = None
        self.anatt_deadline = math.inf  # armed while an ANA group is in the change state
        self._scope: trio.CancelScope | None = None
        self._ana_kick = trio.Event()
        self._deleting = False

    # -- state -------------------------------------------------------------------------------------

    @property
    def live(self) -> bool:
        return self.state is SESSION_LIVE

    @property
    def may_recover(self) -> bool:
        """Live, or reconnecting with I/O still allowed to wait (fast_io_fail_tmo not expired)."""
        if self.state is SessionState.DELETED:
            return False
        return trio.current_time() < self.failfast_deadline

    @property
    def failfast_deadline(self) -> float:
        """When I/O stops waiting for this controller (inf when live or no fast_io_fail_tmo)."""
        tmo = self.options.fast_io_fail_tmo
        if tmo is None or tmo < 0 or self.lost_at is None or self.live:
            return math.inf
        return self.lost_at + tmo

    @property
    def io_queues(self) -> list[HostQueue]:
        assoc = self.assoc
        return assoc.io_queues if assoc is not None and self.state is SESSION_LIVE else []

    @property
    def max_transfer(self) -> int:
        """Largest transfer per command: 2^MDTS x 4 KiB, or the default cap for MDTS 0."""
        mdts = self.assoc.identify.mdts if self.assoc is not None else 0
        return (1 << mdts) * 4096 if mdts else DEFAULT_MAX_TRANSFER

    @property
    def cntlid(self) -> int:
        return self.assoc.cntlid if self.assoc is not None else 0

    def request_ana_reread(self) -> None:
        self._ana_kick.set()

    def _set_state(self, state: SessionState, why: str = "") -> None:
        if state is self.state:
            return
        self.state = state
        log.info("controller %s %s %s", self.label, state.value, why)
        for path in self.paths.values():
            if path.head is not None:
                path.head.note(f"{self.label} {state.value}{': ' + why if why else ''}")
                path.head.kick()

    # -- lifecycle ---------------------------------------------------------------------------------

    async def run(
        self, *, task_status: trio.TaskStatus[Session] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Connect, serve, and reconnect until deleted. The first connect must succeed."""
        first = True
        while not self._deleting:
            try:
                async with trio.open_nursery() as nursery:
                    self._scope = nursery.cancel_scope
                    await self._associate(nursery)
                    if first:
                        first = False
                        task_status.started(self)
                    await trio.sleep_forever()
            except BaseException as exc:
                # A Trio nursery delivers even a single error as an ExceptionGroup.
                err = _recoverable(exc)
                if err is None:
                    raise
                if first:
                    self._set_state(SessionState.DELETED, f"connect failed: {err}")
                    raise
                if isinstance(err, _SECURITY_ERRORS) and err.permanent:
                    # nvmf_should_reconnect: no reconnect after an authentication failure
                    # (-EKEYREJECTED, -ENOKEY) or a DNR status: the same would happen again;
                    # likewise after a TLS handshake the target refused (the same key again)
                    self._lost("association ended")
                    self._set_state(SessionState.DELETED, f"not reconnecting: {err}")
                    return
                # a reconnect every reconnect_delay fails the same way while the path is down
                self.problems.note(f"controller {self.label}:", str(err))
            self._lost("association ended")
            if self._deleting:
                break
            now = trio.current_time()
            if self.lost_at is None:
                self.lost_at = now
            tmo = self.options.ctrl_loss_tmo
            if tmo >= 0 and now - self.lost_at >= tmo:
                self._set_state(SessionState.DELETED, f"ctrl_loss_tmo {tmo:g} s expired")
                return
            await trio.sleep(self.options.reconnect_delay)
            self.reconnects += 1
        self._set_state(SessionState.DELETED, "disconnected")

    async def _associate(self, nursery: trio.Nursery) -> None:
        self.anatt_deadline = math.inf
        assoc = await connect_controller(nursery, self.addr, self.port, self.subnqn,
                                         self.options, auth=self.auth,
                                         tls_counts=self.tls)  # fmt: skip
        self.assoc = assoc
        data = assoc.identify_data
        self.crdt = tuple(
            int.from_bytes(data[_CRDT_OFFSET + 2 * i : _CRDT_OFFSET + 2 * i + 2], "little")
            for i in range(3)
        )  # type: ignore[assignment]
        self.cqt = int.from_bytes(data[_CQT_OFFSET : _CQT_OFFSET + 2], "little") / 1000
        for queue in [assoc.admin, *assoc.io_queues]:
            queue.on_close = self._queue_lost
            queue.on_slot_complete = _complete_slot
        await self._scan(assoc)
        if self.lost_at is not None:
            self.reconnected += 1
        self.lost_at = None
        self._set_state(SessionState.LIVE)
        nursery.start_soon(self._aer_loop, assoc)
        nursery.start_soon(self._ana_loop, assoc)
        nursery.start_soon(self._io_timeout_watch, assoc)
        nursery.start_soon(self._anatt_watch)

    async def _scan(self, assoc: HostController) -> None:
        """Namespaces and their ANA state: create or update this controller's paths."""
        nsids = await assoc.active_namespaces()
        for nsid in nsids:
            if nsid not in self.paths:
                info = await assoc.namespace(nsid)
                self.paths[nsid] = self.host.register_path(self, info)
        for nsid in [n for n in self.paths if n not in nsids]:
            self.paths.pop(nsid).detach()
        await self._read_ana(assoc)

    async def _read_ana(self, assoc: HostController) -> None:
        if not assoc.identify.cmic & (1 << 3):
            for path in self.paths.values():
                path.ana_state, path.ana_pending = AnaState.OPTIMIZED, False
            return
        ana = await assoc.ana_log()
        for group in ana.groups:
            state = AnaState(group.state)
            for nsid in group.nsids:
                found = self.paths.get(nsid)
                if found is None:
                    continue
                path = found
                if path.ana_state != state and path.head is not None:
                    path.head.note(f"{self.label} ANA group {group.grpid} {state.label}")
                path.ana_state, path.ana_group, path.ana_pending = state, group.grpid, False
                if path.head is not None:
                    path.head.kick()
        self._arm_anatt(assoc, any(g.state == AnaState.CHANGE for g in ana.groups))

    def _arm_anatt(self, assoc: HostController, in_change: bool) -> None:
        """The kernel's ANATT timer (nvme_anatt_timeout): a group left in the change state for
        more than 2 x ANATT seconds gets the controller reset; leaving change disarms it."""
        if not in_change:
            self.anatt_deadline = math.inf
        elif self.anatt_deadline == math.inf:
            self.anatt_deadline = trio.current_time() + 2 * max(1, assoc.identify.anatt)

    async def _anatt_watch(self) -> None:
        while True:
            await trio.sleep_until(min(self.anatt_deadline, trio.current_time() + 1.0))
            if trio.current_time() >= self.anatt_deadline:
                self.anatt_deadline = math.inf
                self._lost("ANATT timeout: an ANA group stayed in change, resetting")
                return

    def _queue_lost(self, err: BaseException) -> None:
        if self.live:
            self._lost(f"connection lost: {err}", peer_closed=isinstance(err, _PEER_CLOSED))

    def _lost(self, why: str, *, peer_closed: bool = False) -> None:
        """Error recovery: no longer live, every queue aborted (slots fail over), then reconnect.

        ``peer_closed``: the target ended the connection, so it knows; otherwise the host gave
        up (a timeout) and the controller may learn of it only by its own keep-alive timer."""
        if self.lost_at is None:
            self.lost_at = trio.current_time()  # starts ctrl_loss_tmo and fast_io_fail_tmo
            self.quiesce_until = self._quiesce_deadline(self.lost_at, peer_closed)
        if self.state is SessionState.LIVE:
            self._set_state(SessionState.CONNECTING, why)
        elif self.state is not SessionState.DELETED and not self._deleting:
            self.state = SessionState.CONNECTING
        assoc = self.assoc
        if assoc is not None:
            for queue in [*assoc.io_queues, assoc.admin]:
                queue._fail(QueueClosed(why))
        if self._scope is not None:
            self._scope.cancel()

    def _quiesce_deadline(self, lost_at: float, peer_closed: bool) -> float:
        """TP4129 (NVMe 2.1, KATO corrections): after a loss of communication, a controller
        may go on executing commands until it has noticed the loss and then for CQT more. It
        notices at once when it saw the connection close; otherwise by its keep-alive timer,
        within 2 x KATO (3 x with traffic based keep-alive, CTRATT.TBKAS), the bound the
        Linux host's TP4129 patches use (nvmef_req_hold_timeout_ms). A controller that
        reports no CQT (0) makes no promise we could wait for: nothing is held, as the Linux
        host does today."""
        if not self.cqt:
            return -math.inf
        detect = 0.0
        if not peer_closed and self.assoc is not None:
            traffic_based = self.assoc.identify.ctratt & _CTRATT_TBKAS
            detect = (3 if traffic_based else 2) * self.options.kato_ms / 1000
        return lost_at + detect + self.cqt

    async def disconnect(self) -> None:
        """Like ``nvme disconnect``: shut the controller down and stop reconnecting."""
        self._deleting = True
        assoc = self.assoc
        if assoc is not None and self.live:
            self.state = SessionState.DELETED
            with trio.move_on_after(5):
                await assoc.shutdown()
        self._set_state(SessionState.DELETED, "disconnected")
        if self._scope is not None:
            self._scope.cancel()

    # -- background work ---------------------------------------------------------------------------

    async def _aer_loop(self, assoc: HostController) -> None:
        wanted = assoc.identify.oaes & (OAES_ANA_CHANGE | OAES_NS_ATTR)
        if not wanted:
            return
        try:
            await assoc.set_features(FeatureId.ASYNC_EVENT, wanted)
            while True:
                done = await assoc.admin.submit(_AER_SQE, timeout=math.inf)
                if not done.ok:
                    log.warning("controller %s: AER failed: %s", self.label, done.status)
                    return
                event_type, info = done.dw0 & 0x7, (done.dw0 >> 8) & 0xFF
                if event_type == AenType.NOTICE and info == AenNotice.ANA_CHANGE:
                    self.request_ana_reread()
                elif event_type == AenType.NOTICE and info == AenNotice.NS_ATTR_CHANGED:
                    await assoc.get_log_page(LogPage.CHANGED_NS, 4096)
                    await self._scan(assoc)
        except NvmeofError as err:
            log.debug("controller %s: AER loop ended: %s", self.label, err)

    async def _ana_loop(self, assoc: HostController) -> None:
        while True:
            await self._ana_kick.wait()
            self._ana_kick = trio.Event()
            try:
                await self._read_ana(assoc)
            except NvmeofError as err:
                log.debug("controller %s: ANA log read failed: %s", self.label, err)
                return

    async def _io_timeout_watch(self, assoc: HostController) -> None:
        timeout = self.options.command_timeout
        period = min(1.0, timeout / 4)
        while True:
            await trio.sleep(period)
            oldest = min((q.oldest_slot_sent_at() for q in assoc.io_queues), default=math.inf)
            if trio.current_time() - oldest > timeout:
                self._lost(f"I/O timeout ({timeout:g} s)")
                return


#: How a queue ends when the target closed it (EOF, C2HTermReq, RST, a broken pipe).
_PEER_CLOSED = (PeerClosed, ConnectionResetError, BrokenPipeError)
#: CTRATT bit 6: Traffic Based Keep Alive Support.
_CTRATT_TBKAS = 1 << 6

#: Failures that end the controller when ``permanent`` (the same key would fail again).
_SECURITY_ERRORS = (AuthenticationError, TlsHandshakeError)
#: Errors that end an association but not the controller: reconnect after them.
_RECOVERABLE = (NvmeofError, OSError, trio.TooSlowError)


def _recoverable(exc: BaseException) -> BaseException | None:
    """The error to report if ``exc`` (bare or an ExceptionGroup) consists only of errors a
    reconnect can cure, else None (cancellation, bugs: let them propagate)."""
    if isinstance(exc, BaseExceptionGroup):
        matched, rest = exc.split(_RECOVERABLE)
        if matched is None or rest is not None:
            return None
        leaf: BaseException = matched
        while isinstance(leaf, BaseExceptionGroup):
            leaf = leaf.exceptions[0]
        return leaf
    return exc if isinstance(exc, _RECOVERABLE) else None


def _complete_slot(slot: Slot, status: int, dw0: int, dw1: int) -> None:
    path: SessionPath | None = slot.path
    assert path is not None and path.head is not None
    path.head.complete(slot, status, dw0, dw1)
