"""HostConnection <-> ControllerConnection flows through an in-memory pair.

See docs/PROTOCOL.md §1 and §2.
"""

from __future__ import annotations

import struct

import pytest

from nvmeof.constants import FatalErrorStatus as Fes, PduType
from nvmeof.errors import LocalProtocolError, TransportError
from nvmeof.tcp.controller import ConnState, ControllerConnection
from nvmeof.tcp.events import (
    CommandReceived,
    ConnectionEstablished,
    DataReceived,
    ResponseReceived,
    TermReqReceived,
)
from nvmeof.tcp.host import HostConnection, HostState
from tests.pairs import (
    CH,
    ProtocolPair,
    ScriptedController,
    build_pdu,
    connect_data,
    cqe_psh,
    data_psh,
    drain,
    feed_bytewise,
    icreq,
    icresp,
    join,
    record_session,
    rw_sqe,
    split_pdus,
    sqe,
    term_req,
)

DIGESTS = [
    pytest.param(False, False, id="no-digest"),
    pytest.param(True, False, id="hdgst"),
    pytest.param(False, True, id="ddgst"),
    pytest.param(True, True, id="hdgst+ddgst"),
]

DATA_XFER_ERROR = 0x0008  # (0x004 << 1)


def hexb(text: str) -> bytes:
    return bytes.fromhex(text.replace("|", " "))


def pattern(n: int, seed: int = 1) -> bytes:
    return bytes((i * 7 + seed) & 0xFF for i in range(n))


def pair(hd: bool = False, dd: bool = False, **kw: int) -> ProtocolPair:
    p = ProtocolPair(header_digest=hd, data_digest=dd, **kw)
    p.establish()
    return p


def ch_fields(pdu: bytes) -> tuple[int, int, int, int, int]:
    pdu_type, flags, hlen, pdo, plen = CH.unpack_from(pdu)
    return pdu_type, flags, hlen, pdo, plen


def check_digests(pdu: bytes, hd: bool, dd: bool) -> None:
    """HDGSTF/DDGSTF and the layout of one PDU agree with the negotiated digests."""
    pdu_type, flags, hlen, pdo, plen = ch_fields(pdu)
    assert plen == len(pdu)
    carries_hd = pdu_type in (4, 5, 6, 7, 9) and hd
    assert bool(flags & 1) == carries_hd
    has_data = pdo != 0
    assert bool(flags & 2) == (dd and has_data)
    if has_data:
        assert pdo == hlen + (4 if carries_hd else 0)  # HPDA = CPDA = 0: no padding
    else:
        assert plen == hlen + (4 if carries_hd else 0)


# -- connection establishment ------------------------------------------------------------------


@pytest.mark.parametrize(("hd", "dd"), DIGESTS)
def test_icreq_icresp_negotiation(hd: bool, dd: bool) -> None:
    p = ProtocolPair(header_digest=hd, data_digest=dd, max_h2c_data=65536)
    p.host.initiate()
    assert p.host.state is HostState.AWAIT_ICRESP
    with pytest.raises(LocalProtocolError):
        p.host.initiate()
    req = p.transfer(p.host)
    bits = (1 if hd else 0) | (2 if dd else 0)
    assert req == icreq(digest_bits=bits)  # HPDA 0, MAXR2T 0, PFV 0
    (ev,) = p.events(p.ctrl)
    assert ev == ConnectionEstablished(hd, dd, 1)
    resp = p.transfer(p.ctrl)
    assert resp == icresp(digest_bits=bits, maxh2cdata=65536)  # digests mirrored, CPDA 0
    (hev,) = p.events(p.host)
    assert hev == ConnectionEstablished(hd, dd, 65536)
    assert (p.host.state.value, p.ctrl.state.value) == ("established", "established")
    assert (p.host.header_digest, p.host.data_digest) == (hd, dd)
    assert (p.ctrl.header_digest, p.ctrl.data_digest) == (hd, dd)
    assert p.host.max_h2c_data == 65536


def test_icreq_golden_bytes() -> None:
    p = ProtocolPair()
    p.host.initiate()
    raw = join(p.host.data_to_send())
    assert raw == hexb("00 00 80 00 80 00 00 00 | 00 00 00 00 00 00 00 00") + bytes(112)
    p = ProtocolPair(header_digest=True, data_digest=True)
    p.host.initiate()
    assert join(p.host.data_to_send())[11] == 0x03


def test_icresp_golden_bytes_nvmet_maxh2cdata() -> None:
    ctrl = ControllerConnection(max_h2c_data=0x400000)
    ctrl.receive_data(icreq())
    assert isinstance(ctrl.next_event(), ConnectionEstablished)
    raw = join(ctrl.data_to_send())
    assert raw == hexb("01 00 80 00 80 00 00 00 | 00 00 00 00 00 00 40 00") + bytes(112)


def test_controller_reports_maxr2t_plus_one() -> None:
    ctrl = ControllerConnection()
    ctrl.receive_data(icreq(maxr2t=3, hpda=0))
    assert ctrl.next_event() == ConnectionEstablished(False, False, 4)


