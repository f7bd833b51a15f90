"""Identify structures (nvmeof/wire/identify.py): sizes, golden bytes at the offsets of
docs/PROTOCOL.md §5.1, round trips, and robustness of the descriptor-list parser."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings, strategies as st

from nvmeof.wire.identify import (
    ACTIVE_NS_LIST,
    ID_POWER_STATE,
    IDENTIFY_CONTROLLER,
    IDENTIFY_CTRL_NVM,
    IDENTIFY_NAMESPACE,
    IDENTIFY_NS_CS_INDEP,
    IDENTIFY_NS_NVM,
    LBA_FORMAT,
    NS_ID_DESC,
    build_active_ns_list,
    build_identify_ctrl,
    build_identify_ctrl_nvm,
    build_identify_ns,
    build_identify_ns_cs_indep,
    build_identify_ns_nvm,
    build_ns_desc_list,
    lba_format,
    parse_active_ns_list,
    parse_identify_ctrl,
    parse_identify_ctrl_nvm,
    parse_identify_ns,
    parse_identify_ns_cs_indep,
    parse_identify_ns_nvm,
    parse_ns_desc_list,
)

EUI64 = bytes.fromhex("0011223344556677")
NGUID = bytes(range(0x10, 0x20))
UUID = bytes(range(0xA0, 0xB0))


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
        (IDENTIFY_CONTROLLER, 4096),
        (IDENTIFY_NAMESPACE, 4096),
        (IDENTIFY_NS_CS_INDEP, 4096),
        (IDENTIFY_CTRL_NVM, 4096),
        (IDENTIFY_NS_NVM, 4096),
        (ACTIVE_NS_LIST, 4096),
        (ID_POWER_STATE, 32),
        (LBA_FORMAT, 4),
        (NS_ID_DESC, 4),
    ],
)
def test_sizeof(struct: Any, size: int) -> None:
    assert struct.sizeof() == size
    assert len(struct.build({} if struct is not ACTIVE_NS_LIST else [0] * 1024)) == size


# --- Identify Controller --------------------------------------------------------------------------

CTRL_FIELDS: dict[str, Any] = {
    "vid": 0x1B36,
    "ssvid": 0x1AF4,
    "sn": "0123456789abcdef",
    "mn": "Linux",
    "fr": "6.9.0",
    "rab": 6,
    "ieee": b"\x00\x12\x34",
    "cmic": 0x0B,
    "mdts": 5,
    "cntlid": 0x0102,
    "ver": 0x00010400,
    "rtd3e": 1_000_000,
    "oaes": 0x0900,
    "ctratt": 0x41,
    "cntrltype": 1,
    "crdt1": 7,
    "oacs": 0x0008,
    "acl": 3,
    "aerl": 3,
    "frmw": 3,
    "lpa": 0x06,
    "elpe": 127,
    "tnvmcap": 1 << 70,
    "kas": 10,
    "anatt": 10,
    "anacap": 0x1F,
    "anagrpmax": 128,
    "nanagrpid": 128,
    "pels": 9,
    "sqes": 0x66,
    "cqes": 0x44,
    "maxcmd": 128,
    "nn": 1024,
    "oncs": 0x000C,
    "vwc": 1,
    "ocfs": 0x0F,
    "sgls": 0x00100001,
    "mnan": 1024,
    "subnqn": "nqn.2024-01.io.example:sub1",
    "ioccsz": 4,
    "iorcsz": 1,
    "icdoff": 0,
    "ctrattr": 1,
    "msdbd": 1,
    "ofcs": 0x0001,
    "dctype": 2,
    "psd": [{"max_power": 0x09C4, "entry_lat": 0x10, "exit_lat": 4}],
    "vs": b"\xee" + bytes(1023),
}

CTRL_IMAGE = image(
    4096,
    (0, "361b"),
    (2, "f41a"),
    (4, b"0123456789abcdef    "),
    (24, b"Linux".ljust(40)),
    (64, b"6.9.0   "),
    (72, "06"),
    (73, "001234"),
    (76, "0b"),
    (77, "05"),
    (78, "0201"),
    (80, "00040100"),
    (88, "40420f00"),
    (92, "00090000"),
    (96, "41000000"),
    (111, "01"),
    (128, "0700"),
    (256, "0800"),
    (258, "03030306"),
    (262, "7f"),
    (280, bytes(8) + b"\x40" + bytes(7)),
    (320, "0a00"),
    (342, "0a1f"),
    (344, "80000000"),
    (348, "80000000"),
    (352, "09000000"),
    (512, "6644"),
    (514, "8000"),
    (516, "00040000"),
    (520, "0c00"),
    (525, "01"),
    (534, "0f00"),
    (536, "01001000"),
    (540, "00040000"),
    (768, b"nqn.2024-01.io.example:sub1"),
    (1792, "04000000"),
    (1796, "01000000"),
    (1802, "01"),
    (1803, "01"),
    (1804, "0100"),
    (1806, "02"),
    (2048, "c409000010000000040000000000"),
    (3072, "ee"),
)


def test_identify_ctrl_golden_bytes() -> None:
    assert build_identify_ctrl(CTRL_FIELDS) == CTRL_IMAGE


def test_identify_ctrl_parse() -> None:
    ctrl = parse_identify_ctrl(CTRL_IMAGE)
    assert (ctrl.cntlid, ctrl.cmic, ctrl.kas) == (0x102, 0x0B, 10)
    assert (ctrl.sgls, ctrl.mnan, ctrl.ioccsz) == (0x100001, 1024, 4)
    assert (ctrl.sn, ctrl.mn, ctrl.fr) == ("0123456789abcdef", "Linux", "6.9.0")
    assert ctrl.subnqn == "nqn.2024-01.io.example:sub1"
    assert ctrl.tnvmcap == 1 << 70
    assert ctrl.psd[0].max_power == 0x09C4
    assert ctrl.psd[1].max_power == 0
    assert len(ctrl.psd) == 32


def test_identify_ctrl_round_trip() -> None:
    assert build_identify_ctrl(parse_identify_ctrl(CTRL_IMAGE)) == CTRL_IMAGE


def test_identify_ctrl_defaults_are_zero() -> None:
    assert build_identify_ctrl({}) == image(4096, (4, b" " * 68))  # SN/MN/FR space-padded


@pytest.mark.parametrize(
    "fields",
    [
        {"cntlidd": 1},  # typo
        {"fcatt": 1},  # spec name; the kernel/our name is ctrattr
        {"cntlid": 0x10000},  # does not fit
        {"subnqn": "n" * 257},
        {"psd": [{}] * 33},
    ],
)
def test_identify_ctrl_rejects_bad_fields(fields: dict[str, Any]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011
        build_identify_ctrl(fields)


def test_identify_ctrl_short_data() -> None:
    with pytest.raises(ValueError, match="cannot parse"):
        parse_identify_ctrl(CTRL_IMAGE[:4095])


# --- Identify Namespace ---------------------------------------------------------------------------

NS_FIELDS: dict[str, Any] = {
    "nsze": 0x200000,
    "ncap": 0x200000,
    "nuse": 0x1000,
    "nsfeat": 0x12,
    "nlbaf": 1,
    "flbas": 1,
    "nmic": 1,
    "dlfeat": 0x09,
    "nawupf": 7,
    "noiob": 256,
    "nvmcap": 0x40000000,
    "npwg": 7,
    "npdg": 7,
    "nows": 31,
    "anagrpid": 2,
    "nsattr": 1,
    "endgid": 3,
    "nguid": NGUID,
    "eui64": EUI64,
    "lbaf": [lba_format(9), lba_format(12, ms=8, rp=2)],
}

NS_IMAGE = image(
    4096,
    (0, "0000200000000000"),
    (8, "0000200000000000"),
    (16, "0010000000000000"),
    (24, "120101"),
    (30, "01"),
    (33, "09"),
    (36, "0700"),
    (46, "0001"),
    (48, "00000040"),
    (64, "0700"),
    (68, "0700"),
    (72, "1f00"),
    (92, "02000000"),
    (99, "01"),
    (102, "0300"),
    (104, NGUID),
    (120, EUI64),
    (128, "00000900"),
    (132, "08000c02"),
)


def test_identify_ns_golden_bytes() -> None:
    built = build_identify_ns(NS_FIELDS)
    assert built == NS_IMAGE
    assert built[130] == 9  # lbaf[0].ds


def test_identify_ns_parse_and_round_trip() -> None:
    ns = parse_identify_ns(NS_IMAGE)
    assert (ns.nsze, ns.anagrpid, ns.nguid, ns.eui64) == (0x200000, 2, NGUID, EUI64)
    assert (ns.lbaf[1].ms, ns.lbaf[1].ds, ns.lbaf[1].rp) == (8, 12, 2)
    assert len(ns.lbaf) == 64
    assert build_identify_ns(ns) == NS_IMAGE


def test_lba_format_helper() -> None:
    assert lba_format(12) == {"ms": 0, "ds": 12, "rp": 0}
    assert LBA_FORMAT.build(lba_format(9, ms=16, rp=1)) == bytes.fromhex("10000901")


def test_identify_ns_rejects_bad_fields() -> None:
    with pytest.raises(ValueError, match="unknown"):
        build_identify_ns({"anagrpid": 1, "ana_grpid": 1})
    with pytest.raises(ValueError, match="64"):
        build_identify_ns({"lbaf": [lba_format(12)] * 65})
    with pytest.raises(ValueError, match="cannot build"):
        build_identify_ns({"nguid": b"short"})


# --- CNS 0x08 / 0x06 / 0x05 -----------------------------------------------------------------------


def test_identify_ns_cs_indep_golden_and_round_trip() -> None:
    fields = {
        "nsfeat": 0x10,
        "nmic": 1,
        "rescap": 0xFF,
        "fpi": 0x80,
        "anagrpid": 0x01020304,
        "nsattr": 1,
        "nvmsetid": 5,
        "endgid": 6,
        "nstat": 1,
    }
    expected = image(4096, (0, "1001ff8004030201"), (8, "01"), (10, "05000600"), (14, "01"))
    built = build_identify_ns_cs_indep(fields)
    assert built == expected
    parsed = parse_identify_ns_cs_indep(built)
    assert (parsed.anagrpid, parsed.nstat) == (0x01020304, 1)
    assert build_identify_ns_cs_indep(parsed) == expected


def test_identify_ctrl_nvm_golden_and_round_trip() -> None:
    fields = {"vsl": 1, "wzsl": 2, "wusl": 3, "dmrl": 4, "dmrsl": 0x1000, "dmsl": 1 << 40}
    expected = image(4096, (0, "0102030400100000"), (8, "0000000000010000"))
    built = build_identify_ctrl_nvm(fields)
    assert built == expected
    parsed = parse_identify_ctrl_nvm(built)
    assert (parsed.wzsl, parsed.dmsl) == (2, 1 << 40)
    assert build_identify_ctrl_nvm(parsed) == expected


def test_identify_ns_nvm_golden_and_round_trip() -> None:
    fields = {
        "lbstm": 0xFF,
        "pic": 0x07,
        "elbaf": [0x80] + [0] * 63,
        "npdgl": 1,
        "nprg": 2,
        "npra": 3,
        "nors": 4,
        "npdal": 5,
    }
    expected = image(
        4096, (0, "ff00000000000000"), (8, "07"), (12, "80000000"), (268, "01000000"),
        (272, "02000000030000000400000005000000"),
    )  # fmt: skip
    built = build_identify_ns_nvm(fields)
    assert built == expected
    parsed = parse_identify_ns_nvm(built)
    assert (parsed.pic, parsed.elbaf[0], parsed.npdal) == (7, 0x80, 5)
    assert build_identify_ns_nvm(parsed) == expected


# --- Active Namespace ID list (CNS 0x02) ----------------------------------------------------------


def test_active_ns_list_golden() -> None:
    built = build_active_ns_list([7, 1, 0x20, 1])
    assert built == image(4096, (0, "01000000 07000000 20000000"))
    assert parse_active_ns_list(built) == [1, 7, 0x20]


def test_active_ns_list_empty_and_full() -> None:
    assert build_active_ns_list([]) == bytes(4096)
    assert parse_active_ns_list(bytes(4096)) == []
    full = list(range(1, 1025))
    assert parse_active_ns_list(build_active_ns_list(full)) == full


def test_active_ns_list_parse_stops_at_first_zero() -> None:
    data = image(4096, (0, "0300000000000000 05000000"))
    assert parse_active_ns_list(data) == [3]


@pytest.mark.parametrize("nsids", [range(1, 1026), [0, 1], [0xFFFFFFFF], [-1]])
def test_active_ns_list_rejects(nsids: Any) -> None:
    with pytest.raises(ValueError):  # noqa: PT011
        build_active_ns_list(nsids)


# --- Namespace Identification Descriptor list (CNS 0x03) ------------------------------------------


def test_ns_desc_list_golden() -> None:
    built = build_ns_desc_list(eui64=EUI64, nguid=NGUID, uuid=UUID, csi=0)
    assert built == image(
        4096,
        (0, "01080000"),
        (4, EUI64),
        (12, "02100000"),
        (16, NGUID),
        (32, "03100000"),
        (36, UUID),
        (52, "04010000 00"),
    )


def test_ns_desc_list_skips_none_and_zero_ids() -> None:
    built = build_ns_desc_list(eui64=bytes(8), nguid=None, uuid=UUID)
    assert built == image(4096, (0, "03100000"), (4, UUID))
    assert build_ns_desc_list() == bytes(4096)


def test_ns_desc_list_round_trip() -> None:
    built = build_ns_desc_list(eui64=EUI64, nguid=NGUID, uuid=UUID, csi=2)
    assert parse_ns_desc_list(built) == {"eui64": EUI64, "nguid": NGUID, "uuid": UUID, "csi": 2}
    assert parse_ns_desc_list(bytes(4096)) == {}


def test_ns_desc_list_skips_unknown_types() -> None:
    data = image(4096, (0, "7f020000abcd"), (6, "03100000"), (10, UUID))
    assert parse_ns_desc_list(data) == {"uuid": UUID}


@pytest.mark.parametrize(
    "data",
    [
        image(4096, (0, "02080000"), (4, EUI64)),  # NGUID with NIDL 8: "bogus length"
        image(4096, (0, "04020000")),  # CSI with NIDL 2
        image(16, (0, "7f080000"), (12, "03100000")),  # UUID runs past the end of the data
    ],
    ids=["nguid-nidl-8", "csi-nidl-2", "overrun"],
)
def test_ns_desc_list_rejects_bogus(data: bytes) -> None:
    with pytest.raises(ValueError):  # noqa: PT011
        parse_ns_desc_list(data)


@pytest.mark.parametrize(
    "kwargs", [{"eui64": NGUID}, {"nguid": EUI64}, {"uuid": b"x"}, {"csi": -1}]
)
def test_ns_desc_list_build_rejects(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011
        build_ns_desc_list(**kwargs)


_DESCRIPTOR = st.tuples(st.integers(0, 5), st.integers(0, 20)).flatmap(
    lambda t: st.binary(min_size=t[1], max_size=t[1]).map(lambda b: bytes([t[0], t[1], 0, 0]) + b)
)


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=4200),
        st.lists(_DESCRIPTOR, max_size=8).map(b"".join),
    )
)
def test_ns_desc_list_parse_never_crashes(data: bytes) -> None:
    try:
        result = parse_ns_desc_list(data)
    except ValueError:
        return
    assert set(result) <= {"eui64", "nguid", "uuid", "csi"}
