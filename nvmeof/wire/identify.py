"""Identify data structures (admin opcode 0x06), each 4096 bytes on the wire.

Declared once with ``construct`` (see docs/PROTOCOL.md §5.1); field names are the
lowercase member names of the Linux kernel structs in ``include/linux/nvme.h``:

* ``IDENTIFY_CONTROLLER`` - CNS 0x01, ``struct nvme_id_ctrl`` (power states: ``struct
  nvme_id_power_state``). Spec fields the kernel leaves reserved are named after the NVMe spec:
  ``pels`` (352), ``ocfs`` (534) and ``ofcs`` (1804).
* ``IDENTIFY_NAMESPACE`` - CNS 0x00, ``struct nvme_id_ns`` with ``struct nvme_lbaf`` formats.
* ``IDENTIFY_NS_CS_INDEP`` - CNS 0x08, ``struct nvme_id_ns_cs_indep``.
* ``IDENTIFY_CTRL_NVM`` - CNS 0x06 (CSI 0), ``struct nvme_id_ctrl_nvm``.
* ``IDENTIFY_NS_NVM`` - CNS 0x05 (CSI 0), ``struct nvme_id_ns_nvm``.
* ``ACTIVE_NS_LIST`` - CNS 0x02, 1024 little-endian NSIDs.
* ``NS_ID_DESC`` - CNS 0x03 descriptor header, ``struct nvme_ns_id_desc``.

Every ``build_*`` takes a (partial) mapping of field names - omitted fields are zero - and rejects
names the structure does not have; every ``parse_*`` raises ``ValueError`` on malformed input.
128-bit capacities (``tnvmcap``, ``unvmcap``, ``nvmcap``) are Python ints.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, TypeAlias

from construct import (
    Array,
    Bytes,
    BytesInteger,
    Default,
    Int8ul,
    Int16ul,
    Int32ul,
    Int64ul,
    Struct,
)

from nvmeof.constants import IDENTIFY_SIZE
from nvmeof.wire.fields import (
    Reserved,
    SpacePadded,
    build_strict as _build,
    nqn_field,
    parse_strict as _parse,
)

Data: TypeAlias = bytes | bytearray | memoryview


def _u8(name: str) -> Any:
    return name / Default(Int8ul, 0)


def _u16(name: str) -> Any:
    return name / Default(Int16ul, 0)


def _u32(name: str) -> Any:
    return name / Default(Int32ul, 0)


def _u64(name: str) -> Any:
    return name / Default(Int64ul, 0)


def _u128(name: str) -> Any:
    return name / Default(BytesInteger(16, swapped=True), 0)


def _raw(name: str, size: int) -> Any:
    return name / Default(Bytes(size), bytes(size))


def _padded_list(fields: Mapping[str, Any], key: str, count: int) -> dict[str, Any]:
    """Copy ``fields`` with list ``key`` (if given) zero-padded to ``count`` entries."""
    out = dict(fields)
    items = out.get(key)
    if items is not None:
        items = list(items)
        if len(items) > count:
            raise ValueError(f"{key}: at most {count} entries, got {len(items)}")
        out[key] = items + [{}] * (count - len(items))
    return out


# --- Identify Controller (CNS 0x01) ---------------------------------------------------------------

#: ``struct nvme_id_power_state``, 32 bytes.
ID_POWER_STATE = Struct(
    _u16("max_power"),  # centiwatts
    Reserved(1),
    _u8("flags"),
    _u32("entry_lat"),  # microseconds
    _u32("exit_lat"),
    _u8("read_tput"),
    _u8("read_lat"),
    _u8("write_tput"),
    _u8("write_lat"),
    _u16("idle_power"),
    _u8("idle_scale"),
    Reserved(1),
    _u16("active_power"),
    _u8("active_work_scale"),
    Reserved(9),
)

#: ``struct nvme_id_ctrl``. Offsets in the comments are checked by the tests.
IDENTIFY_CONTROLLER = Struct(
    _u16("vid"),  # 0
    _u16("ssvid"),  # 2
    "sn" / Default(SpacePadded(20), ""),  # 4
    "mn" / Default(SpacePadded(40), ""),  # 24
    "fr" / Default(SpacePadded(8), ""),  # 64
    _u8("rab"),  # 72
    _raw("ieee", 3),  # 73, OUI
    _u8("cmic"),  # 76
    _u8("mdts"),  # 77
    _u16("cntlid"),  # 78
    _u32("ver"),  # 80
    _u32("rtd3r"),  # 84
    _u32("rtd3e"),  # 88
    _u32("oaes"),  # 92
    _u32("ctratt"),  # 96
    Reserved(11),  # 100
    _u8("cntrltype"),  # 111
    _raw("fguid", 16),  # 112
    _u16("crdt1"),  # 128
    _u16("crdt2"),  # 130
    _u16("crdt3"),  # 132
    Reserved(122),  # 134 (incl. NVMe-MI area 240..255)
    _u16("oacs"),  # 256
    _u8("acl"),  # 258
    _u8("aerl"),  # 259
    _u8("frmw"),  # 260
    _u8("lpa"),  # 261
    _u8("elpe"),  # 262
    _u8("npss"),  # 263
    _u8("avscc"),  # 264
    _u8("apsta"),  # 265
    _u16("wctemp"),  # 266
    _u16("cctemp"),  # 268
    _u16("mtfa"),  # 270
    _u32("hmpre"),  # 272
    _u32("hmmin"),  # 276
    _u128("tnvmcap"),  # 280
    _u128("unvmcap"),  # 296
    _u32("rpmbs"),  # 312
    _u16("edstt"),  # 316
    _u8("dsto"),  # 318
    _u8("fwug"),  # 319
    _u16("kas"),  # 320
    _u16("hctma"),  # 322
    _u16("mntmt"),  # 324
    _u16("mxtmt"),  # 326
    _u32("sanicap"),  # 328
    _u32("hmminds"),  # 332
    _u16("hmmaxd"),  # 336
    _u16("nvmsetidmax"),  # 338
    _u16("endgidmax"),  # 340
    _u8("anatt"),  # 342
    _u8("anacap"),  # 343
    _u32("anagrpmax"),  # 344
    _u32("nanagrpid"),  # 348
    _u32("pels"),  # 352 (kernel: part of rsvd352)
    Reserved(30),  # 356 (DOMAINID, MEGCAP, TMPTHHA)
    _u16("cqt"),  # 386: Command Quiesce Time in ms (NVMe 2.1, TP4129)
    Reserved(124),  # 388
    _u8("sqes"),  # 512
    _u8("cqes"),  # 513
    _u16("maxcmd"),  # 514
    _u32("nn"),  # 516
    _u16("oncs"),  # 520
    _u16("fuses"),  # 522
    _u8("fna"),  # 524
    _u8("vwc"),  # 525
    _u16("awun"),  # 526
    _u16("awupf"),  # 528
    _u8("nvscc"),  # 530
    _u8("nwpc"),  # 531
    _u16("acwu"),  # 532
    _u16("ocfs"),  # 534 (kernel: rsvd534)
    _u32("sgls"),  # 536
    _u32("mnan"),  # 540
    Reserved(224),  # 544
    "subnqn" / Default(nqn_field(256), ""),  # 768
    Reserved(768),  # 1024
    _u32("ioccsz"),  # 1792, 16-byte units
    _u32("iorcsz"),  # 1796
    _u16("icdoff"),  # 1800
    _u8("ctrattr"),  # 1802 (FCATT)
    _u8("msdbd"),  # 1803
    _u16("ofcs"),  # 1804 (kernel: rsvd1804)
    _u8("dctype"),  # 1806
    Reserved(241),  # 1807
    "psd" / Default(Array(32, ID_POWER_STATE), [{}] * 32),  # 2048
    _raw("vs", 1024),  # 3072
)


def build_identify_ctrl(fields: Mapping[str, Any]) -> bytes:
    """Identify Controller data; ``psd`` may list fewer than 32 power states (rest zero)."""
    return _build(IDENTIFY_CONTROLLER, _padded_list(fields, "psd", 32))


def parse_identify_ctrl(data: Data) -> Any:
    return _parse(IDENTIFY_CONTROLLER, data)


# --- Identify Namespace (CNS 0x00) ----------------------------------------------------------------

#: ``struct nvme_lbaf``: metadata size, log2 of the LBA data size, relative performance.
LBA_FORMAT = Struct(_u16("ms"), _u8("ds"), _u8("rp"))


def lba_format(ds: int, ms: int = 0, rp: int = 0) -> dict[str, int]:
    """One LBA format entry, e.g. ``lba_format(12)`` for 4 KiB blocks without metadata."""
    return {"ms": ms, "ds": ds, "rp": rp}


#: ``struct nvme_id_ns``.
IDENTIFY_NAMESPACE = Struct(
    _u64("nsze"),  # 0
    _u64("ncap"),  # 8
    _u64("nuse"),  # 16
    _u8("nsfeat"),  # 24
    _u8("nlbaf"),  # 25, 0's based
    _u8("flbas"),  # 26
    _u8("mc"),  # 27
    _u8("dpc"),  # 28
    _u8("dps"),  # 29
    _u8("nmic"),  # 30
    _u8("rescap"),  # 31
    _u8("fpi"),  # 32
    _u8("dlfeat"),  # 33
    _u16("nawun"),  # 34
    _u16("nawupf"),  # 36
    _u16("nacwu"),  # 38
    _u16("nabsn"),  # 40
    _u16("nabo"),  # 42
    _u16("nabspf"),  # 44
    _u16("noiob"),  # 46
    _u128("nvmcap"),  # 48
    _u16("npwg"),  # 64
    _u16("npwa"),  # 66
    _u16("npdg"),  # 68
    _u16("npda"),  # 70
    _u16("nows"),  # 72
    Reserved(18),  # 74
    _u32("anagrpid"),  # 92
    Reserved(3),  # 96
    _u8("nsattr"),  # 99
    _u16("nvmsetid"),  # 100
    _u16("endgid"),  # 102
    _raw("nguid", 16),  # 104
    _raw("eui64", 8),  # 120
    "lbaf" / Default(Array(64, LBA_FORMAT), [{}] * 64),  # 128
    _raw("vs", 3712),  # 384
)


def build_identify_ns(fields: Mapping[str, Any]) -> bytes:
    """Identify Namespace data; ``lbaf`` may list fewer than 64 formats (rest zero)."""
    return _build(IDENTIFY_NAMESPACE, _padded_list(fields, "lbaf", 64))


def parse_identify_ns(data: Data) -> Any:
    return _parse(IDENTIFY_NAMESPACE, data)


# --- I/O command set independent Identify Namespace (CNS 0x08) ------------------------------------

#: ``struct nvme_id_ns_cs_indep``. NSTAT bit 0 ("ready") must be set or the host ignores the NS.
IDENTIFY_NS_CS_INDEP = Struct(
    _u8("nsfeat"),  # 0
    _u8("nmic"),  # 1
    _u8("rescap"),  # 2
    _u8("fpi"),  # 3
    _u32("anagrpid"),  # 4
    _u8("nsattr"),  # 8
    Reserved(1),  # 9
    _u16("nvmsetid"),  # 10
    _u16("endgid"),  # 12
    _u8("nstat"),  # 14
    Reserved(4081),  # 15
)


def build_identify_ns_cs_indep(fields: Mapping[str, Any]) -> bytes:
    return _build(IDENTIFY_NS_CS_INDEP, fields)


def parse_identify_ns_cs_indep(data: Data) -> Any:
    return _parse(IDENTIFY_NS_CS_INDEP, data)


# --- NVM command set specific Identify Controller (CNS 0x06, CSI 0) -------------------------------

#: ``struct nvme_id_ctrl_nvm``: size limits in units of the minimum memory page size (0 = none).
IDENTIFY_CTRL_NVM = Struct(
    _u8("vsl"),  # 0, verify size limit
    _u8("wzsl"),  # 1, write zeroes size limit
    _u8("wusl"),  # 2, write uncorrectable size limit
    _u8("dmrl"),  # 3, DSM ranges limit
    _u32("dmrsl"),  # 4, DSM range size limit (LBAs)
    _u64("dmsl"),  # 8, DSM size limit (LBAs)
    Reserved(4080),  # 16
)


def build_identify_ctrl_nvm(fields: Mapping[str, Any]) -> bytes:
    return _build(IDENTIFY_CTRL_NVM, fields)


def parse_identify_ctrl_nvm(data: Data) -> Any:
    return _parse(IDENTIFY_CTRL_NVM, data)


# --- NVM command set specific Identify Namespace (CNS 0x05, CSI 0) --------------------------------

#: ``struct nvme_id_ns_nvm`` (leading fields; the rest is reserved).
IDENTIFY_NS_NVM = Struct(
    _u64("lbstm"),  # 0
    _u8("pic"),  # 8
    Reserved(3),  # 9
    "elbaf" / Default(Array(64, Int32ul), [0] * 64),  # 12
    _u32("npdgl"),  # 268
    _u32("nprg"),  # 272
    _u32("npra"),  # 276
    _u32("nors"),  # 280
    _u32("npdal"),  # 284
    Reserved(3808),  # 288
)


def build_identify_ns_nvm(fields: Mapping[str, Any]) -> bytes:
    return _build(IDENTIFY_NS_NVM, fields)


def parse_identify_ns_nvm(data: Data) -> Any:
    return _parse(IDENTIFY_NS_NVM, data)


# --- Active Namespace ID list (CNS 0x02) ----------------------------------------------------------

ACTIVE_NS_LIST_MAX = IDENTIFY_SIZE // 4
#: 1024 ascending NSIDs, zero-filled after the last one.
ACTIVE_NS_LIST = Array(ACTIVE_NS_LIST_MAX, Int32ul)


def build_active_ns_list(nsids: Iterable[int]) -> bytes:
    """Sorted, de-duplicated NSIDs (each 1..0xFFFFFFFE), at most 1024 of them."""
    ids = sorted(set(nsids))
    if len(ids) > ACTIVE_NS_LIST_MAX:
        raise ValueError(f"at most {ACTIVE_NS_LIST_MAX} NSIDs fit, got {len(ids)}")
    if ids and (ids[0] < 1 or ids[-1] > 0xFFFFFFFE):
        raise ValueError(f"NSIDs must be in 1..0xFFFFFFFE: {ids[0]:#x}..{ids[-1]:#x}")
    return bytes(ACTIVE_NS_LIST.build(ids + [0] * (ACTIVE_NS_LIST_MAX - len(ids))))


def parse_active_ns_list(data: Data) -> list[int]:
    """NSIDs up to (not including) the first zero entry."""
    out: list[int] = []
    for nsid in _parse(ACTIVE_NS_LIST, data):
        if nsid == 0:
            break
        out.append(int(nsid))
    return out


# --- Namespace Identification Descriptor list (CNS 0x03) ------------------------------------------

NIDT_EUI64 = 0x01
NIDT_NGUID = 0x02
NIDT_UUID = 0x03
NIDT_CSI = 0x04

#: ``struct nvme_ns_id_desc``: header followed by NIDL bytes of identifier.
NS_ID_DESC = Struct(_u8("nidt"), _u8("nidl"), Reserved(2))
NS_ID_DESC_SIZE = 4

#: NIDT -> (result key, exact NIDL the host insists on).
_NIDS: dict[int, tuple[str, int]] = {
    NIDT_EUI64: ("eui64", 8),
    NIDT_NGUID: ("nguid", 16),
    NIDT_UUID: ("uuid", 16),
    NIDT_CSI: ("csi", 1),
}


def build_ns_desc_list(
    *,
    eui64: bytes | None = None,
    nguid: bytes | None = None,
    uuid: bytes | None = None,
    csi: int | None = None,
) -> bytes:
    """Descriptors EUI64, NGUID, UUID, CSI in that order, then zero fill.

    None and all-zero identifiers are left out (``csi=0`` is a real value and is kept).
    """
    out = bytearray()
    for nidt, value in ((NIDT_EUI64, eui64), (NIDT_NGUID, nguid), (NIDT_UUID, uuid)):
        if value is None or not any(value):
            continue
        name, size = _NIDS[nidt]
        if len(value) != size:
            raise ValueError(f"{name} must be {size} bytes, got {len(value)}")
        out += NS_ID_DESC.build({"nidt": nidt, "nidl": size}) + bytes(value)
    if csi is not None:
        if not 0 <= csi <= 0xFF:
            raise ValueError(f"csi out of range: {csi}")
        out += NS_ID_DESC.build({"nidt": NIDT_CSI, "nidl": 1}) + bytes([csi])
    return bytes(out.ljust(IDENTIFY_SIZE, b"\0"))


def parse_ns_desc_list(data: Data) -> dict[str, bytes | int]:
    """Map of ``eui64``/``nguid``/``uuid`` (bytes) and ``csi`` (int) found before the NIDL-0 end.

    Unknown NIDTs are skipped. A known NIDT with the wrong NIDL ("bogus length" to the Linux
    host) or a descriptor running past the data raises ValueError.
    """
    buf = bytes(data[:IDENTIFY_SIZE])
    found: dict[str, bytes | int] = {}
    pos = 0
    while pos + NS_ID_DESC_SIZE <= len(buf):
        nidt, nidl = buf[pos], buf[pos + 1]
        if nidl == 0:
            break
        start = pos + NS_ID_DESC_SIZE
        end = start + nidl
        if end > len(buf):
            raise ValueError(f"descriptor at {pos} (NIDT {nidt}, NIDL {nidl}) overruns the data")
        if nidt in _NIDS:
            name, size = _NIDS[nidt]
            if nidl != size:
                raise ValueError(f"bogus NIDL {nidl} for NIDT {nidt} ({name}) at {pos}")
            found[name] = buf[start] if nidt == NIDT_CSI else buf[start:end]
        pos = end
    return found