@pytest.mark.parametrize(
    ("want", "resp", "fei"),
    [
        pytest.param((True, False), icresp(digest_bits=0), 11, id="hdgst-asked-not-granted"),
        pytest.param((False, False), icresp(digest_bits=1), 11, id="hdgst-granted-unasked"),
        pytest.param((False, True), icresp(digest_bits=3), 11, id="ddgst-plus-extra"),
        pytest.param((True, True), icresp(digest_bits=2), 11, id="ddgst-only"),
        pytest.param((False, False), icresp(cpda=32), 10, id="cpda-32"),
        pytest.param((False, False), icresp(cpda=255), 10, id="cpda-255"),
        pytest.param((False, False), icresp(maxh2cdata=4092), 12, id="maxh2cdata-4092"),
        pytest.param((False, False), icresp(maxh2cdata=0), 12, id="maxh2cdata-0"),
        pytest.param((False, False), icresp(maxh2cdata=4098), 12, id="maxh2cdata-not-x4"),
        pytest.param((False, False), icresp(maxh2cdata=65537), 12, id="maxh2cdata-odd"),
        pytest.param((False, False), icresp(pfv=1), 8, id="pfv-1"),
    ],
)
def test_host_rejects_bad_icresp(want: tuple[bool, bool], resp: bytes, fei: int) -> None:
    host = HostConnection(header_digest=want[0], data_digest=want[1])
    host.initiate()
    host.data_to_send()
    host.receive_data(resp)
    with pytest.raises(TransportError) as info:
        host.next_event()
    assert (info.value.fes, info.value.fei) == (Fes.UNSUPPORTED_PARAMETER, fei)
    assert host.state is HostState.TERMINATED
    (out,) = host.data_to_send()
    fes, term_fei, echoed = term_req(bytes(out))
    assert bytes(out)[0] == PduType.H2C_TERM_REQ
    assert (fes, term_fei) == (Fes.UNSUPPORTED_PARAMETER, fei)
    assert echoed == resp[:128]
    with pytest.raises(LocalProtocolError):
        host.send_command(sqe(0x18, 1))


@pytest.mark.parametrize("cpda", [0, 1, 31])
def test_host_accepts_cpda_up_to_31_and_pads_h2c_pdus(cpda: int) -> None:
    host = HostConnection()
    host.initiate()
    host.data_to_send()
    host.receive_data(icresp(cpda=cpda))
    assert isinstance(host.next_event(), ConnectionEstablished)
    host.send_command(sqe(0x01, 1, nsid=1), write_data=b"abcd" * 4, in_capsule_limit=8192)
    (pdu,) = split_pdus(join(host.data_to_send()))
    _, _, _, pdo, plen = ch_fields(pdu)
    align = (cpda + 1) * 4
    assert pdo % align == 0 and pdo >= 72
    assert pdu[pdo:plen] == b"abcd" * 4
    ctrl_side = ControllerConnection()
    ctrl_side.receive_data(icreq())
    ctrl_side.next_event()
    ctrl_side.receive_data(pdu)
    ev = ctrl_side.next_event()
    assert isinstance(ev, CommandReceived) and ev.data == b"abcd" * 4


def test_controller_rejects_bad_icreq() -> None:
    for raw, fei in ((icreq(pfv=1), 8), (icreq(hpda=32), 10)):
        ctrl = ControllerConnection()
        ctrl.receive_data(raw)
        with pytest.raises(TransportError) as info:
            ctrl.next_event()
        assert (info.value.fes, info.value.fei) == (Fes.UNSUPPORTED_PARAMETER, fei)
        (out,) = ctrl.data_to_send()
        assert term_req(bytes(out))[:2] == (Fes.UNSUPPORTED_PARAMETER, fei)


@pytest.mark.parametrize("strict", [False, True])
def test_controller_refuses_hpda_like_nvmet(strict: bool) -> None:
    # nvmet_tcp_handle_icreq: "unsupported hpda" ends the connection (docs/TOLERANCE.md).
    ctrl = ControllerConnection(strict=strict)
    ctrl.receive_data(icreq(hpda=3))
    with pytest.raises(TransportError) as info:
        ctrl.next_event()
    assert (info.value.fes, info.value.fei) == (Fes.UNSUPPORTED_PARAMETER, 10)


# -- commands and data ---------------------------------------------------------------------


@pytest.mark.parametrize(("hd", "dd"), DIGESTS)
def test_command_without_data(hd: bool, dd: bool) -> None:
    p = pair(hd, dd)
    cid = p.host.send_command(sqe(0x18, 0x2A))
    assert cid == 0x2A
    (ev,) = p.h2c()
    assert isinstance(ev, CommandReceived)
    assert (ev.cid, ev.data, ev.transfer_length, ev.data_digest_ok) == (0x2A, None, 0, True)
    assert ev.sqe[39] == 0x5A  # SGL: transport data block, length 0
    check_digests(bytes(p.wire["h2c"][128:]), hd, dd)
    p.ctrl.send_response(0x2A, 0x8004, dw0=7, dw1=8, sqhd=3, sqid=0)
    (rsp,) = p.c2h()
    assert rsp == ResponseReceived(0x2A, 0x8004, 7, 8, 3, 0)
    assert p.host.outstanding == 0


@pytest.mark.parametrize(("hd", "dd"), DIGESTS)
def test_in_capsule_write(hd: bool, dd: bool) -> None:
    p = pair(hd, dd)
    data = pattern(4096)
    p.host.send_command(rw_sqe(0x01, 5, 1, 0, 8), write_data=data, in_capsule_limit=8192)
    start = len(p.wire["h2c"])
    (ev,) = p.h2c()
    assert isinstance(ev, CommandReceived)
    assert ev.data == data and ev.transfer_length == 4096 and ev.data_digest_ok
    assert ev.sqe[39] == 0x01 and int.from_bytes(ev.sqe[32:36], "little") == 4096
    (pdu,) = split_pdus(bytes(p.wire["h2c"][start:]))
    check_digests(pdu, hd, dd)
    p.ctrl.send_response(5)
    assert p.c2h() == [ResponseReceived(5, 0, 0, 0, 0, 0)]


