"""Admin command handlers: Identify, Get Log Page, Get/Set Features, Keep Alive, AER, Abort.

Pure functions of the model and the SQE (docs/PROTOCOL.md §5); values are chosen so the Linux
host's checks in ``nvme_init_identify``/``nvme_mpath_init_identify`` pass (§9.2).
"""

from __future__ import annotations

from nvmeof.constants import (
    DISCOVERY_NQN,
    IDENTIFY_SIZE,
    NSID_ALL,
    AdminOpcode,
    Cns,
    ControllerType,
    FeatureId,
    IoOpcode,
    LogPage,
)
from nvmeof.status import StatusCode
from nvmeof.wire.identify import (
    build_active_ns_list,
    build_identify_ctrl,
    build_identify_ns,
    build_ns_desc_list,
    lba_format,
)
from nvmeof.wire.logpages import (
    EFFECTS_CSUPP,
    EFFECTS_LBCC,
    build_ana_log,
    build_changed_ns_list,
    build_discovery_log,
    build_effects_log,
    build_error_log,
    build_fw_slot_log,
    build_smart_log,
)
from nvmeof.wire.reservations import ONCS_RESERVATIONS, build_notification_log, rescap
from target.commands.request import (
    LOC_CDW10,
    PENDING,
    ExecuteResult,
    QueueContext,
    Reply,
    Request,
    check_transfer_len,
    fail,
)
from target.controller import AERL, ERROR_LOG_ENTRIES, Controller
from target.reservations import NOTIFICATION_MASK_ALL, Reservations
from target.state import MAX_ANA_GROUPS

FIRMWARE_REVISION = "0.1.0"
#: Maximum data transfer: 2^MDTS x 4 KiB = 1 MiB.
MDTS = 8
MAX_TRANSFER = (1 << MDTS) * 4096
KAS_100MS = 10  # keep-alive granularity 1 s
ANATT_S = 10
ONCS_COMPARE, ONCS_DSM, ONCS_WRITE_ZEROES = 1 << 0, 1 << 2, 1 << 3
SGLS_SUPPORTED = 0x00100001  # byte-aligned SGLs, SGL address as offset (in-capsule)
CMIC_MULTI_PORT, CMIC_MULTI_CTRL, CMIC_ANA = 1 << 0, 1 << 1, 1 << 3
LPA_EFFECTS, LPA_EXTENDED = 1 << 1, 1 << 2
#: CTRATT bit 0: Host IDs are 128 bits (Connect's), so Reservation Report needs EDS. Bit 6,
#: TBKAS: any command restarts the keep-alive timer (target.liveness, as nvmet_keep_alive_timer),
#: so a Linux host sends Keep Alive only when it has seen no completion for KATO/4
#: (nvme_keep_alive_work). nvmet sets both (nvmet_execute_identify_ctrl): 0x41.
CTRATT_HOST_ID_128 = 1 << 0
CTRATT_TBKAS = 1 << 6
TEMPERATURE_K = 308  # a healthy 35 C for SMART

_INVALID_FIELD = StatusCode.INVALID_FIELD


def controller_of(q: QueueContext) -> Controller:
    assert q.controller is not None  # the dispatcher only routes connected queues here
    return q.controller


# -- Identify ---------------------------------------------------------------------------------


