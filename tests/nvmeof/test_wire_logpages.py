"""Log page payloads (nvmeof/wire/logpages.py): sizes, golden bytes at docs/PROTOCOL.md §5.5-5.7
offsets, round trips, and robustness of the ANA and discovery parsers."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings, strategies as st

from nvmeof.constants import AnaState
from nvmeof.wire.logpages import (
    ANA_GROUP_DESC,
    ANA_RSP_HDR,
    CHANGED_NS_LIST,
    DISC_RSP_PAGE_ENTRY,
    DISC_RSP_PAGE_HDR,
    EFFECTS_CCC,
    EFFECTS_CSUPP,
    EFFECTS_LBCC,
    EFFECTS_LOG,
    EFFECTS_NCC,
    EFFECTS_NIC,
    ERROR_LOG_ENTRY,
    FW_SLOT_LOG,
    SMART_LOG,
    AnaGroupDescriptor,
    AnaLog,
    DiscoveryEntry,
    build_ana_log,
    build_changed_ns_list,
    build_discovery_entry,
    build_discovery_log,
    build_effects_log,
    build_error_log,
    build_error_log_entry,
    build_fw_slot_log,
    build_smart_log,
    parse_ana_log,
    parse_changed_ns_list,
    parse_discovery_entries,
    parse_discovery_header,
    parse_effects_log,
    parse_error_log,
    parse_fw_slot_log,
    parse_smart_log,
)


def image(size: int, *placed: tuple[int, bytes | str]) -> bytes:
    """A zero buffer with each ``(offset, bytes-or-hex)`` written in place."""
    buf = bytearray(size)
    for offset, raw in placed:
        data = bytes.fromhex(raw) if isinstance(raw, str) else raw
        buf[offset : offset + len(data)] = data
    return bytes(buf)


@pytest.mark.parametrize(
    ("struct", "size"),
    [
        (ERROR_LOG_ENTRY, 64),
        (SMART_LOG, 512),
        (FW_SLOT_LOG, 512),
        (EFFECTS_LOG, 4096),
        (ANA_RSP_HDR, 16),
        (DISC_RSP_PAGE_HDR, 1024),
        (DISC_RSP_PAGE_ENTRY, 1024),
    ],
)
def test_sizeof(struct: Any, size: int) -> None:
    assert struct.sizeof() == size
    assert len(struct.build({})) == size


def test_sizeof_lists() -> None:
    assert CHANGED_NS_LIST.sizeof() == 4096
    assert len(ANA_GROUP_DESC.build({})) == 32
    assert len(ANA_GROUP_DESC.build({"nsids": [1, 2, 3]})) == 32 + 4 * 3


# --- Error Information (LID 0x01) -----------------------------------------------------------------

ERROR_FIELDS: dict[str, Any] = {
    "error_count": 0x0102,
    "sqid": 1,
    "cmdid": 0x1003,
    "status_field": 0x8004,
    "param_error_location": 0x28,
    "lba": 0x1122334455,
    "nsid": 7,
    "vs": 0x05,
    "trtype": 3,
    "cs": 0xAABB,
    "trtype_spec_info": 0x0C0D,
}
ERROR_IMAGE = image(
    64,
    (0, "0201000000000000"),
    (8, "0100 0310 0480 2800"),
    (16, "5544332211000000"),
    (24, "07000000"),
    (28, "0503"),
    (32, "bbaa000000000000"),
    (40, "0d0c"),
)


def test_error_entry_golden_and_round_trip() -> None:
    assert build_error_log_entry(ERROR_FIELDS) == ERROR_IMAGE
    [entry] = parse_error_log(ERROR_IMAGE)
    assert (entry.cmdid, entry.status_field, entry.trtype) == (0x1003, 0x8004, 3)
    assert build_error_log_entry(entry) == ERROR_IMAGE


def test_error_log_zero_fill() -> None:
    log = build_error_log([ERROR_FIELDS, {"error_count": 1}], count=4)
    assert log == ERROR_IMAGE + image(64, (0, "01")) + bytes(128)
    assert [e.error_count for e in parse_error_log(log)] == [0x0102, 1, 0, 0]
    assert build_error_log([], count=1) == bytes(64)


def test_error_log_rejects() -> None:
    with pytest.raises(ValueError, match="do not fit"):
        build_error_log([{}, {}], count=1)
    with pytest.raises(ValueError, match="unknown"):
        build_error_log([{"cid": 1}], count=1)


# --- SMART / Health (LID 0x02) --------------------------------------------------------------------

SMART_FIELDS: dict[str, Any] = {
    "critical_warning": 0x02,
    "temperature": 310,
    "avail_spare": 100,
    "spare_thresh": 10,
    "percent_used": 3,
    "endu_grp_crit_warn_sumry": 1,
    "data_units_read": (1 << 64) + 5,
    "data_units_written": 6,
    "host_reads": 7,
    "host_writes": 8,
    "ctrl_busy_time": 9,
    "power_cycles": 10,
    "power_on_hours": 11,
    "unsafe_shutdowns": 12,
    "media_errors": 13,
    "num_err_log_entries": 14,
    "warning_temp_time": 15,
    "critical_comp_time": 16,
    "temp_sensor": [300, 301, 0, 0, 0, 0, 0, 0],
    "thm_temp1_trans_count": 17,
    "thm_temp2_trans_count": 18,
    "thm_temp1_total_time": 19,
    "thm_temp2_total_time": 20,
}
SMART_IMAGE = image(
    512,
    (0, "02360164 0a0301"),
    (32, "0500000000000000 0100000000000000"),
    *[(48 + 16 * i, bytes([6 + i])) for i in range(9)],
    (192, "0f000000 10000000"),
    (200, "2c012d01"),
    (216, "11000000 12000000 13000000 14000000"),
)


def test_smart_golden_and_round_trip() -> None:
    assert build_smart_log(SMART_FIELDS) == SMART_IMAGE
    smart = parse_smart_log(SMART_IMAGE)
    assert (smart.temperature, smart.data_units_read) == (310, (1 << 64) + 5)
    assert smart.num_err_log_entries == 14
    assert build_smart_log(smart) == SMART_IMAGE


def test_smart_rejects_negative_counter() -> None:
    with pytest.raises(ValueError, match="cannot build"):
        build_smart_log({"media_errors": -1})


# --- Firmware Slot Information (LID 0x03) ---------------------------------------------------------


def test_fw_slot_golden_and_round_trip() -> None:
    built = build_fw_slot_log({"afi": 0x01, "frs": ["1.0", "2.0-rc1"]})
    assert built == image(512, (0, "01"), (8, b"1.0     2.0-rc1 "), (24, b" " * 40))
    fw = parse_fw_slot_log(built)
    assert (fw.afi, list(fw.frs)) == (1, ["1.0", "2.0-rc1", "", "", "", "", ""])
    assert build_fw_slot_log(fw) == built


def test_fw_slot_rejects_eight_slots() -> None:
    with pytest.raises(ValueError, match="7"):
        build_fw_slot_log({"frs": ["x"] * 8})


# --- Changed Namespace List (LID 0x04) ------------------------------------------------------------


def test_changed_ns_list() -> None:
    built = build_changed_ns_list([9, 2, 2])
    assert built == image(4096, (0, "02000000 09000000"))
    assert parse_changed_ns_list(built) == [2, 9]
    assert build_changed_ns_list([]) == bytes(4096)


def test_changed_ns_list_overflow() -> None:
    assert parse_changed_ns_list(build_changed_ns_list(range(1, 1025))) == list(range(1, 1025))
    overflow = build_changed_ns_list(range(1, 1026))
    assert overflow == image(4096, (0, "ffffffff"))
    assert parse_changed_ns_list(overflow) == [0xFFFFFFFF]


# --- Commands Supported and Effects (LID 0x05) ----------------------------------------------------


def test_effects_constants() -> None:
    assert (EFFECTS_CSUPP, EFFECTS_LBCC, EFFECTS_NCC, EFFECTS_NIC, EFFECTS_CCC) == (1, 2, 4, 8, 16)


def test_effects_golden_and_round_trip() -> None:
    built = build_effects_log(
        {0x06: EFFECTS_CSUPP, 0xFF: EFFECTS_CSUPP | EFFECTS_CCC},
        {0x01: EFFECTS_CSUPP | EFFECTS_LBCC},
    )
    assert built == image(4096, (0x06 * 4, "01"), (0xFF * 4, "11"), (1024 + 4, "03"))
    parsed = parse_effects_log(built)
    assert (parsed.acs[0x06], parsed.iocs[0x01], parsed.iocs[0x02]) == (1, 3, 0)
    assert build_effects_log(dict(enumerate(parsed.acs)), dict(enumerate(parsed.iocs))) == built


def test_effects_rejects_bad_opcode() -> None:
    with pytest.raises(ValueError, match="opcode"):
        build_effects_log({0x100: 1}, {})


# --- ANA (LID 0x0C) -------------------------------------------------------------------------------

WORKED_GROUPS = (
    AnaGroupDescriptor(grpid=1, state=AnaState.OPTIMIZED, chgcnt=5, nsids=(1, 2)),
    AnaGroupDescriptor(grpid=2, state=AnaState.INACCESSIBLE, chgcnt=5, nsids=()),
)
RSVD15 = "00" * 15
WORKED_ANA = bytes.fromhex(
    # header: CHGCNT 5, NGRPS 2, reserved
    "0500000000000000 0200 000000000000"
    # group 1: ANAGRPID 1, NNSIDS 2, CHGCNT 5, optimized, reserved, NSIDs 1 and 2
    f"01000000 02000000 0500000000000000 01 {RSVD15} 01000000 02000000"
    # group 2: ANAGRPID 2, NNSIDS 0, CHGCNT 5, inaccessible, reserved
    f"02000000 00000000 0500000000000000 03 {RSVD15}"
)


def test_ana_worked_example() -> None:
    built = build_ana_log(5, WORKED_GROUPS)
    assert built == WORKED_ANA
    assert len(built) == 16 + (32 + 8) + 32
    assert built[8:10] == b"\x02\x00"  # NGRPS
    assert built[16 + 16] == AnaState.OPTIMIZED  # descriptor 0 state
    assert built[16 + 32 : 16 + 40] == bytes.fromhex("0100000002000000")  # its NSIDs
    assert parse_ana_log(built) == AnaLog(chgcnt=5, groups=WORKED_GROUPS)


def test_ana_nsids_ascending_and_rgo() -> None:
    group = AnaGroupDescriptor(grpid=3, state=AnaState.NON_OPTIMIZED, chgcnt=1, nsids=(9, 4))
    built = build_ana_log(1, [group])
    assert built[16 + 32 :] == bytes.fromhex("0400000009000000")
    assert parse_ana_log(built).groups[0].nsids == (4, 9)
    rgo = build_ana_log(1, [group], rgo=True)
    assert rgo == image(48, (0, "01"), (8, "01"), (16, "03000000 00000000 01"), (32, "02"))
    assert parse_ana_log(rgo).groups == (AnaGroupDescriptor(3, AnaState.NON_OPTIMIZED, 1, ()),)


def test_ana_empty_and_trailing_bytes() -> None:
    assert build_ana_log(0, []) == bytes(16)
    assert parse_ana_log(WORKED_ANA + bytes(4096)) == parse_ana_log(WORKED_ANA)


@pytest.mark.parametrize("cut", [0, 15, 16, 47, 55, 87])
def test_ana_truncated(cut: int) -> None:
    with pytest.raises(ValueError, match="ANA log"):
        parse_ana_log(WORKED_ANA[:cut])


def test_ana_huge_nnsids_is_value_error() -> None:
    data = image(48, (8, "0100"), (16, "01000000 ffffffff"))
    with pytest.raises(ValueError, match="NSID list"):
        parse_ana_log(data)


_ANA_GROUP = st.builds(
    AnaGroupDescriptor,
    grpid=st.integers(1, 0xFFFFFFFF),
    state=st.sampled_from(list(AnaState)),
    chgcnt=st.integers(0, 2**64 - 1),
    nsids=st.lists(st.integers(1, 0xFFFFFFFE), unique=True, max_size=6).map(
        lambda ids: tuple(sorted(ids))
    ),
)


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 2**64 - 1), st.lists(_ANA_GROUP, max_size=5))
def test_ana_round_trip_property(chgcnt: int, groups: list[AnaGroupDescriptor]) -> None:
    built = build_ana_log(chgcnt, groups)
    assert parse_ana_log(built) == AnaLog(chgcnt=chgcnt, groups=tuple(groups))


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=200),
        st.tuples(st.integers(0, 4), st.binary(max_size=200)).map(
            lambda t: bytes(8) + t[0].to_bytes(2, "little") + bytes(6) + t[1]
        ),
    )
)
def test_ana_parse_never_crashes(data: bytes) -> None:
    try:
        log = parse_ana_log(data)
    except ValueError:
        return
    assert isinstance(log, AnaLog)


# --- Discovery (LID 0x70) -------------------------------------------------------------------------

ENTRY = DiscoveryEntry(
    trtype=3,
    adrfam=1,
    subtype=2,
    treq=0x02,
    portid=0x0102,
    cntlid=0xFFFF,
    asqsz=32,
    eflags=0x0002,
    trsvcid="4420",
    subnqn="nqn.2024-01.io.example:sub1",
    traddr="192.168.1.10",
    tsas=b"\x01",
)
ENTRY_IMAGE = image(
    1024,
    (0, "03010202 0201 ffff 2000 0200"),
    (32, b"4420"),
    (256, b"nqn.2024-01.io.example:sub1"),
    (512, b"192.168.1.10"),
    (768, "01"),
)


def test_discovery_entry_golden() -> None:
    assert build_discovery_entry(ENTRY) == ENTRY_IMAGE


def test_discovery_log_golden_and_round_trip() -> None:
    second = DiscoveryEntry(3, 2, 3, 0, 1, 0xFFFF, 32, 0, "8009", "nqn.d", "fe80::1")
    log = build_discovery_log(0x77, [ENTRY, second])
    assert len(log) == 3 * 1024
    assert log[:1024] == image(1024, (0, "7700000000000000 0200000000000000 0000"), (20, "000c"))
    assert log[1024:2048] == ENTRY_IMAGE
    header = parse_discovery_header(log)
    assert (header.genctr, header.numrec, header.recfmt, header.tdlpl) == (0x77, 2, 0, 3072)
    entries = parse_discovery_entries(log[1024:], header.numrec)
    assert entries == [replace(ENTRY, tsas=b"\x01" + bytes(255)), second]
    assert build_discovery_log(0x77, entries) == log


def test_discovery_header_from_20_bytes() -> None:
    log = build_discovery_log(9, [ENTRY])
    header = parse_discovery_header(log[:20])
    assert (header.genctr, header.numrec, header.recfmt) == (9, 1, 0)
    with pytest.raises(ValueError, match="cannot parse"):
        parse_discovery_header(log[:17])


def test_discovery_empty_log() -> None:
    log = build_discovery_log(1, [])
    assert log == image(1024, (0, "01"), (20, "0004"))
    assert parse_discovery_entries(b"", 0) == []


def test_discovery_entries_rejects() -> None:
    with pytest.raises(ValueError, match="do not hold"):
        parse_discovery_entries(ENTRY_IMAGE[:1023], 1)
    with pytest.raises(ValueError, match="do not hold"):
        parse_discovery_entries(ENTRY_IMAGE, -1)
    bad = DiscoveryEntry(3, 1, 2, 0, 1, 1, 32, 0, "4420", "n" * 257, "x")
    with pytest.raises(ValueError, match="cannot build"):
        build_discovery_entry(bad)
    with pytest.raises(ValueError, match="tsas"):
        build_discovery_entry(DiscoveryEntry(3, 1, 2, 0, 1, 1, 32, 0, "", "", "", bytes(257)))


def test_discovery_space_padded_traddr_is_stripped() -> None:
    raw = bytearray(ENTRY_IMAGE)
    raw[512:524] = b"10.0.0.1    "
    [entry] = parse_discovery_entries(bytes(raw), 1)
    assert entry.traddr == "10.0.0.1"


@settings(max_examples=100, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=2100),
        st.text(st.characters(max_codepoint=0x7F), max_size=2100).map(str.encode),
    ),
    st.integers(-1, 3),
)
def test_discovery_entries_parse_never_crashes(data: bytes, count: int) -> None:
    try:
        entries = parse_discovery_entries(data, count)
    except ValueError:
        return
    assert len(entries) == count


@settings(max_examples=100, deadline=None)
@given(st.binary(min_size=0, max_size=1100))
def test_discovery_header_parse_never_crashes(data: bytes) -> None:
    try:
        header = parse_discovery_header(data)
    except ValueError:
        return
    assert header.numrec >= 0