def test_write_larger_than_in_capsule_limit_waits_for_r2t() -> None:
    p = pair()
    p.host.send_command(rw_sqe(0x01, 1, 1, 0, 17), write_data=pattern(8704),
                        in_capsule_limit=8192)  # fmt: skip
    (ev,) = p.h2c()
    assert isinstance(ev, CommandReceived)
    assert ev.data is None and ev.transfer_length == 8704 and ev.sqe[39] == 0x5A


@pytest.mark.parametrize(("hd", "dd"), DIGESTS)
def test_r2t_write_across_maxh2cdata(hd: bool, dd: bool) -> None:
    p = pair(hd, dd, max_h2c_data=4096)
    data = pattern(10000, seed=3)
    p.host.send_command(rw_sqe(0x01, 0x77, 1, 0, 20), write_data=data)
    (cmd,) = p.h2c()
    assert isinstance(cmd, CommandReceived) and cmd.data is None
    assert cmd.transfer_length == 10000
    buf = bytearray(cmd.transfer_length)
    p.ctrl.request_data(cmd.cid, buf)
    assert p.ctrl.outstanding_transfers == 1
    r2t = p.transfer(p.ctrl)
    check_digests(r2t, hd, dd)
    _, _, _, _, _, cid, ttag, r2to, r2tl = struct.unpack_from("<BBBBIHHII", r2t)
    assert (cid, r2to, r2tl) == (0x77, 0, 10000)
    assert p.events(p.host) == []
    h2c = p.transfer(p.host)
    pdus = split_pdus(h2c)
    assert len(pdus) == 3
    offsets = []
    for i, pdu in enumerate(pdus):
        check_digests(pdu, hd, dd)
        pdu_type, flags, _, pdo, _ = ch_fields(pdu)
        cccid, pttag, datao, datal = struct.unpack_from("<HHII", pdu, 8)
        assert (pdu_type, cccid, pttag) == (PduType.H2C_DATA, 0x77, ttag)
        assert bool(flags & 0x04) == (i == 2)  # LAST_PDU only on the last
        assert datal == min(4096, 10000 - datao)
        assert pdu[pdo : pdo + datal] == data[datao : datao + datal]
        offsets.append(datao)
    assert offsets == [0, 4096, 8192]
    assert p.events(p.ctrl) == [DataReceived(0x77, True)]
    assert bytes(buf) == data
    assert p.ctrl.outstanding_transfers == 0
    p.ctrl.send_response(0x77)
    assert p.c2h() == [ResponseReceived(0x77, 0, 0, 0, 0, 0)]


def test_h2c_data_fed_one_byte_at_a_time() -> None:
    p = pair(True, True, max_h2c_data=4096)
    data = pattern(9000)
    p.host.send_command(rw_sqe(0x01, 3, 1, 0, 18), write_data=data)
    assert len(p.h2c()) == 1
    buf = bytearray(9000)
    p.ctrl.request_data(3, buf)
    p.c2h()
    stream = join(p.host.data_to_send())
    assert feed_bytewise(p.ctrl, stream) == [DataReceived(3, True)]
    assert bytes(buf) == data


@pytest.mark.parametrize(("hd", "dd"), DIGESTS)
@pytest.mark.parametrize("success", [False, True], ids=["capsule-resp", "success-flag"])
def test_read_via_c2h_data(hd: bool, dd: bool, success: bool) -> None:
    p = pair(hd, dd)
    buf = bytearray(4096)
    p.host.send_command(rw_sqe(0x02, 9, 1, 0, 8), read_buffer=buf)
    (cmd,) = p.h2c()
    assert isinstance(cmd, CommandReceived)
    assert (cmd.data, cmd.transfer_length, cmd.sqe[39]) == (None, 4096, 0x5A)
    data = pattern(4096, seed=9)
    p.ctrl.send_data(9, data, success=success)
    if not success:
        p.ctrl.send_response(9, dw0=0x55)
    start = len(p.wire["c2h"])
    events = p.c2h()
    pdus = split_pdus(bytes(p.wire["c2h"][start:]))
    assert ch_fields(pdus[0])[1] & 0x0C == (0x0C if success else 0x04)
    for pdu in pdus:
        check_digests(pdu, hd, dd)
    if success:
        assert len(pdus) == 1
        assert events == [ResponseReceived(9, 0, 0, 0, 0, 0)]  # synthesized by the host
    else:
        assert [ch_fields(x)[0] for x in pdus] == [7, 5]
        assert events == [ResponseReceived(9, 0, 0x55, 0, 0, 0)]
    assert bytes(buf) == data
    assert p.host.outstanding == 0


@pytest.mark.parametrize(("hd", "dd"), DIGESTS)
def test_multi_pdu_c2h_data(hd: bool, dd: bool) -> None:
    p = pair(hd, dd, max_c2h_data=4096)
    buf = bytearray(10000)
    p.host.send_command(rw_sqe(0x02, 4, 1, 0, 20), read_buffer=buf)
    p.h2c()
    data = pattern(10000, seed=4)
    p.ctrl.send_data(4, data, success=True)
    start = len(p.wire["c2h"])
    assert p.c2h() == [ResponseReceived(4, 0, 0, 0, 0, 0)]
    pdus = split_pdus(bytes(p.wire["c2h"][start:]))
    assert len(pdus) == 3
    seen = []
    for i, pdu in enumerate(pdus):
        check_digests(pdu, hd, dd)
        flags = ch_fields(pdu)[1]
        cccid, ttag, datao, datal = struct.unpack_from("<HHII", pdu, 8)
        assert (cccid, ttag) == (4, 0)
        assert flags & 0x0C == (0x0C if i == 2 else 0)  # LAST_PDU and SUCCESS on the last only
        seen.append((datao, datal))
    assert seen == [(0, 4096), (4096, 4096), (8192, 1808)]
    assert bytes(buf) == data


