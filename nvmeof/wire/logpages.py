"""Get Log Page (admin opcode 0x02) payloads, declared once with ``construct``.

See docs/PROTOCOL.md §5.5-5.7. Field names are the lowercase member names of the
Linux kernel structs in ``include/linux/nvme.h``:

* ``ERROR_LOG_ENTRY`` - LID 0x01, ``struct nvme_error_slot`` (64 bytes per entry); ``trtype`` (29)
  and ``trtype_spec_info`` (40) are spec fields the kernel leaves reserved.
* ``SMART_LOG`` - LID 0x02, ``struct nvme_smart_log``; 128-bit counters are Python ints.
* ``FW_SLOT_LOG`` - LID 0x03, ``struct nvme_fw_slot_info_log``; revisions as ASCII strings.
* ``CHANGED_NS_LIST`` - LID 0x04, 1024 NSIDs (``NVME_MAX_CHANGED_NAMESPACES``).
* ``EFFECTS_LOG`` - LID 0x05, ``struct nvme_effects_log``.
* ``ANA_RSP_HDR`` / ``ANA_GROUP_DESC`` - LID 0x0C, ``struct nvme_ana_rsp_hdr`` and
  ``struct nvme_ana_group_desc``; whole logs via ``AnaLog`` / ``AnaGroupDescriptor``.
* ``DISC_RSP_PAGE_HDR`` / ``DISC_RSP_PAGE_ENTRY`` - LID 0x70, ``struct nvmf_disc_rsp_page_hdr``
  (plus the newer DLPF/TDLPL fields) and ``struct nvmf_disc_rsp_page_entry``; entries via
  ``DiscoveryEntry``.

``build_*`` accept partial mappings (omitted fields are zero) and reject unknown names; every
``build_*``/``parse_*`` raises ``ValueError`` on bad input.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, TypeAlias

from construct import (
    Array,
    Bytes,
    BytesInteger,
    ConstructError,
    Default,
    Int8ul,
    Int16ul,
    Int32ul,
    Int64ul,
    Rebuild,
    Struct,
    this,
)

from nvmeof.constants import DISCOVERY_ENTRY_SIZE
from nvmeof.wire.fields import (
    Reserved,
    SpacePadded,
    build_strict as _build,
    nqn_field,
    parse_strict as _parse,
)

Data: TypeAlias = bytes | bytearray | memoryview

ERROR_LOG_ENTRY_SIZE = 64
SMART_LOG_SIZE = 512
FW_SLOT_LOG_SIZE = 512
CHANGED_NS_LIST_SIZE = 4096
CHANGED_NS_LIST_MAX = 1024
EFFECTS_LOG_SIZE = 4096
ANA_RSP_HDR_SIZE = 16
ANA_GROUP_DESC_SIZE = 32  # without the NSID list
DISC_RSP_PAGE_HDR_SIZE = 1024
DISC_RSP_PAGE_HDR_SHORT_SIZE = 18  # GENCTR, NUMREC, RECFMT (libnvme reads 20 bytes)


def _nsid_page(nsids: Sequence[int]) -> list[int]:
    """1024-entry NSID list, zero-filled."""
    return list(nsids) + [0] * (CHANGED_NS_LIST_MAX - len(nsids))


def _until_zero(values: Sequence[int]) -> list[int]:
    out: list[int] = []
    for value in values:
        if value == 0:
            break
        out.append(int(value))
    return out


# --- Error Information (LID 0x01) -----------------------------------------------------------------

#: ``struct nvme_error_slot``.
ERROR_LOG_ENTRY = Struct(
    "error_count" / Default(Int64ul, 0),  # 0
    "sqid" / Default(Int16ul, 0),  # 8
    "cmdid" / Default(Int16ul, 0),  # 10
    "status_field" / Default(Int16ul, 0),  # 12, CQE status encoding
    "param_error_location" / Default(Int16ul, 0),  # 14
    "lba" / Default(Int64ul, 0),  # 16
    "nsid" / Default(Int32ul, 0),  # 24
    "vs" / Default(Int8ul, 0),  # 28
    "trtype" / Default(Int8ul, 0),  # 29
    Reserved(2),  # 30
    "cs" / Default(Int64ul, 0),  # 32
    "trtype_spec_info" / Default(Int16ul, 0),  # 40
    Reserved(22),  # 42
)


def build_error_log_entry(fields: Mapping[str, Any]) -> bytes:
    return _build(ERROR_LOG_ENTRY, fields)


def build_error_log(entries: Sequence[Mapping[str, Any]], count: int) -> bytes:
    """``count`` 64-byte entries: ``entries`` first (newest first), then all-zero entries."""
    if not 0 <= len(entries) <= count:
        raise ValueError(f"{len(entries)} entries do not fit in a {count}-entry log")
    out = b"".join(build_error_log_entry(entry) for entry in entries)
    return out.ljust(count * ERROR_LOG_ENTRY_SIZE, b"\0")


def parse_error_log(data: Data) -> list[Any]:
    """Every complete 64-byte entry in ``data`` (trailing partial entry ignored)."""
    return [
        _parse(ERROR_LOG_ENTRY, data[off : off + ERROR_LOG_ENTRY_SIZE])
        for off in range(0, len(data) - ERROR_LOG_ENTRY_SIZE + 1, ERROR_LOG_ENTRY_SIZE)
    ]


# --- SMART / Health Information (LID 0x02) --------------------------------------------------------


def _u128(name: str) -> Any:
    return name / Default(BytesInteger(16, swapped=True), 0)


#: ``struct nvme_smart_log``. Temperatures in Kelvin.
SMART_LOG = Struct(
    "critical_warning" / Default(Int8ul, 0),  # 0
    "temperature" / Default(Int16ul, 0),  # 1 (unaligned)
    "avail_spare" / Default(Int8ul, 0),  # 3
    "spare_thresh" / Default(Int8ul, 0),  # 4
    "percent_used" / Default(Int8ul, 0),  # 5
    "endu_grp_crit_warn_sumry" / Default(Int8ul, 0),  # 6
    Reserved(25),  # 7
    _u128("data_units_read"),  # 32, thousands of 512-byte units
    _u128("data_units_written"),  # 48
    _u128("host_reads"),  # 64
    _u128("host_writes"),  # 80
    _u128("ctrl_busy_time"),  # 96
    _u128("power_cycles"),  # 112
    _u128("power_on_hours"),  # 128
    _u128("unsafe_shutdowns"),  # 144
    _u128("media_errors"),  # 160
    _u128("num_err_log_entries"),  # 176
    "warning_temp_time" / Default(Int32ul, 0),  # 192
    "critical_comp_time" / Default(Int32ul, 0),  # 196
    "temp_sensor" / Default(Array(8, Int16ul), [0] * 8),  # 200
    "thm_temp1_trans_count" / Default(Int32ul, 0),  # 216
    "thm_temp2_trans_count" / Default(Int32ul, 0),  # 220
    "thm_temp1_total_time" / Default(Int32ul, 0),  # 224
    "thm_temp2_total_time" / Default(Int32ul, 0),  # 228
    Reserved(280),  # 232
)


def build_smart_log(fields: Mapping[str, Any]) -> bytes:
    return _build(SMART_LOG, fields)


def parse_smart_log(data: Data) -> Any:
    return _parse(SMART_LOG, data)


# --- Firmware Slot Information (LID 0x03) ---------------------------------------------------------

#: ``struct nvme_fw_slot_info_log``; ``frs[n-1]`` is the revision in slot n ("" = empty slot).
FW_SLOT_LOG = Struct(
    "afi" / Default(Int8ul, 0),  # 0, active slot in bits 2:0
    Reserved(7),  # 1
    "frs" / Default(Array(7, SpacePadded(8)), [""] * 7),  # 8
    Reserved(448),  # 64
)


def build_fw_slot_log(fields: Mapping[str, Any]) -> bytes:
    """Firmware slot log; ``frs`` may list fewer than 7 revisions (remaining slots empty)."""
    out = dict(fields)
    if out.get("frs") is not None:
        frs = list(out["frs"])
        if len(frs) > 7:
            raise ValueError(f"at most 7 firmware slots, got {len(frs)}")
        out["frs"] = frs + [""] * (7 - len(frs))
    return _build(FW_SLOT_LOG, out)


def parse_fw_slot_log(data: Data) -> Any:
    return _parse(FW_SLOT_LOG, data)


# --- Changed Namespace List (LID 0x04) ------------------------------------------------------------

CHANGED_NS_LIST = Array(CHANGED_NS_LIST_MAX, Int32ul)
#: Sole first entry when more than 1024 namespaces changed.
CHANGED_NS_OVERFLOW = 0xFFFFFFFF


def build_changed_ns_list(nsids: Sequence[int]) -> bytes:
    """Ascending changed NSIDs; more than 1024 -> a single 0xFFFFFFFF entry."""
    ids = sorted(set(nsids))
    if len(ids) > CHANGED_NS_LIST_MAX:
        ids = [CHANGED_NS_OVERFLOW]
    try:
        return bytes(CHANGED_NS_LIST.build(_nsid_page(ids)))
    except ConstructError as exc:
        raise ValueError(f"bad NSID in {ids[:4]}...: {exc}") from exc


def parse_changed_ns_list(data: Data) -> list[int]:
    """NSIDs before the first zero; ``[0xFFFFFFFF]`` means "more than 1024 changed"."""
    return _until_zero(_parse(CHANGED_NS_LIST, data))


# --- Commands Supported and Effects (LID 0x05) ----------------------------------------------------

EFFECTS_CSUPP = 1 << 0  # command supported
EFFECTS_LBCC = 1 << 1  # logical block content change
EFFECTS_NCC = 1 << 2  # namespace capability change
EFFECTS_NIC = 1 << 3  # namespace inventory change
EFFECTS_CCC = 1 << 4  # controller capability change

#: ``struct nvme_effects_log``: one dword per admin (``acs``) and I/O (``iocs``) opcode.
EFFECTS_LOG = Struct(
    "acs" / Default(Array(256, Int32ul), [0] * 256),  # 0
    "iocs" / Default(Array(256, Int32ul), [0] * 256),  # 1024
    Reserved(2048),  # 2048
)


def build_effects_log(admin: Mapping[int, int], io: Mapping[int, int]) -> bytes:
    """Effects log from ``opcode -> effects dword`` maps for admin and I/O commands."""
    tables = {"acs": [0] * 256, "iocs": [0] * 256}
    for key, source in (("acs", admin), ("iocs", io)):
        for opcode, effects in source.items():
            if not 0 <= opcode <= 0xFF:
                raise ValueError(f"opcode out of range: {opcode}")
            tables[key][opcode] = effects
    return _build(EFFECTS_LOG, tables)


def parse_effects_log(data: Data) -> Any:
    return _parse(EFFECTS_LOG, data)


# --- Asymmetric Namespace Access (LID 0x0C) -------------------------------------------------------

#: ``struct nvme_ana_rsp_hdr``.
ANA_RSP_HDR = Struct(
    "chgcnt" / Default(Int64ul, 0),  # 0
    "ngrps" / Default(Int16ul, 0),  # 8
    Reserved(6),  # 10
)

#: ``struct nvme_ana_group_desc``; NNSIDS follows the length of ``nsids`` when building.
ANA_GROUP_DESC = Struct(
    "grpid" / Default(Int32ul, 0),  # 0
    "nnsids" / Rebuild(Int32ul, lambda ctx: len(ctx.get("nsids") or ())),  # 4
    "chgcnt" / Default(Int64ul, 0),  # 8
    "state" / Default(Int8ul, 0),  # 16, bits 3:0
    Reserved(15),  # 17
    "nsids" / Default(Array(this.nnsids, Int32ul), []),  # 32
)


@dataclass(frozen=True)
class AnaGroupDescriptor:
    """One ANA group as reported on a port: ``state`` is an ``AnaState`` value."""

    grpid: int
    state: int
    chgcnt: int
    nsids: tuple[int, ...] = ()


@dataclass(frozen=True)
class AnaLog:
    chgcnt: int
    groups: tuple[AnaGroupDescriptor, ...]


def build_ana_log(chgcnt: int, groups: Sequence[AnaGroupDescriptor], *, rgo: bool = False) -> bytes:
    """Header plus one descriptor per group, NSIDs ascending; ``rgo`` omits the NSID lists."""
    parts = [_build(ANA_RSP_HDR, {"chgcnt": chgcnt, "ngrps": len(groups)})]
    for group in groups:
        nsids = [] if rgo else sorted(group.nsids)
        parts.append(
            _build(
                ANA_GROUP_DESC,
                {
                    "grpid": group.grpid,
                    "chgcnt": group.chgcnt,
                    "state": group.state,
                    "nsids": nsids,
                },
            )
        )
    return b"".join(parts)


def parse_ana_log(data: Data) -> AnaLog:
    """Decode an ANA log; data shorter than announced raises ValueError, trailing bytes ignored."""
    buf = bytes(data)
    if len(buf) < ANA_RSP_HDR_SIZE:
        raise ValueError(f"ANA log header needs {ANA_RSP_HDR_SIZE} bytes, got {len(buf)}")
    hdr = _parse(ANA_RSP_HDR, buf)
    groups: list[AnaGroupDescriptor] = []
    off = ANA_RSP_HDR_SIZE
    for index in range(hdr.ngrps):
        if off + ANA_GROUP_DESC_SIZE > len(buf):
            raise ValueError(f"ANA log truncated in the header of descriptor {index}")
        nnsids = int.from_bytes(buf[off + 4 : off + 8], "little")
        end = off + ANA_GROUP_DESC_SIZE + 4 * nnsids
        if end > len(buf):
            raise ValueError(f"ANA log truncated in the NSID list of descriptor {index}")
        desc = _parse(ANA_GROUP_DESC, buf[off:end])
        groups.append(
            AnaGroupDescriptor(
                grpid=desc.grpid,
                state=desc.state,
                chgcnt=desc.chgcnt,
                nsids=tuple(desc.nsids),
            )
        )
        off = end
    return AnaLog(chgcnt=hdr.chgcnt, groups=tuple(groups))


# --- Discovery (LID 0x70) -------------------------------------------------------------------------

#: ``struct nvmf_disc_rsp_page_hdr`` with the newer DLPF (18) and TDLPL (20) fields.
DISC_RSP_PAGE_HDR = Struct(
    "genctr" / Default(Int64ul, 0),  # 0
    "numrec" / Default(Int64ul, 0),  # 8
    "recfmt" / Default(Int16ul, 0),  # 16
    "dlpf" / Default(Int8ul, 0),  # 18
    Reserved(1),  # 19
    "tdlpl" / Default(Int32ul, 0),  # 20
    Reserved(1000),  # 24
)

#: Leading fields of the header, enough for libnvme's 20-byte header reads.
DISC_RSP_PAGE_HDR_SHORT = Struct(
    "genctr" / Default(Int64ul, 0),
    "numrec" / Default(Int64ul, 0),
    "recfmt" / Default(Int16ul, 0),
)

#: ``struct nvmf_disc_rsp_page_entry``.
DISC_RSP_PAGE_ENTRY = Struct(
    "trtype" / Default(Int8ul, 0),  # 0
    "adrfam" / Default(Int8ul, 0),  # 1
    "subtype" / Default(Int8ul, 0),  # 2
    "treq" / Default(Int8ul, 0),  # 3
    "portid" / Default(Int16ul, 0),  # 4
    "cntlid" / Default(Int16ul, 0),  # 6
    "asqsz" / Default(Int16ul, 0),  # 8
    "eflags" / Default(Int16ul, 0),  # 10
    Reserved(20),  # 12
    "trsvcid" / Default(nqn_field(32), ""),  # 32
    Reserved(192),  # 64
    "subnqn" / Default(nqn_field(256), ""),  # 256
    "traddr" / Default(nqn_field(256), ""),  # 512
    "tsas" / Default(Bytes(256), bytes(256)),  # 768, TCP: byte 0 SECTYPE
)


@dataclass(frozen=True)
class DiscoveryEntry:
    """One discovery log record; ``tsas`` shorter than 256 bytes is zero-padded on build."""

    trtype: int
    adrfam: int
    subtype: int
    treq: int
    portid: int
    cntlid: int
    asqsz: int
    eflags: int
    trsvcid: str
    subnqn: str
    traddr: str
    tsas: bytes = bytes(256)


def build_discovery_entry(entry: DiscoveryEntry) -> bytes:
    fields = asdict(entry)
    if len(entry.tsas) > 256:
        raise ValueError(f"tsas is at most 256 bytes, got {len(entry.tsas)}")
    fields["tsas"] = bytes(entry.tsas).ljust(256, b"\0")
    return _build(DISC_RSP_PAGE_ENTRY, fields)


def build_discovery_log(genctr: int, entries: Sequence[DiscoveryEntry]) -> bytes:
    """The whole log (header + entries); the target slices it by LPO and length."""
    total = DISC_RSP_PAGE_HDR_SIZE + DISCOVERY_ENTRY_SIZE * len(entries)
    header = _build(DISC_RSP_PAGE_HDR, {"genctr": genctr, "numrec": len(entries), "tdlpl": total})
    return header + b"".join(build_discovery_entry(entry) for entry in entries)


def parse_discovery_header(data: Data) -> Any:
    """Header fields; with fewer than 1024 bytes only ``genctr``, ``numrec``, ``recfmt``."""
    if len(data) >= DISC_RSP_PAGE_HDR_SIZE:
        return _parse(DISC_RSP_PAGE_HDR, data)
    return _parse(DISC_RSP_PAGE_HDR_SHORT, data)


def parse_discovery_entries(data: Data, count: int) -> list[DiscoveryEntry]:
    """``count`` entries from ``data`` starting at the first entry (log offset 1024)."""
    if count < 0 or len(data) < count * DISCOVERY_ENTRY_SIZE:
        raise ValueError(f"{len(data)} bytes do not hold {count} discovery entries")
    out: list[DiscoveryEntry] = []
    for index in range(count):
        off = index * DISCOVERY_ENTRY_SIZE
        raw = _parse(DISC_RSP_PAGE_ENTRY, data[off : off + DISCOVERY_ENTRY_SIZE])
        out.append(
            DiscoveryEntry(
                trtype=raw.trtype,
                adrfam=raw.adrfam,
                subtype=raw.subtype,
                treq=raw.treq,
                portid=raw.portid,
                cntlid=raw.cntlid,
                asqsz=raw.asqsz,
                eflags=raw.eflags,
                trsvcid=raw.trsvcid,
                subnqn=raw.subnqn,
                traddr=raw.traddr,
                tsas=raw.tsas,
            )
        )
    return out
