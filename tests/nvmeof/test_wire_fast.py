"""The struct codecs of the data path agree byte for byte with the construct declarations."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings, strategies as st

from nvmeof.wire import fast
from nvmeof.wire.fabrics import CONNECT_COMMAND, CONNECT_DATA, PROPERTY_GET_COMMAND
from nvmeof.wire.pdu import CAPSULE_CMD, CAPSULE_RESP, DATA_PDU, ICREQ, ICRESP, R2T, TERM_REQ

NAMES = sorted(fast.DECLARATIONS)


@pytest.mark.parametrize("name", NAMES)
def test_sizes_agree(name: str) -> None:
    codec, declaration, _, offset = fast.DECLARATIONS[name]
    assert codec.size + offset <= declaration.sizeof()
    if offset == 0:
        assert codec.size == declaration.sizeof()


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=50, deadline=None)
@given(data=st.data())
def test_parse_agrees_on_random_bytes(name: str, data: Any) -> None:
    codec, declaration, flatten, offset = fast.DECLARATIONS[name]
    raw = data.draw(st.binary(min_size=declaration.sizeof(), max_size=declaration.sizeof()))
    assert codec.unpack_from(raw, offset) == flatten(declaration.parse(raw))


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=50, deadline=None)
@given(data=st.data())
def test_build_agrees(name: str, data: Any) -> None:
    codec, declaration, flatten, offset = fast.DECLARATIONS[name]
    raw = bytearray(data.draw(st.binary(min_size=declaration.sizeof(),
                                        max_size=declaration.sizeof())))  # fmt: skip
    parsed = declaration.parse(bytes(raw))
    rebuilt = declaration.build(parsed)  # reserved bytes come back as zeros
    packed = bytearray(rebuilt)
    codec.pack_into(packed, offset, *flatten(parsed))
    assert bytes(packed) == rebuilt


def test_ch_golden_icreq() -> None:
    raw = bytes.fromhex("0000800080000000") + bytes(120)
    assert fast.CH.unpack_from(raw) == (0, 0, 128, 0, 128)
    assert ICREQ.build({"ch": {"type": 0, "hlen": 128, "plen": 128}}) == raw


def test_icresp_golden_nvmet() -> None:
    built = ICRESP.build({"ch": {"type": 1, "hlen": 128, "plen": 128}, "maxh2cdata": 0x400000})
    assert built[:16] == bytes.fromhex("01008000800000000000000000004000")
    assert len(built) == 128


def test_capsule_resp_golden() -> None:
    raw = bytes.fromhex("050018001800000000000000000000000500000001000000")
    assert fast.CAPSULE_RESP.unpack(raw) == (5, 0, 24, 0, 24, 0, 0, 5, 0, 1, 0)
    parsed = CAPSULE_RESP.parse(raw)
    assert (parsed.cqe.sqhd, parsed.cqe.cid) == (5, 1)


def test_r2t_and_data_golden() -> None:
    r2t = bytes.fromhex("090018001800000003100700000000000020000000000000")
    assert fast.R2T.unpack(r2t) == (9, 0, 24, 0, 24, 0x1003, 7, 0, 8192)
    assert R2T.build(R2T.parse(r2t)) == r2t
    h2c = bytes.fromhex("060418181820000003100700000000000020000000000000")
    assert fast.DATA_PDU.unpack(h2c) == (6, 4, 24, 24, 0x2018, 0x1003, 7, 0, 8192)
    c2h = bytes.fromhex("070418181810000005200000000000000010000000000000")
    assert DATA_PDU.parse(c2h).cccid == 0x2005


def test_term_req_layout() -> None:
    built = TERM_REQ.build({"ch": {"type": 3, "hlen": 24, "plen": 24}, "fes": 1, "fei": 2})
    assert fast.TERM_REQ.unpack(built) == (3, 0, 24, 0, 24, 1, 2)


def test_admin_connect_golden() -> None:
    # docs/PROTOCOL.md §10: admin Connect SQE, CID 0, KATO 5000 ms.
    expected = bytes.fromhex(
        "7f400000010000000000000000000000"
        "00000000000000000000000000000000"
        "000400000000000100000000"
        "1f000000"
        "88130000000000000000000000000000"
    )
    built = CONNECT_COMMAND.build({"fctype": 1, "kato": 5000, "sgl": {"length": 1024, "type": 1}})
    assert built == expected
    header = CAPSULE_CMD.build({"ch": {"type": 4, "hlen": 72, "pdo": 72, "plen": 72 + 1024},
                                "sqe": {"opcode": 0x7F}})  # fmt: skip
    assert header[:8] == bytes.fromhex("0400484848040000")


def test_connect_data_offsets() -> None:
    built = CONNECT_DATA.build({"hostid": bytes(range(16)), "cntlid": 0xFFFF,
                                "subsysnqn": "nqn.sub", "hostnqn": "nqn.host"})  # fmt: skip
    assert len(built) == 1024
    assert built[:16] == bytes(range(16))
    assert built[16:18] == b"\xff\xff"
    assert built[256:263] == b"nqn.sub" and built[263] == 0
    assert built[512:520] == b"nqn.host"


def test_property_get_cap_golden() -> None:
    built = PROPERTY_GET_COMMAND.build({"fctype": 4, "cid": 2, "attrib": 1, "offset": 0})
    assert built[0] == 0x7F and built[1] == 0x40 and built[2:4] == b"\x02\x00"
    assert built[4] == 0x04 and built[39] == 0x5A and built[40] == 1
    assert built[44:48] == bytes(4)


@settings(max_examples=100, deadline=None)
@given(raw=st.binary(min_size=72, max_size=72))
def test_rw_capsule_reads_what_the_capsule_declaration_says(raw: bytes) -> None:
    """RW_CAPSULE (parse only: it skips fields) agrees with CAPSULE_CMD on every field it has."""
    c = CAPSULE_CMD.parse(raw)
    sqe = c.sqe
    expected = (c.ch.type, c.ch.flags, c.ch.hlen, c.ch.pdo, c.ch.plen, sqe.opcode, sqe.flags,
                sqe.cid, sqe.nsid, sqe.sgl.length, sqe.sgl.type, sqe.cdw10 | sqe.cdw11 << 32,
                sqe.cdw12 & 0xFFFF, sqe.cdw12 >> 16)  # fmt: skip
    assert fast.RW_CAPSULE.unpack_from(raw) == expected