def test_interleaved_commands_complete_independently() -> None:
    p = pair(True, True, max_c2h_data=1024)
    a, b = bytearray(3000), bytearray(2000)
    p.host.send_command(rw_sqe(0x02, 1, 1, 0, 6), read_buffer=a)
    p.host.send_command(rw_sqe(0x02, 2, 1, 8, 4), read_buffer=b)
    p.h2c()
    p.ctrl.send_data(2, pattern(2000, 2), success=False)
    p.ctrl.send_data(1, pattern(3000, 1), success=True)
    p.ctrl.send_response(2)
    assert p.c2h() == [ResponseReceived(1, 0, 0, 0, 0, 0), ResponseReceived(2, 0, 0, 0, 0, 0)]
    assert bytes(a) == pattern(3000, 1) and bytes(b) == pattern(2000, 2)


@pytest.mark.parametrize(("hd", "dd"), DIGESTS)
def test_recorded_session_replays_identically_however_it_is_fed(hd: bool, dd: bool) -> None:
    h2c_stream, c2h_stream, original = record_session(header_digest=hd, data_digest=dd)

    def replay(sizes: list[int]) -> tuple[list[object], bytes]:
        ctrl = ControllerConnection(max_h2c_data=4096, max_c2h_data=4096)
        responder = ScriptedController(ctrl)
        events: list[object] = []
        pos = i = 0
        while pos < len(h2c_stream):
            n = sizes[i % len(sizes)]
            ctrl.receive_data(h2c_stream[pos : pos + n])
            while (event := ctrl.next_event()) is not None:  # answer each before the next
                events.append(event)
                responder.handle(event)
            pos, i = pos + n, i + 1
        return events, join(ctrl.data_to_send())

    whole = replay([len(h2c_stream)])
    assert whole == replay([1]) == replay([5, 71, 3, 200, 4096])
    events, out = whole
    assert out == c2h_stream  # the controller answers byte for byte as in the recording
    kinds = [type(e).__name__ for e in events]
    assert kinds == ["ConnectionEstablished"] + ["CommandReceived"] * 7 + ["DataReceived"]
    connect = events[1]
    assert isinstance(connect, CommandReceived) and connect.data == connect_data()
    assert original.host.outstanding == 0


# -- golden bytes of what the controller and host send (docs/PROTOCOL.md §10) ----------------------


def test_golden_capsule_resp() -> None:
    p = pair()
    p.ctrl.send_response(1, 0, sqhd=5)
    assert p.transfer(p.ctrl, p.host) == hexb(
        "05 00 18 00 18 00 00 00 | 00 00 00 00 00 00 00 00 05 00 00 00 01 00 00 00"
    )
    p = pair(hd=True)
    p.ctrl.send_response(1, 0, sqhd=5)
    assert join(p.ctrl.data_to_send()) == hexb(
        "05 01 18 00 1c 00 00 00 | 00 00 00 00 00 00 00 00 05 00 00 00 01 00 00 00 69 47 67 3c"
    )


def test_golden_r2t_and_h2c_data() -> None:
    p = pair(max_h2c_data=8192)
    for cid in range(7):  # ttags 0..6 go to other commands: the next R2T gets ttag 7
        p.ctrl.request_data(0x100 + cid, bytearray(4))
    p.ctrl.data_to_send()
    data = pattern(8192)
    p.host.send_command(rw_sqe(0x01, 0x1003, 1, 0, 16), write_data=data)
    p.h2c()
    p.ctrl.request_data(0x1003, bytearray(8192))
    r2t = p.transfer(p.ctrl)
    assert r2t == hexb("09 00 18 00 18 00 00 00 03 10 07 00 00 00 00 00 00 20 00 00 00 00 00 00")
    assert p.events(p.host) == []
    h2c = join(p.host.data_to_send())
    assert h2c[:24] == hexb(
        "06 04 18 18 18 20 00 00 03 10 07 00 00 00 00 00 00 20 00 00 00 00 00 00"
    )
    assert h2c[24:] == data and len(h2c) == 0x2018


def test_golden_c2h_data() -> None:
    p = pair()
    p.ctrl.send_data(0x2005, bytes(4096), success=False)
    raw = join(p.ctrl.data_to_send())
    assert raw[:24] == hexb(
        "07 04 18 18 18 10 00 00 05 20 00 00 00 00 00 00 00 10 00 00 00 00 00 00"
    )
    assert raw[24:] == bytes(4096)
    p = pair(dd=True)
    p.ctrl.send_data(0x2005, bytes(4096), success=False)
    raw = join(p.ctrl.data_to_send())
    assert raw[:8] == hexb("07 06 18 18 1c 10 00 00")
    assert raw[-4:] == hexb("89 41 f9 98") and len(raw) == 0x101C


def test_golden_keep_alive_capsule_with_header_digest() -> None:
    p = pair(hd=True)
    p.host.send_command(sqe(0x18, 1))
    raw = join(p.host.data_to_send())
    expected_sqe = bytearray(64)
    expected_sqe[0], expected_sqe[1], expected_sqe[2], expected_sqe[39] = 0x18, 0x40, 1, 0x5A
    assert raw == hexb("04 01 48 00 4c 00 00 00") + bytes(expected_sqe) + hexb("b3 a9 01 a7")


