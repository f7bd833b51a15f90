"""PduReader: framing of NVMe/TCP byte streams (docs/PROTOCOL.md §1.1-1.7, worked examples §10)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from nvmeof.constants import FatalErrorStatus as Fes, PduType
from nvmeof.errors import TransportError
from nvmeof.tcp.framing import CONTROLLER_RECEIVES, HOST_RECEIVES, INITIAL_BUFFER, Pdu, PduReader
from tests.pairs import build_pdu, cqe_psh, data_psh, digest, sqe

Snapshot = tuple[int, int, int, bytes, bytes, bool]


def hexb(text: str) -> bytes:
    return bytes.fromhex(text.replace("|", " "))


def snap(pdu: Pdu) -> Snapshot:
    """A copy of everything a Pdu exposes (its views die at the next feed)."""
    return (pdu.type, pdu.flags, pdu.plen, bytes(pdu.header), bytes(pdu.data), pdu.data_digest_ok)


def reader(
    receives: frozenset[PduType] = CONTROLLER_RECEIVES,
    *,
    hd: bool = False,
    dd: bool = False,
    max_data: int = 8192,
) -> PduReader:
    r = PduReader(receives, max_data)
    r.header_digest = hd
    r.data_digest = dd
    return r


def drain(r: PduReader) -> list[Snapshot]:
    out = []
    while (pdu := r.next_pdu()) is not None:
        out.append(snap(pdu))
    return out


def feed_whole(r: PduReader, data: bytes) -> list[Snapshot]:
    r.feed(data)
    return drain(r)


def feed_bytewise(r: PduReader, data: bytes) -> list[Snapshot]:
    out = []
    for i in range(len(data)):
        r.feed(data[i : i + 1])
        out.extend(drain(r))
    return out


def feed_odd_chunks(r: PduReader, data: bytes) -> list[Snapshot]:
    out = []
    pos, size = 0, 1
    while pos < len(data):
        r.feed(data[pos : pos + size])
        out.extend(drain(r))
        pos += size
        size = size * 3 % 97 + 1
    return out


def feed_recv_into(r: PduReader, data: bytes, chunk: int = 1000) -> list[Snapshot]:
    """The zero-copy path: ``get_buffer`` + ``commit``, as a ``recv_into`` loop would."""
    out = []
    pos = 0
    while pos < len(data):
        space = r.get_buffer()
        n = min(len(space), chunk, len(data) - pos)
        space[:n] = data[pos : pos + n]
        r.commit(n)
        out.extend(drain(r))
        pos += n
    return out


FEEDERS: dict[str, Callable[[PduReader, bytes], list[Snapshot]]] = {
    "whole": feed_whole,
    "bytewise": feed_bytewise,
    "odd-chunks": feed_odd_chunks,
    "recv-into": feed_recv_into,
}


def tr(
    make: Callable[[], PduReader], data: bytes, expected: list[Snapshot], partial: bytes = b""
) -> None:
    """h11-style: ``data`` frames to ``expected`` whichever way it is fed; a trailing partial
    PDU stays buffered."""
    for name, feeder in FEEDERS.items():
        r = make()
        got = feeder(r, data + partial)
        assert got == expected, name
        assert r.buffered == len(partial), name
        assert r.next_pdu() is None


# -- PDUs used below ------------------------------------------------------------------------

KEEP_ALIVE_SQE = sqe(0x18, 1, raw={39: 0x5A})
CONNECT_SQE = hexb(
    "7f 40 00 00 01 00 00 00 00 00 00 00 00 00 00 00"
    "00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00"
    "00 04 00 00 00 00 00 01 00 00 00 00 1f 00 00 00"
    "88 13 00 00 00 00 00 00 00 00 00 00 00 00 00 00"
)


def capsule(sqe_bytes: bytes = KEEP_ALIVE_SQE, data: bytes = b"", **kw: object) -> bytes:
    return build_pdu(PduType.CAPSULE_CMD, sqe_bytes, data, **kw)  # type: ignore[arg-type]


def h2c(cid: int, ttag: int, offset: int, data: bytes, *, last: bool = True, **kw: object) -> bytes:
    return build_pdu(PduType.H2C_DATA, data_psh(cid, ttag, offset, len(data)), data,
                     flags=0x04 if last else 0, **kw)  # type: ignore[arg-type]  # fmt: skip


def resp(cid: int, **kw: object) -> bytes:
    return build_pdu(PduType.CAPSULE_RESP, cqe_psh(cid), **kw)  # type: ignore[arg-type]


# -- framing whichever way the bytes arrive --------------------------------------------------


@pytest.mark.parametrize(("hd", "dd"), [(False, False), (True, False), (False, True), (True, True)])
def test_stream_frames_identically_however_it_is_fed(hd: bool, dd: bool) -> None:
    payload = bytes(range(256)) * 3
    pdus = [
        capsule(hd=hd, dd=dd),
        capsule(sqe(0x01, 2, nsid=1), payload, hd=hd, dd=dd),
        h2c(3, 0, 0, payload[:100], hd=hd, dd=dd, last=False),
        h2c(3, 0, 100, payload[100:], hd=hd, dd=dd),
        build_pdu(PduType.H2C_TERM_REQ, bytes(16), b"\x04\x00\x48\x00"),
    ]
    stream = b"".join(pdus)

    def make() -> PduReader:
        return reader(hd=hd, dd=dd)

    whole = feed_whole(make(), stream)
    assert [p[0] for p in whole] == [4, 4, 6, 6, 2]
    assert [p[2] for p in whole] == [len(p) for p in pdus]
    assert whole[1][4] == payload and whole[2][4] + whole[3][4] == payload
    assert all(p[5] for p in whole)
    assert whole[0][4] == b""  # no in-capsule data
    assert whole[4][4] == b"\x04\x00\x48\x00"  # TermReq error data
    tr(make, stream, whole)
    # Several PDUs in one chunk followed by a trailing partial PDU: the partial one waits.
    for cut in (1, 7, 8, 9, 72, len(pdus[1]) - 1):
        tr(make, stream, whole, partial=pdus[1][:cut])


def test_partial_pdu_completes_later() -> None:
    r = reader()
    pdu = capsule(sqe(0x01, 9), b"x" * 100)
    r.feed(pdu[:80])
    assert r.next_pdu() is None
    assert r.buffered == 80
    r.feed(pdu[80:])
    (got,) = drain(r)
    assert got[4] == b"x" * 100
    assert r.buffered == 0


def test_recv_into_and_feed_agree_on_every_chunk_size() -> None:
    stream = b"".join(
        [capsule(), capsule(sqe(0x01, 2), b"abcd" * 300), h2c(1, 2, 0, b"\x01" * 4000)]
    )
    expected = feed_whole(reader(), stream)
    for chunk in (1, 3, 8, 71, 72, 73, 500, 4096, len(stream)):
        assert feed_recv_into(reader(), stream, chunk) == expected


def test_commit_beyond_buffer_is_refused() -> None:
    r = reader()
    space = r.get_buffer()
    with pytest.raises(ValueError, match="beyond"):
        r.commit(len(space) + 1)
    with pytest.raises(ValueError, match="beyond"):
        r.commit(-1)


# -- docs/PROTOCOL.md §10 worked examples ----------------------------------------------------------


def test_worked_example_icreq() -> None:
    raw = hexb("00 00 80 00 80 00 00 00 | 00 00 00 00 00 00 00 00") + bytes(112)
    (p,) = feed_whole(reader(), raw)
    assert p[:3] == (PduType.ICREQ, 0, 128)
    assert p[3] == raw and p[4] == b""
    raw_dg = bytearray(raw)
    raw_dg[11] = 0x03
    (p,) = feed_whole(reader(), bytes(raw_dg))
    assert p[3][11] == 0x03


def test_worked_example_icresp() -> None:
    raw = hexb("01 00 80 00 80 00 00 00 | 00 00 00 00 00 00 40 00") + bytes(112)
    (p,) = feed_whole(reader(HOST_RECEIVES), raw)
    assert p[:3] == (PduType.ICRESP, 0, 128)
    assert int.from_bytes(p[3][12:16], "little") == 0x400000


def test_worked_example_keep_alive_with_header_digest() -> None:
    raw = hexb("04 01 48 00 4c 00 00 00") + KEEP_ALIVE_SQE + hexb("b3 a9 01 a7")
    assert digest(raw[:72]) == hexb("b3 a9 01 a7")  # the sheet's 0xA701A9B3
    assert raw == capsule(hd=True)
    (p,) = feed_whole(reader(hd=True), raw)
    assert p[:3] == (PduType.CAPSULE_CMD, 0x01, 76)
    assert p[3] == raw[:72] and p[4] == b""
    assert p[3][8] == 0x18 and p[3][10:12] == b"\x01\x00" and p[3][8 + 39] == 0x5A


def test_worked_example_admin_connect_capsule() -> None:
    data = bytes(range(256)) * 4
    raw = hexb("04 00 48 48 48 04 00 00") + CONNECT_SQE + data
    assert raw == capsule(CONNECT_SQE, data)
    (p,) = feed_whole(reader(), raw)
    assert p[:3] == (PduType.CAPSULE_CMD, 0, 0x448)
    assert p[3][8:] == CONNECT_SQE and p[4] == data


def test_worked_example_capsule_resp() -> None:
    plain = hexb("05 00 18 00 18 00 00 00 | 00 00 00 00 00 00 00 00 05 00 00 00 01 00 00 00")
    assert plain == build_pdu(PduType.CAPSULE_RESP, cqe_psh(1, sqhd=5))
    (p,) = feed_whole(reader(HOST_RECEIVES), plain)
    assert p[:3] == (PduType.CAPSULE_RESP, 0, 24) and p[3] == plain
    digested = hexb("05 01 18 00 1c 00 00 00") + plain[8:] + hexb("69 47 67 3c")
    (p,) = feed_whole(reader(HOST_RECEIVES, hd=True), digested)
    assert p[:3] == (PduType.CAPSULE_RESP, 0x01, 28)
    assert p[3][8:] == plain[8:]


def test_worked_example_r2t() -> None:
    raw = hexb("09 00 18 00 18 00 00 00 03 10 07 00 00 00 00 00 00 20 00 00 00 00 00 00")
    (p,) = feed_whole(reader(HOST_RECEIVES), raw)
    assert p[:3] == (PduType.R2T, 0, 24)
    assert p[3][8:10] == b"\x03\x10" and p[3][10:12] == b"\x07\x00"
    assert int.from_bytes(p[3][16:20], "little") == 8192


def test_worked_example_h2c_data() -> None:
    header = hexb("06 04 18 18 18 20 00 00 03 10 07 00 00 00 00 00 00 20 00 00 00 00 00 00")
    data = bytes(i & 0xFF for i in range(8192))
    (p,) = feed_whole(reader(), header + data)
    assert p[:3] == (PduType.H2C_DATA, 0x04, 0x2018)
    assert p[3] == header and p[4] == data and p[5]


def test_worked_example_c2h_data_with_data_digest() -> None:
    header = hexb("07 04 18 18 18 10 00 00 05 20 00 00 00 00 00 00 00 10 00 00 00 00 00 00")
    r = reader(HOST_RECEIVES, max_data=4096)
    (p,) = feed_whole(r, header + bytes(4096))
    assert p[:3] == (PduType.C2H_DATA, 0x04, 0x1018) and p[4] == bytes(4096)
    # The same PDU with data digest: DDGSTF, PLEN + 4 and the sheet's trailer.
    digested = hexb("07 06 18 18 1c 10 00 00") + header[8:] + bytes(4096) + hexb("89 41 f9 98")
    (p,) = feed_whole(reader(HOST_RECEIVES, dd=True, max_data=4096), digested)
    assert p[:3] == (PduType.C2H_DATA, 0x06, 0x101C)
    assert p[4] == bytes(4096) and p[5] is True


# -- framing violations: FES and FEI ----------------------------------------------------------

ICREQ_OK = hexb("00 00 80 00 80 00 00 00") + bytes(120)


def frame_all(r: PduReader, raw: bytes, *, bytewise: bool = False) -> None:
    for chunk in [raw[i : i + 1] for i in range(len(raw))] if bytewise else [raw]:
        r.feed(chunk)
        while r.next_pdu() is not None:
            pass


def raises(r: PduReader, raw: bytes, *, bytewise: bool = False) -> TransportError:
    with pytest.raises(TransportError) as info:
        frame_all(r, raw, bytewise=bytewise)
    return info.value


def _with(raw: bytes, offset: int, value: int) -> bytes:
    buf = bytearray(raw)
    buf[offset] = value
    return bytes(buf)


VIOLATIONS = [
    # (id, receives, hd, dd, raw, FES, FEI)
    ("reserved-type-08", CONTROLLER_RECEIVES, False, False, _with(ICREQ_OK, 0, 0x08), 1, 0),
    ("unknown-type-ff", CONTROLLER_RECEIVES, False, False, b"\xff" * 64, 1, 0),
    ("c2h-type-at-controller", CONTROLLER_RECEIVES, False, False, resp(1), 1, 0),
    ("icresp-at-controller", CONTROLLER_RECEIVES, False, False, _with(ICREQ_OK, 0, 1), 1, 0),
    ("capsule-at-host", HOST_RECEIVES, False, False, capsule(), 1, 0),
    ("h2cdata-at-host", HOST_RECEIVES, False, False, h2c(1, 0, 0, b"abcd"), 1, 0),
    ("capsule-hlen-24", CONTROLLER_RECEIVES, False, False, capsule(hlen=24), 1, 2),
    ("icreq-hlen-72", CONTROLLER_RECEIVES, False, False, _with(ICREQ_OK, 2, 72), 1, 2),
    ("resp-hlen-28", HOST_RECEIVES, False, False, resp(1, hlen=28), 1, 2),
    ("hdgstf-not-negotiated", CONTROLLER_RECEIVES, False, False, capsule(hd=True), 1, 1),
    ("hdgstf-missing", CONTROLLER_RECEIVES, True, False, capsule(), 1, 1),
    ("hdgstf-on-icreq", CONTROLLER_RECEIVES, True, False, _with(ICREQ_OK, 1, 1), 1, 1),
    ("hdgstf-on-resp-at-host", HOST_RECEIVES, False, False, resp(1, hd=True), 1, 1),
    ("ddgstf-not-negotiated", CONTROLLER_RECEIVES, False, False,
     h2c(1, 0, 0, b"abcd", dd=True), 1, 1),
    ("ddgstf-missing", CONTROLLER_RECEIVES, False, True, h2c(1, 0, 0, b"abcd"), 1, 1),
    ("ddgstf-on-r2t", HOST_RECEIVES, False, False,
     build_pdu(PduType.R2T, data_psh(1, 0, 0, 8), flags=0x02), 1, 1),
    ("pdo-inside-header", CONTROLLER_RECEIVES, False, False,
     capsule(data=b"abcd", pdo=68), 1, 3),
    ("pdo-inside-hdgst", CONTROLLER_RECEIVES, True, False,
     capsule(data=b"abcd", hd=True, pdo=72), 1, 3),
    ("pdo-at-plen", CONTROLLER_RECEIVES, False, False, capsule(data=b"abcd", pdo=76), 1, 3),
    ("pdo-beyond-plen", CONTROLLER_RECEIVES, False, False, capsule(data=b"abcd", pdo=200), 1, 3),
    ("pdo-misaligned", CONTROLLER_RECEIVES, False, False,
     capsule(data=b"abcdef", pad=2, pdo=74), 1, 3),
    ("pdo-zero-with-data", HOST_RECEIVES, False, False,
     build_pdu(PduType.C2H_DATA, data_psh(1, 0, 0, 4), b"abcd", pdo=0), 1, 3),
    ("pdo-on-resp", HOST_RECEIVES, False, False, resp(1, pdo=24), 1, 3),
    ("pdo-on-dataless-capsule", CONTROLLER_RECEIVES, False, False, capsule(pdo=72), 1, 3),
    ("resp-plen-28", HOST_RECEIVES, False, False, resp(1, plen=28), 1, 4),
    ("resp-plen-20", HOST_RECEIVES, False, False, resp(1, plen=20), 1, 4),
    ("r2t-plen-32", HOST_RECEIVES, False, False,
     build_pdu(PduType.R2T, data_psh(1, 0, 0, 8), plen=32), 1, 4),
    ("icreq-plen-132", CONTROLLER_RECEIVES, False, False, _with(ICREQ_OK, 4, 132), 1, 4),
    ("icreq-plen-0", CONTROLLER_RECEIVES, False, False, _with(ICREQ_OK, 4, 0), 1, 4),
    ("h2cdata-without-data", CONTROLLER_RECEIVES, False, False,
     build_pdu(PduType.H2C_DATA, data_psh(1, 0, 0, 0)), 1, 4),
    ("c2hdata-without-data", HOST_RECEIVES, True, False,
     build_pdu(PduType.C2H_DATA, data_psh(1, 0, 0, 0), hd=True), 1, 4),
    ("termreq-plen-23", CONTROLLER_RECEIVES, False, False,
     build_pdu(PduType.H2C_TERM_REQ, bytes(16), plen=23), 1, 4),
    ("termreq-plen-153", CONTROLLER_RECEIVES, False, False,
     build_pdu(PduType.H2C_TERM_REQ, bytes(16), bytes(129)), 1, 4),
    ("c2htermreq-plen-153", HOST_RECEIVES, False, False,
     build_pdu(PduType.C2H_TERM_REQ, bytes(16), bytes(129)), 1, 4),
    ("termreq-hlen-28", HOST_RECEIVES, False, False,
     build_pdu(PduType.C2H_TERM_REQ, bytes(20)), 1, 2),
    ("data-beyond-max", CONTROLLER_RECEIVES, False, False,
     h2c(1, 0, 0, bytes(8193)), Fes.DATA_TRANSFER_LIMIT_EXCEEDED, 4),
    ("icd-beyond-max", CONTROLLER_RECEIVES, True, True,
     capsule(data=bytes(8196), hd=True, dd=True), Fes.DATA_TRANSFER_LIMIT_EXCEEDED, 4),
    ("c2hdata-beyond-max", HOST_RECEIVES, False, False,
     build_pdu(PduType.C2H_DATA, data_psh(1, 0, 0, 8200), bytes(8200)),
     Fes.DATA_TRANSFER_LIMIT_EXCEEDED, 4),
    ("huge-plen", CONTROLLER_RECEIVES, False, False,
     build_pdu(PduType.H2C_DATA, data_psh(1, 0, 0, 4), b"abcd", plen=0xFFFFFFFF),
     Fes.DATA_TRANSFER_LIMIT_EXCEEDED, 4),
    ("bad-header-digest-capsule", CONTROLLER_RECEIVES, True, False,
     capsule(hd=True, corrupt_hdgst=True), Fes.HEADER_DIGEST_ERROR, 0),
    ("bad-header-digest-h2cdata", CONTROLLER_RECEIVES, True, True,
     h2c(1, 0, 0, b"abcd", hd=True, dd=True, corrupt_hdgst=True), Fes.HEADER_DIGEST_ERROR, 0),
    ("bad-header-digest-resp", HOST_RECEIVES, True, False,
     resp(1, hd=True, corrupt_hdgst=True), Fes.HEADER_DIGEST_ERROR, 0),
]  # fmt: skip


@pytest.mark.parametrize(
    ("receives", "hd", "dd", "raw", "fes", "fei"),
    [pytest.param(*v[1:], id=v[0]) for v in VIOLATIONS],
)
def test_violation_raises_with_fes_and_fei(
    receives: frozenset[PduType], hd: bool, dd: bool, raw: bytes, fes: int, fei: int
) -> None:
    err = raises(reader(receives, hd=hd, dd=dd), raw)
    assert (err.fes, err.fei) == (fes, fei), str(err)
    # The echoed header starts with the offending PDU's common header.
    assert err.header and raw.startswith(err.header[:8])
    assert len(err.header) <= 128
    # Fed one byte at a time the same error surfaces, at the same PDU.
    err = raises(reader(receives, hd=hd, dd=dd), raw, bytewise=True)
    assert (err.fes, err.fei) == (fes, fei)


def test_violation_after_valid_pdus_is_reported_after_them() -> None:
    r = reader()
    good = capsule() + h2c(1, 0, 0, b"abcd")
    r.feed(good + resp(5))
    assert [p.type for p in (r.next_pdu(), r.next_pdu())] == [4, 6]  # type: ignore[union-attr]
    with pytest.raises(TransportError) as info:
        r.next_pdu()
    assert (info.value.fes, info.value.fei) == (1, 0)
    assert info.value.header == resp(5)  # the whole offending header (hlen 24) is echoed


def test_header_digest_error_echoes_the_whole_header() -> None:
    raw = capsule(hd=True, corrupt_hdgst=True)
    err = raises(reader(hd=True), raw)
    assert err.fes == Fes.HEADER_DIGEST_ERROR
    assert err.header == raw[:72]


def test_header_digest_is_over_header_only_not_padding() -> None:
    # Padding between HDGST and data (CPDA > 0) is not covered by the header digest.
    raw = capsule(data=b"abcdefgh", hd=True, pad=4)
    (p,) = feed_whole(reader(hd=True), raw)
    assert p[4] == b"abcdefgh"


def test_termreq_plen_bounds_accepted() -> None:
    for n in (0, 1, 128):
        raw = build_pdu(PduType.C2H_TERM_REQ, bytes(16), b"\x05" * n)
        (p,) = feed_whole(reader(HOST_RECEIVES), raw)
        assert p[2] == 24 + n and p[4] == b"\x05" * n


@pytest.mark.parametrize("where", ["capsule", "h2cdata", "c2hdata"])
def test_bad_data_digest_is_not_fatal(where: str) -> None:
    data = bytes(range(200))
    if where == "capsule":
        r, good = reader(dd=True), capsule(sqe(0x01, 7), data, dd=True)
        bad = capsule(sqe(0x01, 7), data, dd=True, corrupt_ddgst=True)
    elif where == "h2cdata":
        r, good = reader(hd=True, dd=True), h2c(1, 0, 0, data, hd=True, dd=True)
        bad = h2c(1, 0, 0, data, hd=True, dd=True, corrupt_ddgst=True)
    else:
        r = reader(HOST_RECEIVES, dd=True)
        good = build_pdu(PduType.C2H_DATA, data_psh(1, 0, 0, 200), data, dd=True, flags=0x04)
        bad = build_pdu(PduType.C2H_DATA, data_psh(1, 0, 0, 200), data, dd=True, flags=0x04,
                        corrupt_ddgst=True)  # fmt: skip
    got = feed_whole(r, bad + good)
    assert [p[5] for p in got] == [False, True]
    assert got[0][4] == got[1][4] == data
    # A flipped data byte (rather than digest byte) is caught the same way.
    flipped = bytearray(good)
    flipped[-10] ^= 0x40
    r2 = reader(r.receives, hd=r.header_digest, dd=True)
    (p,) = feed_whole(r2, bytes(flipped))
    assert p[5] is False


def test_large_max_data_frames_big_pdus() -> None:
    data = bytes(131072)
    raw = h2c(1, 0, 0, data)
    (p,) = feed_whole(reader(max_data=131072), raw)
    assert len(p[4]) == 131072


def test_valid_stream_in_256k_chunks_is_framed() -> None:
    # Regression: feed() used to fail with "receive buffer full" once a chunk plus a buffered
    # partial PDU exceeded the fixed buffer. A host streaming a 1 MiB write sends eight
    # full-size H2CData PDUs (MAXH2CDATA 128 KiB); fed in 256 KiB chunks they all frame.
    data = bytes(131072)
    stream = b"".join(h2c(1, 0, i * 131072, data, last=i == 7) for i in range(8))
    r = reader(max_data=131072)
    got = []
    for pos in range(0, len(stream), 256 * 1024):
        r.feed(stream[pos : pos + 256 * 1024])
        got.extend(drain(r))
    assert len(got) == 8


def test_buffer_starts_small_and_grows_only_for_large_pdus() -> None:
    # A host queue accepts C2HData of up to 1 MiB; allocating (and zeroing) room for two of
    # those up front cost every queue 2 MiB of RSS at every (re)connect.
    c2h = PduType.C2H_DATA
    r = reader(HOST_RECEIVES, max_data=1 << 20)
    assert len(r.get_buffer()) == INITIAL_BUFFER
    small = b"".join(build_pdu(c2h, data_psh(i, 0, 0, 4096), bytes([i]) * 4096)  # type: ignore[arg-type]
                     for i in range(200))  # fmt: skip
    assert len(feed_recv_into(r, small, chunk=65536)) == 200
    assert len(r.get_buffer()) == INITIAL_BUFFER  # 4 KiB reads never grew it
    big = bytes(range(256)) * 4096  # 1 MiB, framed through recv_into as it arrives
    raw = build_pdu(c2h, data_psh(1, 0, 0, len(big)), big)  # type: ignore[arg-type]
    before = r.get_buffer()
    (p,) = feed_recv_into(r, raw + small[:100], chunk=65536)
    assert p[4] == big
    assert r.buffered == 100  # the next PDU's start waits, copied into the larger buffer
    assert INITIAL_BUFFER < len(r.get_buffer()) + r.buffered <= 2 * ((1 << 20) + 256)
    assert before.obj is not r.get_buffer().obj  # a new buffer; the old view stays valid
    assert len(feed_recv_into(r, small[100:], chunk=65536)) == 200