def identify_controller(ctrl: Controller, discovery_nqn: str = DISCOVERY_NQN) -> bytes:
    """Identify Controller data for ``ctrl`` (I/O or discovery; a discovery controller names
    ``discovery_nqn``, the unique one where configured)."""
    common = {
        "vid": 0x1B36, "ssvid": 0x1AF4, "mn": "nvmeof-emu", "fr": FIRMWARE_REVISION,
        "rab": 6, "mdts": MDTS, "cntlid": ctrl.cntlid, "ver": ctrl.regs.vs,
        "oaes": ctrl.supported_aen, "acl": 3, "aerl": AERL, "frmw": 0x3,
        "elpe": ERROR_LOG_ENTRIES - 1, "sqes": 0x66, "cqes": 0x44, "maxcmd": ctrl.mqes + 1,
        "sgls": SGLS_SUPPORTED, "iorcsz": 1, "msdbd": 1,
        "psd": [{"max_power": 2500}],
    }  # fmt: skip
    if ctrl.subsystem is None:
        return build_identify_ctrl({
            **common, "sn": "discovery", "cntrltype": ControllerType.DISCOVERY,
            "lpa": LPA_EXTENDED, "subnqn": discovery_nqn, "ioccsz": 4, "dctype": 1,
            "kas": KAS_100MS,
        })  # fmt: skip
    sub = ctrl.subsystem
    inline = ctrl.port.inline_data_size
    return build_identify_ctrl({
        **common, "sn": sub.serial, "mn": sub.model,
        "cmic": CMIC_MULTI_PORT | CMIC_MULTI_CTRL | CMIC_ANA, "cntrltype": ControllerType.IO,
        "lpa": LPA_EFFECTS | LPA_EXTENDED, "kas": KAS_100MS, "wctemp": 343, "cctemp": 373,
        "ctratt": CTRATT_HOST_ID_128 | CTRATT_TBKAS, "anatt": ANATT_S, "anacap": 0x1F, "anagrpmax": MAX_ANA_GROUPS,
        "nanagrpid": MAX_ANA_GROUPS, "nn": sub.max_namespaces,
        "oncs": ONCS_COMPARE | ONCS_DSM | ONCS_WRITE_ZEROES
                | (ONCS_RESERVATIONS if sub.has_reservations() else 0), "vwc": 1,
        "mnan": sub.max_namespaces, "cqt": sub.cqt_ms, "subnqn": sub.nqn, "ioccsz": (64 + inline) // 16,
    })  # fmt: skip


_SUPPORTED_CNS = frozenset(
    {Cns.NAMESPACE, Cns.CONTROLLER, Cns.ACTIVE_NS_LIST, Cns.NS_DESC_LIST, Cns.CS_NAMESPACE,
     Cns.CS_CONTROLLER}
)  # fmt: skip


def execute_identify(q: QueueContext, req: Request) -> ExecuteResult:
    ctrl = controller_of(q)
    cns = req.sqe[40]
    check_transfer_len(req, IDENTIFY_SIZE)  # nvmet_execute_identify: the length first
    if cns not in _SUPPORTED_CNS:
        raise fail(_INVALID_FIELD, f"unsupported CNS {cns:#x}", loc=LOC_CDW10)
    if cns == Cns.CONTROLLER:
        return Reply(data=identify_controller(ctrl, q.state.discovery_nqn))
    sub = ctrl.subsystem
    if sub is None:
        raise fail(_INVALID_FIELD, f"CNS {cns:#x} on a discovery controller")
    if cns == Cns.ACTIVE_NS_LIST:
        if req.nsid >= 0xFFFFFFFE:
            raise fail(StatusCode.INVALID_NS, f"active NS list after NSID {req.nsid:#x}")
        nsids = [n for n in sub.active_nsids() if n > req.nsid][:1024]
        return Reply(data=build_active_ns_list(nsids))
    if cns in (Cns.CS_CONTROLLER,):
        return Reply(data=bytes(IDENTIFY_SIZE))  # no NVM-specific limits to report
    ns = sub.active_namespace(req.nsid)
    if cns == Cns.NAMESPACE:
        if ns is None:
            # nvmet_execute_identify_ns: NSID_ALL is refused, any other inactive NSID (0
            # included) reads as zeros; strict mode refuses NSID 0 too.
            if req.nsid == NSID_ALL or (req.nsid == 0 and q.port.strict):
                raise fail(StatusCode.INVALID_NS, f"Identify NS {req.nsid:#x}", loc=4)
            return Reply(data=bytes(IDENTIFY_SIZE))
        caps = 0
        if ns.reservations is not None:
            caps = rescap(persist=ns.reservations.can_persist)
        return Reply(data=identify_namespace(ns.nlbas, ns.lba_shift, ns.ana_group, ns.nguid,
                                             ns.eui64, caps))  # fmt: skip
    if ns is None:
        raise fail(StatusCode.INVALID_NS, f"NSID {req.nsid} is not active", loc=4)
    if cns == Cns.NS_DESC_LIST:
        return Reply(data=build_ns_desc_list(eui64=ns.eui64, nguid=ns.nguid, uuid=ns.uuid, csi=0))
    if cns == Cns.CS_NAMESPACE:
        if req.sqe[47] != 0:
            raise fail(StatusCode.INVALID_FIELD, f"CSI {req.sqe[47]}")
        return Reply(data=bytes(IDENTIFY_SIZE))
    raise fail(_INVALID_FIELD, f"unsupported CNS {cns:#x}")


