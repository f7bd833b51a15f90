"""NVM command handlers: Read, Write, Compare, Flush, Write Zeroes, Dataset Management.

The RAM and null backends are served synchronously (no task, no await) — this is the data path.
Checks in nvmet's order: namespace, ANA state of the (port, group), LBA range, transfer length.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TYPE_CHECKING, TypeVar

from nvmeof.constants import NSID_ALL, AnaState, IoOpcode
from nvmeof.errors import CommandError
from nvmeof.status import StatusCode, status_word
from nvmeof.wire.fast import RW_TAIL, RW_TAIL_OFFSET
from nvmeof.wire.sqe import RW_CONTROL_FUA
from target.commands.admin import MAX_TRANSFER
from target.commands.request import (
    LOC_CDW10,
    LOC_NSID,
    ExecuteResult,
    QueueContext,
    Reply,
    Request,
    check_transfer_len,
    fail,
)

if TYPE_CHECKING:
    from target.controller import Controller
    from target.reservations import Reservations
    from target.subsystem import Namespace

T = TypeVar("T")

#: ANA state -> path status (no DNR: the host fails over), as nvmet_check_ana_state.
ANA_STATUS = {
    AnaState.INACCESSIBLE: StatusCode.ANA_INACCESSIBLE,
    AnaState.PERSISTENT_LOSS: StatusCode.ANA_PERSISTENT_LOSS,
    AnaState.CHANGE: StatusCode.ANA_TRANSITION,
}
_COMPARE_FAILED = status_word(StatusCode.COMPARE_FAILED, dnr=True)
_DSM_RANGE_SIZE = 16


def namespace_of(q: QueueContext, req: Request) -> tuple[Controller, Namespace]:
    """The command's controller and namespace, checked as nvmet_parse_io_cmd does (the
    namespace, then its ANA state on this port), and not aborted by a preempt-and-abort."""
    ctrl = q.controller
    assert ctrl is not None and ctrl.subsystem is not None
    ns = ctrl.subsystem.active_namespace(req.nsid)
    if ns is None:
        raise fail(StatusCode.INVALID_NS, f"NSID {req.nsid} is not active", loc=LOC_NSID)
    ana = ctrl.port.ana_state(ns.ana_group)  # ANA belongs to the controller's port
    if ana in ANA_STATUS:
        raise fail(ANA_STATUS[ana], f"ANA group {ns.ana_group} is {ana.label}", dnr=False,
                   loc=LOC_NSID)  # fmt: skip
    resv = ns.reservations
    if resv is not None and resv.aborted:
        _check_aborted(resv, ctrl, req)
    return ctrl, ns


def _check_aborted(resv: Reservations, ctrl: Controller, req: Request) -> None:
    """A command that arrived before its host was preempted with abort, and runs only now
    (its data came later, a fault held it), is aborted: it must not land after the preemptor
    took over. DNR: retrying it would be the stale write the preemptor fenced off."""
    preempted_at = resv.aborted.get(ctrl.hostid)
    if preempted_at is not None and req.received_at <= preempted_at:
        raise fail(StatusCode.ABORTED_PREEMPT_ABORT, "aborted by a preempt-and-abort")


def _run(ctrl: Controller, ns: Namespace, work: Awaitable[T]) -> Awaitable[T]:
    """Storage work that leaves the event loop; counted per host on a namespace with
    reservations, so that a preempt-and-abort can wait for it."""
    resv = ns.reservations
    return work if resv is None else _tracked(resv, ctrl.hostid, work)


async def _tracked(resv: Reservations, hostid: bytes, work: Awaitable[T]) -> T:
    counts = resv.inflight
    counts[hostid] = counts.get(hostid, 0) + 1
    try:
        return await work
    finally:
        left = counts[hostid] - 1
        if left:
            counts[hostid] = left
        else:
            del counts[hostid]
        if resv.idle_waiters:
            waiters, resv.idle_waiters = resv.idle_waiters, []
            for wake in waiters:
                wake()


def out_of_range(q: QueueContext, message: str) -> CommandError:
    """I/O beyond the namespace. nvmet's block device backend has no range check of its own:
    the block layer fails the bio (BLK_STS_IOERR) and blk_to_nvme_status answers Internal
    Error, DNR, logged at the opcode. Strict mode answers LBA Out of Range, as the spec says."""
    if q.port.strict:
        return fail(StatusCode.LBA_RANGE, message, loc=LOC_CDW10)
    return fail(StatusCode.INTERNAL, message, loc=0)


def check_namespace(q: QueueContext, req: Request) -> Namespace:
    """nvmet_parse_io_cmd checks the namespace and its ANA state before the opcode."""
    return namespace_of(q, req)[1]


def _rw_range(q: QueueContext, req: Request) -> tuple[Controller, Namespace, int, int]:
    """Validate a Read/Write/Compare; returns (controller, namespace, byte offset, length)."""
    ctrl, ns = namespace_of(q, req)
    slba, nlb = RW_TAIL.unpack_from(req.sqe, RW_TAIL_OFFSET)[:2]
    nblocks = nlb + 1
    length = nblocks << ns.lba_shift
    check_transfer_len(req, length)  # nvmet_bdev_execute_rw checks the length first
    if length > MAX_TRANSFER and q.port.strict:
        raise fail(StatusCode.INVALID_FIELD, f"transfer of {length} bytes exceeds MDTS")
    if slba + nblocks > ns.nlbas:
        raise out_of_range(q, f"LBA {slba}+{nblocks} beyond {ns.nlbas}")
    return ctrl, ns, slba << ns.lba_shift, length


def prepare_rw(q: QueueContext, req: Request) -> None:
    _rw_range(q, req)


def execute_read(q: QueueContext, req: Request) -> ExecuteResult:
    ctrl, ns, offset, length = _rw_range(q, req)
    stats = ctrl.stats
    stats.read_commands += 1
    stats.bytes_read += length
    backend = ns.backend
    if backend.synchronous:
        return Reply(data=backend.read_sync(offset, length))
    return _run(ctrl, ns, _read_async(ns, offset, length))


async def _read_async(ns: Namespace, offset: int, length: int) -> Reply:
    return Reply(data=await ns.backend.read(offset, length))


def execute_write(q: QueueContext, req: Request) -> ExecuteResult:
    ctrl, ns, offset, length = _rw_range(q, req)
    data = req.data
    assert data is not None and len(data) == length
    stats = ctrl.stats
    stats.write_commands += 1
    stats.bytes_written += length
    backend = ns.backend
    if backend.synchronous:
        backend.write_sync(offset, data)
        return _OK
    # Force Unit Access: the write is on stable storage before it completes (nvmet's file
    # backend turns it into IOCB_DSYNC); the backend's sync mode decides what that costs.
    fua = bool(RW_TAIL.unpack_from(req.sqe, RW_TAIL_OFFSET)[2] & RW_CONTROL_FUA)
    return _run(ctrl, ns, _await_ok(backend.write(offset, data, fua)))


def execute_compare(q: QueueContext, req: Request) -> ExecuteResult:
    ctrl, ns, offset, length = _rw_range(q, req)
    assert req.data is not None
    if ns.backend.synchronous:
        same = ns.backend.read_sync(offset, length) == req.data
        return _OK if same else Reply(status=_COMPARE_FAILED)
    return _run(ctrl, ns, _compare_async(ns, offset, length, req.data))


async def _compare_async(ns: Namespace, offset: int, length: int, data: bytes | bytearray) -> Reply:
    same = await ns.backend.read(offset, length) == data
    return _OK if same else Reply(status=_COMPARE_FAILED)


def execute_flush(q: QueueContext, req: Request) -> ExecuteResult:
    ctrl = q.controller
    assert ctrl is not None and ctrl.subsystem is not None
    if req.nsid == NSID_ALL and q.port.strict:
        namespaces = [ctrl.subsystem.namespaces[n] for n in ctrl.subsystem.active_nsids()]
    else:
        ctrl, ns = namespace_of(q, req)
        namespaces = [ns]
    if req.transfer_length:
        # nvmet neither checks a Flush's SGL nor fills the buffer it then sends (a read-
        # direction command with a length gets C2HData): we send zeros.
        return Reply(data=bytes(req.transfer_length))
    if all(ns.backend.synchronous for ns in namespaces):
        return _OK
    return _run(ctrl, namespaces[0], _flush_async(namespaces))


async def _flush_async(namespaces: list[Namespace]) -> Reply:
    for ns in namespaces:
        await ns.backend.flush()
    return _OK


def execute_write_zeroes(q: QueueContext, req: Request) -> ExecuteResult:
    ctrl, ns = namespace_of(q, req)
    check_transfer_len(req, 0)
    slba, nlb = RW_TAIL.unpack_from(req.sqe, RW_TAIL_OFFSET)[:2]
    if slba + nlb + 1 > ns.nlbas:
        raise out_of_range(q, f"LBA {slba}+{nlb + 1} beyond {ns.nlbas}")
    work = _await_ok(ns.backend.write_zeroes(slba << ns.lba_shift, (nlb + 1) << ns.lba_shift))
    return _run(ctrl, ns, work)


def _dsm_ranges(req: Request) -> int:
    """How many ranges the command names, read as nvmet_dsm_len() does.

    The spec's NR is bits 7:0 of CDW10, but nvmet reads the whole dword (u32 arithmetic), so a
    host that leaves bits in 31:8 gets Data SGL Length Invalid from nvmet: so from us.
    """
    return (req.dword(10) + 1) & 0xFFFFFFFF


def prepare_dsm(q: QueueContext, req: Request) -> None:
    namespace_of(q, req)
    need = (_dsm_ranges(req) * _DSM_RANGE_SIZE) & 0xFFFFFFFF
    if req.transfer_length < need:  # nvmet_check_data_len_lte
        raise fail(StatusCode.SGL_INVALID_DATA, f"DSM ranges need {need} bytes", loc=24)


def execute_dsm(q: QueueContext, req: Request) -> ExecuteResult:
    prepare_dsm(q, req)
    ctrl, ns = namespace_of(q, req)
    assert req.data is not None
    if not req.dword(11) & (1 << 2):  # only deallocate does anything; hints are accepted
        return _OK
    nr = min(_dsm_ranges(req), len(req.data) // _DSM_RANGE_SIZE)
    ranges = []
    for i in range(nr):
        base = i * _DSM_RANGE_SIZE
        nlb = int.from_bytes(req.data[base + 4 : base + 8], "little")
        slba = int.from_bytes(req.data[base + 8 : base + 16], "little")
        if slba + nlb > ns.nlbas:
            raise fail(StatusCode.LBA_RANGE, f"DSM range {slba}+{nlb} beyond {ns.nlbas}")
        ranges.append((slba << ns.lba_shift, nlb << ns.lba_shift))
    return _run(ctrl, ns, _deallocate(ns, ranges))


async def _deallocate(ns: Namespace, ranges: list[tuple[int, int]]) -> Reply:
    for offset, length in ranges:
        if length:
            await ns.backend.write_zeroes(offset, length)
    return _OK


async def _await_ok(work: Awaitable[None]) -> Reply:
    await work
    return _OK


_OK = Reply()

IO_HANDLERS = {
    IoOpcode.READ: (None, execute_read),
    IoOpcode.WRITE: (prepare_rw, execute_write),
    IoOpcode.COMPARE: (prepare_rw, execute_compare),
    IoOpcode.FLUSH: (None, execute_flush),
    IoOpcode.WRITE_ZEROES: (None, execute_write_zeroes),
    IoOpcode.DATASET_MANAGEMENT: (prepare_dsm, execute_dsm),
}