def test_golden_admin_connect_capsule() -> None:
    from nvmeof.wire.fabrics import CONNECT_COMMAND

    golden_sqe = hexb(
        "7f 40 00 00 01 00 00 00 00 00 00 00 00 00 00 00"
        "00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00"
        "00 04 00 00 00 00 00 01 00 00 00 00 1f 00 00 00"
        "88 13 00 00 00 00 00 00 00 00 00 00 00 00 00 00"
    )
    p = pair()
    cmd = CONNECT_COMMAND.build({"fctype": 1, "qid": 0, "sqsize": 31, "kato": 5000})
    p.host.send_command(cmd, write_data=bytes(1024), in_capsule_limit=8192)
    raw = join(p.host.data_to_send())
    assert raw[:8] == hexb("04 00 48 48 48 04 00 00")
    assert raw[8:72] == golden_sqe
    assert len(raw) == 72 + 1024


# -- fatal errors on the controller side: C2HTermReq ------------------------------------------


def assert_terminated_with(ctrl: ControllerConnection, err: TransportError) -> None:
    out = ctrl.data_to_send()
    assert len(out) == 1
    raw = bytes(out[-1])
    assert raw[0] == PduType.C2H_TERM_REQ
    fes, fei, echoed = term_req(raw)
    assert (fes, fei, echoed) == (err.fes, err.fei, err.header)
    assert ctrl.state is ConnState.TERMINATED
    # Further input is ignored, even a perfectly valid PDU.
    ctrl.receive_data(build_pdu(PduType.CAPSULE_CMD, sqe(0x18, 1)))
    assert ctrl.next_event() is None
    assert ctrl.data_to_send() == []
    with pytest.raises(LocalProtocolError):
        ctrl.send_response(1)


def controller_error(ctrl: ControllerConnection, raw: bytes) -> TransportError:
    ctrl.receive_data(raw)
    with pytest.raises(TransportError) as info:
        drain(ctrl)
    return info.value


@pytest.mark.parametrize(("hd", "dd"), DIGESTS)
def test_fatal_error_queues_c2h_term_req(hd: bool, dd: bool) -> None:
    p = pair(hd, dd)
    err = controller_error(p.ctrl, b"\x05" + bytes(23))
    assert (err.fes, err.fei) == (Fes.INVALID_PDU_HEADER_FIELD, 0)
    assert_terminated_with(p.ctrl, err)


def test_header_digest_error_term_req_echoes_header() -> None:
    p = pair(hd=True)
    err = controller_error(p.ctrl, build_pdu(4, sqe(0x18, 1), hd=True, corrupt_hdgst=True))
    assert err.fes == Fes.HEADER_DIGEST_ERROR and len(err.header) == 72
    assert_terminated_with(p.ctrl, err)


def test_pdu_before_icreq_is_a_sequence_error() -> None:
    ctrl = ControllerConnection()
    capsule = build_pdu(PduType.CAPSULE_CMD, sqe(0x18, 1))
    err = controller_error(ctrl, capsule)
    assert err.fes == Fes.PDU_SEQUENCE_ERROR
    assert err.header == capsule[:72]
    assert_terminated_with(ctrl, err)


def test_h2c_data_before_icreq_is_a_sequence_error() -> None:
    ctrl = ControllerConnection()
    err = controller_error(ctrl, build_pdu(PduType.H2C_DATA, data_psh(1, 0, 0, 4), b"abcd",
                                           flags=4))  # fmt: skip
    assert err.fes == Fes.PDU_SEQUENCE_ERROR
    assert_terminated_with(ctrl, err)


def test_second_icreq_is_a_sequence_error() -> None:
    p = pair()
    err = controller_error(p.ctrl, icreq())
    assert err.fes == Fes.PDU_SEQUENCE_ERROR
    assert_terminated_with(p.ctrl, err)


def test_icreq_with_digests_before_established_has_no_hdgst() -> None:
    # The ICReq itself never carries a digest, even when it asks for one.
    ctrl = ControllerConnection()
    ctrl.receive_data(icreq(digest_bits=3) + build_pdu(4, sqe(0x18, 1), hd=True))
    events = drain(ctrl)
    assert events[0] == ConnectionEstablished(True, True, 1)
    assert isinstance(events[1], CommandReceived)