def identify_namespace(
    nlbas: int, lba_shift: int, ana_group: int, nguid: bytes, eui64: bytes, rescap: int = 0
) -> bytes:
    return build_identify_ns({
        "nsze": nlbas, "ncap": nlbas, "nuse": nlbas, "nlbaf": 0, "flbas": 0, "rescap": rescap,
        "nmic": 1, "dlfeat": 0x09, "anagrpid": ana_group, "nguid": nguid, "eui64": eui64,
        "lbaf": [lba_format(lba_shift)],
    })  # fmt: skip


# -- Get Log Page -----------------------------------------------------------------------------


def execute_get_log_page(q: QueueContext, req: Request) -> ExecuteResult:
    ctrl = controller_of(q)
    sqe = req.sqe
    lid, lsp = sqe[40], sqe[41]
    rae = bool(lsp & 0x80)
    numd = (int.from_bytes(sqe[42:44], "little") | int.from_bytes(sqe[44:46], "little") << 16) + 1
    length = numd * 4
    offset = int.from_bytes(sqe[48:56], "little")
    check_transfer_len(req, length)
    if length > MAX_TRANSFER and q.port.strict:
        raise fail(_INVALID_FIELD, f"log page transfer of {length} bytes exceeds MDTS")
    if ctrl.discovery and lid != LogPage.DISCOVERY:  # nvmet_execute_disc_get_log_page
        raise fail(_INVALID_FIELD, f"log page {lid:#x} on discovery", loc=LOC_CDW10)
    if offset % 4:
        raise fail(_INVALID_FIELD, f"log page offset {offset} not dword aligned", loc=48)
    page = _log_page(q, ctrl, lid, lsp & 0x7F, rae)
    ctrl.aen.log_read(lid, rae)
    chunk = page[offset : offset + length]
    if len(chunk) < length:
        chunk = bytes(chunk).ljust(length, b"\0")
    return Reply(data=chunk)


def _log_page(q: QueueContext, ctrl: Controller, lid: int, lsp: int, rae: bool) -> bytes:
    if ctrl.subsystem is None:
        if lid != LogPage.DISCOVERY:
            raise fail(StatusCode.INVALID_LOG_PAGE, f"log page {lid:#x} on discovery")
        entries = q.state.discovery_entries(ctrl.hostnqn, q.port, q.local_addr)
        return build_discovery_log(q.state.discovery_genctr, entries)
    if lid == LogPage.ERROR:
        errors = [
            {"error_count": e.error_count, "sqid": e.sqid, "cmdid": e.cid,
             "status_field": e.status, "param_error_location": e.param_location,
             "lba": e.lba, "nsid": e.nsid, "trtype": 3}
            for e in ctrl.errors
        ]  # fmt: skip
        return build_error_log(errors, ERROR_LOG_ENTRIES)
    if lid == LogPage.SMART:
        return _smart_log(ctrl)
    if lid == LogPage.FW_SLOT:
        return build_fw_slot_log({"afi": 1, "frs": [FIRMWARE_REVISION]})
    if lid == LogPage.CHANGED_NS:
        return build_changed_ns_list(ctrl.take_changed_ns(rae))
    if lid == LogPage.CMD_EFFECTS:
        return _EFFECTS_LOG
    if lid == LogPage.ANA:
        groups = q.state.ana_groups(ctrl.subsystem, ctrl.port)
        return build_ana_log(q.state.ana_chgcnt, groups, rgo=bool(lsp & 0x1))
    if lid == LogPage.RESERVATION and ctrl.subsystem.has_reservations():
        # nvmet_execute_get_log_page_resv: one notification per read, RAE or not
        return build_notification_log(ctrl.reservation_log.take())
    # nvmet answers an unknown log page with Invalid Field, not Invalid Log Page.
    raise fail(_INVALID_FIELD, f"unsupported log page {lid:#x}", loc=LOC_CDW10)