def r2t_pair(hd: bool = False, dd: bool = False, length: int = 8192) -> tuple[ProtocolPair, int]:
    p = pair(hd, dd, max_h2c_data=4096)
    p.host.send_command(rw_sqe(0x01, 0x31, 1, 0, length // 512), write_data=pattern(length))
    p.h2c()
    p.ctrl.request_data(0x31, bytearray(length))
    r2t = p.transfer(p.ctrl)
    p.host.data_to_send()  # the host's own H2CData are replaced by hand-made ones
    return p, struct.unpack_from("<H", r2t, 10)[0]


def h2c_pdu(cid: int, ttag: int, offset: int, data: bytes, *, last: bool, dd: bool = False,
            datal: int | None = None) -> bytes:  # fmt: skip
    psh = data_psh(cid, ttag, offset, len(data) if datal is None else datal)
    return build_pdu(PduType.H2C_DATA, psh, data, flags=0x04 if last else 0, dd=dd)


@pytest.mark.parametrize(
    ("case", "fes", "fei"),
    [
        ("unknown-ttag", Fes.INVALID_PDU_HEADER_FIELD, 10),
        ("wrong-cid", Fes.INVALID_PDU_HEADER_FIELD, 10),
        ("gap", Fes.DATA_TRANSFER_OUT_OF_RANGE, 0),
        ("rewind", Fes.DATA_TRANSFER_OUT_OF_RANGE, 0),
        ("beyond-end", Fes.DATA_TRANSFER_OUT_OF_RANGE, 0),
        ("last-pdu-early", Fes.PDU_SEQUENCE_ERROR, 0),
        ("last-pdu-missing", Fes.PDU_SEQUENCE_ERROR, 0),
        ("datal-mismatch", Fes.INVALID_PDU_HEADER_FIELD, 16),
        ("no-r2t-at-all", Fes.INVALID_PDU_HEADER_FIELD, 10),
    ],
)
def test_bad_h2c_data(case: str, fes: int, fei: int) -> None:
    p, ttag = r2t_pair()
    chunk = pattern(4096)
    first = h2c_pdu(0x31, ttag, 0, chunk, last=False)
    bad = {
        "unknown-ttag": h2c_pdu(0x31, ttag + 1, 0, chunk, last=False),
        "wrong-cid": h2c_pdu(0x32, ttag, 0, chunk, last=False),
        "gap": first + h2c_pdu(0x31, ttag, 4100, chunk[:4092], last=True),
        "rewind": first + h2c_pdu(0x31, ttag, 0, chunk, last=True),
        "beyond-end": first + h2c_pdu(0x31, ttag, 4096, chunk + b"1234", last=True),
        "last-pdu-early": h2c_pdu(0x31, ttag, 0, chunk, last=True),
        "last-pdu-missing": first + h2c_pdu(0x31, ttag, 4096, chunk, last=False),
        "datal-mismatch": h2c_pdu(0x31, ttag, 0, chunk, last=False, datal=4000),
        "no-r2t-at-all": b"",
    }[case]
    if case == "no-r2t-at-all":
        p = pair()
        bad = h2c_pdu(0x31, 0, 0, chunk, last=True)
    err = controller_error(p.ctrl, bad)
    assert (err.fes, err.fei) == (fes, fei), str(err)
    assert err.header[:1] == b"\x06"
    assert_terminated_with(p.ctrl, err)


def test_h2c_data_after_response_cancelled_the_transfer() -> None:
    p, ttag = r2t_pair()
    p.ctrl.cancel_transfer(ttag)  # the target failed the command instead
    p.ctrl.send_response(0x31, 0x8100)
    assert p.ctrl.outstanding_transfers == 0
    err = controller_error(p.ctrl, h2c_pdu(0x31, ttag, 0, pattern(4096), last=False))
    assert (err.fes, err.fei) == (Fes.INVALID_PDU_HEADER_FIELD, 10)


def test_h2c_data_above_maxh2cdata_is_refused() -> None:
    # The framer's limit is the larger of MAXH2CDATA and the in-capsule limit, so the H2CData
    # handler must check MAXH2CDATA itself (docs/PROTOCOL.md §2.4; SPDK answers FES 0x05).
    p = ProtocolPair(max_h2c_data=4096, max_in_capsule=16384)
    p.establish()
    assert p.host.max_h2c_data == 4096
    p.host.send_command(rw_sqe(0x01, 1, 1, 0, 16), write_data=pattern(8192))
    p.h2c()
    p.ctrl.request_data(1, bytearray(8192))
    ttag = struct.unpack_from("<H", p.transfer(p.ctrl), 10)[0]
    p.host.data_to_send()
    err = controller_error(p.ctrl, h2c_pdu(1, ttag, 0, pattern(8192), last=True))
    assert err.fes == Fes.DATA_TRANSFER_LIMIT_EXCEEDED


def test_request_data_twice_for_a_cid_gets_a_second_ttag() -> None:
    # nvmet keys transfers by TTAG and never checks a CID for uniqueness.
    p, ttag = r2t_pair()
    assert p.ctrl.request_data(0x31, bytearray(10)) != ttag
    assert p.ctrl.outstanding_transfers == 2
    with pytest.raises(LocalProtocolError):
        p.ctrl.request_data(0x99, bytearray(0))


@pytest.mark.parametrize(("hd", "dd"), DIGESTS)
def test_data_digest_error_on_write(hd: bool, dd: bool) -> None:
    p, ttag = r2t_pair(hd, dd)
    stream = bytearray()
    for off, last in ((0, False), (4096, True)):
        psh = data_psh(0x31, ttag, off, 4096)
        stream += build_pdu(PduType.H2C_DATA, psh, pattern(8192)[off : off + 4096], hd=hd, dd=dd,
                            flags=0x04 if last else 0, corrupt_ddgst=off == 0)  # fmt: skip
    p.ctrl.receive_data(bytes(stream))
    # Not fatal: the transfer completes, flagged.
    assert drain(p.ctrl) == [DataReceived(0x31, not dd)]


def test_data_digest_error_on_in_capsule_data() -> None:
    p = pair(dd=True)
    raw = build_pdu(PduType.CAPSULE_CMD, rw_sqe(0x01, 1, 1, 0, 1), pattern(512), dd=True,
                    corrupt_ddgst=True)  # fmt: skip
    p.ctrl.receive_data(raw)
    (ev,) = drain(p.ctrl)
    assert isinstance(ev, CommandReceived)
    assert ev.data_digest_ok is False and ev.data == pattern(512)


def test_h2c_term_req_from_host_is_reported() -> None:
    p = pair()
    p.ctrl.receive_data(build_pdu(PduType.H2C_TERM_REQ, struct.pack("<HI10x", 2, 0), b"ab"))
    assert drain(p.ctrl) == [TermReqReceived(2, 0)]
    assert p.ctrl.state is ConnState.TERMINATED


# -- fatal errors on the host side -------------------------------------------------------------


def host_error(host: HostConnection, raw: bytes) -> TransportError:
    host.receive_data(raw)
    with pytest.raises(TransportError) as info:
        drain(host)
    assert host.state is HostState.TERMINATED
    out = host.data_to_send()
    assert bytes(out[-1])[0] == PduType.H2C_TERM_REQ
    assert term_req(bytes(out[-1])) == (info.value.fes, info.value.fei, info.value.header)
    return info.value


def c2h_pdu(cid: int, offset: int, data: bytes, flags: int = 0x04, *, datal: int | None = None,
            hd: bool = False, dd: bool = False, corrupt_ddgst: bool = False) -> bytes:  # fmt: skip
    psh = data_psh(cid, 0, offset, len(data) if datal is None else datal)
    return build_pdu(PduType.C2H_DATA, psh, data, flags=flags, hd=hd, dd=dd,
                     corrupt_ddgst=corrupt_ddgst)  # fmt: skip


def host_with(**commands: tuple[str, int]) -> HostConnection:
    """An established host with commands outstanding: name=cid -> ("read"|"write"|"none", n)."""
    host = HostConnection()
    host.initiate()
    host.receive_data(icresp(maxh2cdata=4096))
    assert isinstance(host.next_event(), ConnectionEstablished)
    for name, (kind, size) in commands.items():
        cid = int(name[1:])
        if kind == "read":
            host.send_command(rw_sqe(0x02, cid, 1, 0, 1), read_buffer=bytearray(size))
        elif kind == "write":
            host.send_command(rw_sqe(0x01, cid, 1, 0, 1), write_data=pattern(size))
        else:
            host.send_command(sqe(0x18, cid))
    host.data_to_send()
    return host


@pytest.mark.parametrize(
    ("case", "fes", "fei"),
    [
        ("resp-unknown-cid", Fes.INVALID_PDU_HEADER_FIELD, 8),
        ("resp-twice", Fes.INVALID_PDU_HEADER_FIELD, 8),
        ("c2h-unknown-cid", Fes.INVALID_PDU_HEADER_FIELD, 8),
        ("c2h-beyond-buffer", Fes.DATA_TRANSFER_OUT_OF_RANGE, 0),
        ("c2h-offset-gap", Fes.DATA_TRANSFER_OUT_OF_RANGE, 0),
        ("c2h-datal-mismatch", Fes.DATA_TRANSFER_OUT_OF_RANGE, 0),
        ("c2h-for-write", Fes.PDU_SEQUENCE_ERROR, 0),
        ("c2h-for-no-data", Fes.PDU_SEQUENCE_ERROR, 0),
        ("success-without-last", Fes.INVALID_PDU_HEADER_FIELD, 1),
        ("short-successful-read", Fes.PDU_SEQUENCE_ERROR, 0),
        ("r2t-beyond-length", Fes.DATA_TRANSFER_OUT_OF_RANGE, 0),
        ("r2t-zero-length", Fes.DATA_TRANSFER_OUT_OF_RANGE, 0),
        ("r2t-rewind", Fes.DATA_TRANSFER_OUT_OF_RANGE, 0),
        ("r2t-for-read", Fes.PDU_SEQUENCE_ERROR, 0),
        ("r2t-unknown-cid", Fes.INVALID_PDU_HEADER_FIELD, 8),
        ("second-icresp", Fes.PDU_SEQUENCE_ERROR, 0),
    ],
)
def test_host_fatal_errors(case: str, fes: int, fei: int) -> None:
    host = host_with(c1=("read", 4096), c2=("write", 8192), c3=("none", 0))

    def r2t(cid: int, offset: int, length: int) -> bytes:
        return build_pdu(PduType.R2T, data_psh(cid, 5, offset, length))

    raw = {
        "resp-unknown-cid": build_pdu(PduType.CAPSULE_RESP, cqe_psh(9)),
        "resp-twice": build_pdu(PduType.CAPSULE_RESP, cqe_psh(3)) * 2,
        "c2h-unknown-cid": c2h_pdu(9, 0, pattern(16)),
        "c2h-beyond-buffer": c2h_pdu(1, 0, pattern(4100)),
        "c2h-offset-gap": c2h_pdu(1, 8, pattern(16)),
        "c2h-datal-mismatch": c2h_pdu(1, 0, pattern(16), datal=20),
        "c2h-for-write": c2h_pdu(2, 0, pattern(16)),
        "c2h-for-no-data": c2h_pdu(3, 0, pattern(16)),
        "success-without-last": c2h_pdu(1, 0, pattern(4096), flags=0x08),
        "short-successful-read": c2h_pdu(1, 0, pattern(1024), flags=0x0C),
        "r2t-beyond-length": r2t(2, 4096, 8192),
        "r2t-zero-length": r2t(2, 0, 0),
        "r2t-rewind": r2t(2, 0, 4096) + r2t(2, 0, 4096),
        "r2t-for-read": r2t(1, 0, 4096),
        "r2t-unknown-cid": r2t(9, 0, 4096),
        "second-icresp": icresp(),
    }[case]
    err = host_error(host, raw)
    assert (err.fes, err.fei) == (fes, fei), str(err)
    host.receive_data(build_pdu(PduType.CAPSULE_RESP, cqe_psh(1)))
    assert host.next_event() is None  # terminated: input ignored


def test_pdu_before_icresp_is_a_sequence_error() -> None:
    host = HostConnection()
    host.initiate()
    host.data_to_send()
    err = host_error(host, build_pdu(PduType.CAPSULE_RESP, cqe_psh(1)))
    assert err.fes == Fes.PDU_SEQUENCE_ERROR


def test_short_successful_read_with_capsule_resp_is_fatal() -> None:
    # docs/PROTOCOL.md §2.5: a successful read must deliver all its data,
    # whether it completes by SUCCESS flag or by CapsuleResp.
    host = host_with(c1=("read", 4096))
    err = host_error(host, c2h_pdu(1, 0, pattern(1024)) + build_pdu(5, cqe_psh(1)))
    assert err.fes == Fes.PDU_SEQUENCE_ERROR
    host = host_with(c1=("read", 4096))  # no data at all
    err = host_error(host, build_pdu(5, cqe_psh(1)))
    assert err.fes == Fes.PDU_SEQUENCE_ERROR


def test_failed_read_may_carry_no_data() -> None:
    host = host_with(c1=("read", 4096))
    host.receive_data(build_pdu(PduType.CAPSULE_RESP, cqe_psh(1, 0x8100)))
    assert drain(host) == [ResponseReceived(1, 0x8100, 0, 0, 0, 0)]


def test_r2t_in_two_bursts_is_served() -> None:
    host = host_with(c2=("write", 8192))
    for offset in (0, 4096):
        host.receive_data(build_pdu(PduType.R2T, data_psh(2, 5, offset, 4096)))
        assert drain(host) == []
        (pdu,) = split_pdus(join(host.data_to_send()))
        assert struct.unpack_from("<HHII", pdu, 8) == (2, 5, offset, 4096)
        assert pdu[1] & 0x04
        assert pdu[24:] == pattern(8192)[offset : offset + 4096]


def test_c2h_term_req_is_reported_to_the_host() -> None:
    host = host_with(c1=("read", 4096))
    host.receive_data(build_pdu(PduType.C2H_TERM_REQ, struct.pack("<HI10x", 1, 3), b"abc"))
    assert drain(host) == [TermReqReceived(1, 3)]
    assert host.state is HostState.TERMINATED


@pytest.mark.parametrize("success", [False, True], ids=["capsule-resp", "success-flag"])
@pytest.mark.parametrize("hd", [False, True], ids=["no-hdgst", "hdgst"])
def test_data_digest_failure_on_read_completes_with_data_transfer_error(
    hd: bool, success: bool
) -> None:
    p = pair(hd, True, max_c2h_data=2048)
    buf = bytearray(4096)
    p.host.send_command(rw_sqe(0x02, 6, 1, 0, 8), read_buffer=buf)
    p.h2c()
    p.ctrl.send_data(6, pattern(4096), success=success)
    if not success:
        p.ctrl.send_response(6, dw0=1)
    wire = bytearray(join(p.ctrl.data_to_send()))
    first = split_pdus(bytes(wire))[0]
    pdo = first[3]
    wire[pdo + 100] ^= 0xFF  # corrupt one data byte of the first C2HData
    p.host.receive_data(bytes(wire))
    (ev,) = drain(p.host)
    assert isinstance(ev, ResponseReceived)
    assert ev.cid == 6 and ev.status == DATA_XFER_ERROR
    assert p.host.state is HostState.ESTABLISHED  # not fatal
    # The connection carries on.
    p.host.send_command(sqe(0x18, 7))
    p.h2c()
    p.ctrl.send_response(7)
    assert p.c2h() == [ResponseReceived(7, 0, 0, 0, 0, 0)]


def test_error_status_is_not_overwritten_by_digest_failure() -> None:
    p = pair(dd=True)
    buf = bytearray(512)
    p.host.send_command(rw_sqe(0x02, 6, 1, 0, 1), read_buffer=buf)
    p.h2c()
    p.ctrl.send_data(6, pattern(512), success=False)
    p.ctrl.send_response(6, 0x8100)
    wire = bytearray(join(p.ctrl.data_to_send()))
    wire[30] ^= 1
    p.host.receive_data(bytes(wire))
    assert drain(p.host) == [ResponseReceived(6, 0x8100, 0, 0, 0, 0)]


def test_host_rejects_oversized_c2h_data_per_its_limit() -> None:
    p = ProtocolPair(host_max_c2h_data=4096, max_c2h_data=8192)
    p.establish()
    p.host.send_command(rw_sqe(0x02, 1, 1, 0, 16), read_buffer=bytearray(8192))
    p.h2c()
    p.ctrl.send_data(1, pattern(8192), success=True)
    p.transfer(p.ctrl)
    with pytest.raises(TransportError) as info:
        drain(p.host)
    assert info.value.fes == Fes.DATA_TRANSFER_LIMIT_EXCEEDED


def test_send_command_rejects_duplicate_cid_and_bad_sqe() -> None:
    p = pair()
    p.host.send_command(sqe(0x18, 1))
    with pytest.raises(LocalProtocolError):
        p.host.send_command(sqe(0x18, 1))
    with pytest.raises(ValueError, match="64"):
        p.host.send_command(bytes(63))


def test_controller_output_requires_established() -> None:
    ctrl = ControllerConnection()
    with pytest.raises(LocalProtocolError):
        ctrl.send_response(1)
    with pytest.raises(LocalProtocolError):
        ctrl.send_data(1, b"abcd", success=False)
    with pytest.raises(LocalProtocolError):
        ctrl.request_data(1, bytearray(4))


def test_controller_rejects_bad_maxh2cdata() -> None:
    for bad in (0, 4092, 4098):
        with pytest.raises(ValueError, match="MAXH2CDATA"):
            ControllerConnection(max_h2c_data=bad)