def _smart_log(ctrl: Controller) -> bytes:
    st = ctrl.stats
    return build_smart_log({
        "temperature": TEMPERATURE_K, "avail_spare": 100, "spare_thresh": 10,
        "data_units_read": -(-st.bytes_read // 512_000),
        "data_units_written": -(-st.bytes_written // 512_000),
        "host_reads": st.read_commands, "host_writes": st.write_commands,
        "power_cycles": 1, "media_errors": st.media_errors,
        "num_err_log_entries": ctrl.error_count,
    })  # fmt: skip


_EFFECTS_LOG = build_effects_log(
    dict.fromkeys((AdminOpcode.GET_LOG_PAGE, AdminOpcode.IDENTIFY, AdminOpcode.ABORT, AdminOpcode.SET_FEATURES, AdminOpcode.GET_FEATURES, AdminOpcode.ASYNC_EVENT_REQUEST, AdminOpcode.KEEP_ALIVE), EFFECTS_CSUPP),
    {IoOpcode.FLUSH: EFFECTS_CSUPP | EFFECTS_LBCC, IoOpcode.WRITE: EFFECTS_CSUPP | EFFECTS_LBCC,
     IoOpcode.READ: EFFECTS_CSUPP, IoOpcode.COMPARE: EFFECTS_CSUPP,
     IoOpcode.WRITE_ZEROES: EFFECTS_CSUPP | EFFECTS_LBCC,
     IoOpcode.DATASET_MANAGEMENT: EFFECTS_CSUPP | EFFECTS_LBCC},
)  # fmt: skip


# -- Features ---------------------------------------------------------------------------------

#: What Get Features answers for the features nvmet 6.12 reports (nvmet_execute_get_features);
#: every other FID is Invalid Field (Arbitration, Power Management, the temperature threshold
#: and the rest included, which 6.1 still read as 0).
_VOLATILE_WC_PRESENT = 1
_FEATURE_HOST_ID = 0x81
_FEATURE_WRITE_PROTECT = 0x84


def kato_seconds(value: int) -> int:
    """DIV_ROUND_UP(value, 1000) in a u32, as nvmet computes KATO (0xFFFFFFFF wraps to 0)."""
    return ((value + 999) & 0xFFFFFFFF) // 1000


def _write_protect_namespace(q: QueueContext, req: Request) -> None:
    """nvmet_get/set_feat_write_protect look the namespace up first."""
    ctrl = controller_of(q)
    if ctrl.subsystem is None or ctrl.subsystem.active_namespace(req.nsid) is None:
        raise fail(StatusCode.INVALID_NS, f"write protect of NSID {req.nsid}", loc=4)


def execute_set_features(q: QueueContext, req: Request) -> ExecuteResult:
    ctrl = controller_of(q)
    fid = req.dword(10) & 0xFF
    value = req.dword(11)
    if fid == FeatureId.NUM_QUEUES and ctrl.subsystem is not None:
        nsqr, ncqr = value & 0xFFFF, value >> 16
        if nsqr == 0xFFFF or ncqr == 0xFFFF:
            raise fail(_INVALID_FIELD, "number of queues 0xFFFF")
        if q.port.strict:
            ctrl.io_queues_granted = min(nsqr + 1, ncqr + 1, ctrl.max_io_queues)
        granted = ctrl.io_queues_granted  # nvmet always grants (and reports) its maximum
        return Reply(dw0=(granted - 1) | ((granted - 1) << 16))
    if fid == FeatureId.ASYNC_EVENT:
        if value & ~ctrl.accepted_aen:
            raise fail(_INVALID_FIELD, f"async event config {value:#x} not supported",
                       loc=44)  # fmt: skip
        ctrl.aec = value
        return Reply(dw0=value)
    if fid == FeatureId.KATO:
        ctrl.kato_ms = kato_seconds(value) * 1000  # nvmet keeps whole seconds
        ctrl.touch(q.now())
        return Reply(dw0=ctrl.kato_ms // 1000)
    if fid == _FEATURE_HOST_ID and ctrl.subsystem is not None:
        raise fail(StatusCode.CMD_SEQ_ERROR, "the Host ID is set by Connect")
    if fid in _RESERVATION_FEATURES and _serves_reservations(ctrl):
        return set_reservation_feature(q, req, fid, value)
    if fid == _FEATURE_WRITE_PROTECT and ctrl.subsystem is not None:
        _write_protect_namespace(q, req)
        if value != 0:  # only "no write protection" here
            raise fail(_INVALID_FIELD, f"write protect state {value:#x}", loc=44)
        return Reply()
    # Like nvmet, nothing else is settable: Arbitration, Power Management and the rest read back
    # their defaults.
    raise fail(_INVALID_FIELD, f"Set Features {fid:#x} not supported", loc=LOC_CDW10)


def execute_get_features(q: QueueContext, req: Request) -> ExecuteResult:
    ctrl = controller_of(q)
    fid = req.dword(10) & 0xFF
    host_id = fid == _FEATURE_HOST_ID and ctrl.subsystem is not None
    check_transfer_len(req, 16 if host_id else 0)  # nvmet_feat_data_len
    if fid == FeatureId.NUM_QUEUES and ctrl.subsystem is not None:
        n = ctrl.io_queues_granted - 1
        return Reply(dw0=n | (n << 16))
    if fid == FeatureId.ASYNC_EVENT:
        return Reply(dw0=ctrl.aec)
    if fid == FeatureId.KATO:
        return Reply(dw0=ctrl.kato_ms)
    if host_id:
        if not req.dword(11) & 1:  # only the 128-bit Host ID exists over fabrics
            raise fail(_INVALID_FIELD, "Host ID: EXHID must be set", loc=44)
        return Reply(data=ctrl.hostid)
    if fid == FeatureId.VOLATILE_WC and ctrl.subsystem is not None:
        return Reply(dw0=_VOLATILE_WC_PRESENT)
    if fid == _FEATURE_WRITE_PROTECT and ctrl.subsystem is not None:
        _write_protect_namespace(q, req)
        return Reply(dw0=0)  # no write protection
    if fid in _RESERVATION_FEATURES and _serves_reservations(ctrl):
        resv = _reservations_of(q, req)
        mask = fid == FeatureId.RESERVATION_MASK
        return Reply(dw0=resv.notify_mask if mask else int(resv.ptpl))
    raise fail(_INVALID_FIELD, f"Get Features {fid:#x} not supported", loc=LOC_CDW10)


_RESERVATION_FEATURES = frozenset({FeatureId.RESERVATION_MASK, FeatureId.RESERVATION_PERSIST})


def _serves_reservations(ctrl: Controller) -> bool:
    return ctrl.subsystem is not None and ctrl.subsystem.has_reservations()


def _reservations_of(q: QueueContext, req: Request) -> Reservations:
    """nvmet_get_feat_resv_notif_mask: the namespace first (Invalid Namespace, NSID FFFFFFFFh
    included), then whether it serves reservations (Invalid Field)."""
    sub = controller_of(q).subsystem
    assert sub is not None
    ns = sub.active_namespace(req.nsid)
    if ns is None:
        raise fail(StatusCode.INVALID_NS, f"NSID {req.nsid:#x} for a reservation feature", loc=4)
    if ns.reservations is None:
        raise fail(_INVALID_FIELD, f"NSID {req.nsid} has no reservations")
    return ns.reservations


def set_reservation_feature(q: QueueContext, req: Request, fid: int, value: int) -> Reply:
    """Reservation Notification Mask (nvmet_set_feat_resv_notif_mask: NSID FFFFFFFFh sets every
    namespace) and Reservation Persistence (nvmet has none; SPDK's rule: PTPL only where the
    namespace can persist, Invalid Field otherwise)."""
    sub = controller_of(q).subsystem
    assert sub is not None
    if fid == FeatureId.RESERVATION_MASK:
        if value & ~NOTIFICATION_MASK_ALL:
            raise fail(_INVALID_FIELD, f"reservation notification mask {value:#x}", loc=44)
        targets = (
            [_reservations_of(q, req)]
            if req.nsid != NSID_ALL
            else [ns.reservations for ns in sub.namespaces.values() if ns.reservations is not None]
        )
        for resv in targets:
            resv.set_notify_mask(value)
        return Reply(dw0=value)
    ptpl = bool(value & 1)
    if req.nsid == NSID_ALL:
        namespaces = [ns for ns in sub.namespaces.values() if ns.reservations is not None]
    else:
        _reservations_of(q, req)
        namespaces = [sub.namespaces[req.nsid]]
    for ns in namespaces:
        assert ns.reservations is not None
        if ptpl and not ns.reservations.can_persist:
            raise fail(_INVALID_FIELD, f"NSID {ns.nsid} cannot persist reservations", loc=44)
    for ns in namespaces:
        assert ns.reservations is not None
        ns.reservations.ptpl = ptpl
        ns.persist_reservations()
    return Reply(dw0=int(ptpl))


# -- Keep Alive, AER, Abort ------------------------------------------------------------------


def execute_keep_alive(q: QueueContext, req: Request) -> ExecuteResult:
    ctrl = controller_of(q)
    check_transfer_len(req, 0)
    if not ctrl.kato_ms:  # nvmet: no DNR, nothing logged
        raise fail(StatusCode.KA_TIMEOUT_INVALID, "keep-alive with KATO 0", dnr=False)
    ctrl.touch(q.now())
    return Reply()


def execute_async_event(q: QueueContext, req: Request) -> ExecuteResult:
    ctrl = controller_of(q)
    check_transfer_len(req, 0)
    try:
        ctrl.add_aer(req.cid)
    except OverflowError:
        raise fail(StatusCode.ASYNC_LIMIT, "too many AERs outstanding") from None
    return PENDING


def execute_abort(q: QueueContext, req: Request) -> ExecuteResult:
    # Commands are served in order of arrival and never queued long enough to abort: report
    # "not aborted" (DW0 bit 0 = 1), which the spec allows.
    check_transfer_len(req, 0)
    return Reply(dw0=1)


ADMIN_HANDLERS = {
    AdminOpcode.IDENTIFY: execute_identify,
    AdminOpcode.GET_LOG_PAGE: execute_get_log_page,
    AdminOpcode.SET_FEATURES: execute_set_features,
    AdminOpcode.GET_FEATURES: execute_get_features,
    AdminOpcode.KEEP_ALIVE: execute_keep_alive,
    AdminOpcode.ASYNC_EVENT_REQUEST: execute_async_event,
    AdminOpcode.ABORT: execute_abort,
}
#: What a discovery controller accepts besides fabrics commands.
DISCOVERY_ADMIN_OPCODES = frozenset(
    {AdminOpcode.IDENTIFY, AdminOpcode.GET_LOG_PAGE, AdminOpcode.SET_FEATURES,
     AdminOpcode.GET_FEATURES, AdminOpcode.KEEP_ALIVE, AdminOpcode.ASYNC_EVENT_REQUEST}
)  # fmt: skip
