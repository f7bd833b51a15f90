"""nvmeof.pcapng: golden bytes of the pcapng blocks and synthesized headers, and the TCP
sequence space of any chunking (draft-ietf-opsawg-pcapng 4.1-4.3; RFC 791, 9293, 8200)."""

from __future__ import annotations

from hypothesis import given, settings, strategies as st

from nvmeof.pcapng import (
    MAX_SEGMENT,
    TCP_ACK,
    TCP_FIN,
    TCP_PSH,
    TCP_RST,
    TCP_SYN,
    Endpoint,
    FlowRecorder,
    TcpFlow,
    enhanced_packet_block,
    interface_description_block,
    internet_checksum,
    ipv4_header,
    section_header_block,
)
from tests.pcapng_reader import ones_complement_sum_ok, parse_frame, read_pcapng, stream_bytes

HOST = Endpoint("127.0.0.1", 41234)
TARGET = Endpoint("127.0.0.1", 4420)
CLIENT_ISN, SERVER_ISN = 0x1000_0000, 0x2000_0000


def h(text: str) -> bytes:
    return bytes.fromhex("".join(text.split()))


# -- pcapng blocks ------------------------------------------------------------------------------


def test_section_header_block_golden():
    assert section_header_block() == h(
        "0a0d0d0a 1c000000  4d3c2b1a 0100 0000  ffffffffffffffff  1c000000"
    )
    # shb_userappl (code 4, length 2, padded to 4), opt_endofopt
    assert section_header_block("ab") == h(
        "0a0d0d0a 28000000  4d3c2b1a 0100 0000  ffffffffffffffff"
        "0400 0200 61620000  0000 0000  28000000"
    )


def test_interface_description_block_golden():
    # LINKTYPE_ETHERNET, reserved, snaplen 0 (unlimited); no if_tsresol: microseconds
    assert interface_description_block() == h("01000000 14000000  0100 0000 00000000  14000000")
    assert interface_description_block("p1") == h(
        "01000000 20000000  0100 0000 00000000  0200 0200 70310000  0000 0000  20000000"
    )


def test_enhanced_packet_block_golden():
    block = enhanced_packet_block(b"\1\2\3\4\5", timestamp_us=0x1_0000_0002)
    assert block == h(
        "06000000 28000000  00000000  01000000 02000000  05000000 05000000"
        "0102030405 000000  28000000"
    )


# -- headers ------------------------------------------------------------------------------------


def test_syn_frame_golden():
    syn = TcpFlow(HOST, TARGET).handshake()[0]
    ethernet = h("020000000002 020000000001 0800")
    ipv4 = h("45 00 0030 0000 4000 40 06 3cc6 7f000001 7f000001")
    # data offset 7 words, SYN, window 65535, checksum, MSS 65495, NOP, window scale 14
    tcp = h("a112 1144 10000000 00000000 7002 ffff c994 0000 0204ffd7 01 03030e")
    assert syn == ethernet + ipv4 + tcp
    assert ones_complement_sum_ok(ipv4)
    pseudo = h("7f000001 7f000001 00 06 001c")
    assert ones_complement_sum_ok(pseudo + tcp)


def test_checksums_independent():
    header = ipv4_header(bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]), 1000, 77)
    assert ones_complement_sum_ok(header)
    # RFC 1071 section 3's worked example: the one's complement sum of these words is ddf2.
    assert internet_checksum(h("0001 f203 f4f5 f6f7")) == 0xFFFF - 0xDDF2
    # An odd length is padded with a zero byte.
    assert internet_checksum(b"\x01") == internet_checksum(b"\x01\x00")


def test_ipv6_flow():
    flow = TcpFlow(Endpoint("::1", 50000), Endpoint("fe80::1%eth0", 4420))
    frames = [*flow.handshake(), *flow.client_data(b"x" * 100), *flow.finish()]
    segments = [parse_frame(f, 0) for f in frames]  # checks the checksums
    assert segments[0].source == "::1" and segments[0].destination == "fe80::1"
    assert segments[3].payload == b"x" * 100


# -- flow ---------------------------------------------------------------------------------------


def record(chunks: list[tuple[bool, int]], reset: bool = False, server_first: bool = False):
    recorder = FlowRecorder(TcpFlow(HOST, TARGET), interface_name="if", application="app")
    out = [recorder.opening(1_000_000)]
    sent = {True: bytearray(), False: bytearray()}
    for i, (from_client, size) in enumerate(chunks):
        data = bytes((i + j) & 0xFF for j in range(size))
        sent[from_client] += data
        send = recorder.client_sent if from_client else recorder.server_sent
        out.append(send(data, 1_000_001 + i))
    out.append(recorder.closing(2_000_000, reset=reset, server_first=server_first))
    assert recorder.closing(2_000_001) == b""  # closing twice adds nothing
    return read_pcapng(b"".join(out)), sent


chunkings = st.lists(
    st.tuples(st.booleans(), st.one_of(st.integers(0, 3000), st.integers(60000, 200000))),
    max_size=12,
)


@settings(max_examples=60, deadline=None)
@given(chunks=chunkings, reset=st.booleans(), server_first=st.booleans())
def test_sequence_numbers_any_chunking(chunks, reset, server_first):
    capture, sent = record(chunks, reset, server_first)
    assert capture.application == "app" and capture.interface_names == ["if"]
    assert capture.linktypes == [1]
    segments = capture.segments
    syn, syn_ack, ack = segments[:3]
    assert (syn.flags, syn.seq) == (TCP_SYN, CLIENT_ISN)
    assert (syn_ack.flags, syn_ack.seq, syn_ack.ack) == (TCP_SYN | TCP_ACK, SERVER_ISN,
                                                         CLIENT_ISN + 1)  # fmt: skip
    assert (ack.flags, ack.seq, ack.ack) == (TCP_ACK, CLIENT_ISN + 1, SERVER_ISN + 1)
    # Every data segment starts where the sender's last one ended and acknowledges all the
    # other side sent so far.
    next_seq = {HOST.port: CLIENT_ISN + 1, TARGET.port: SERVER_ISN + 1}
    data = [s for s in segments[3:] if s.payload]
    for segment in data:
        other = TARGET.port if segment.source_port == HOST.port else HOST.port
        assert segment.seq == next_seq[segment.source_port]
        assert segment.ack == next_seq[other]
        assert segment.flags & ~TCP_PSH == TCP_ACK and 0 < len(segment.payload) <= MAX_SEGMENT
        next_seq[segment.source_port] += len(segment.payload)
    assert stream_bytes(capture, HOST.port) == sent[True]
    assert stream_bytes(capture, TARGET.port) == sent[False]
    assert [s.timestamp_us for s in segments] == sorted(s.timestamp_us for s in segments)
    closing = segments[3 + len(data) :]
    first, second = (TARGET.port, HOST.port) if server_first else (HOST.port, TARGET.port)
    if reset:
        [rst] = closing
        assert (rst.flags, rst.source_port) == (TCP_RST | TCP_ACK, first)
        assert (rst.seq, rst.ack) == (next_seq[first], next_seq[second])
        return
    fin1, fin2, last = closing
    assert (fin1.source_port, fin1.flags) == (first, TCP_FIN | TCP_ACK)
    assert (fin1.seq, fin1.ack) == (next_seq[first], next_seq[second])
    assert (fin2.source_port, fin2.flags) == (second, TCP_FIN | TCP_ACK)
    assert (fin2.seq, fin2.ack) == (next_seq[second], next_seq[first] + 1)
    assert (last.source_port, last.flags) == (first, TCP_ACK)
    assert (last.seq, last.ack) == (next_seq[first] + 1, next_seq[second] + 1)


def test_large_write_is_split_and_pushed_once():
    capture, _ = record([(True, 2 * MAX_SEGMENT + 1)])
    data = [s for s in capture.segments if s.payload]
    assert [len(s.payload) for s in data] == [MAX_SEGMENT, MAX_SEGMENT, 1]
    assert [bool(s.flags & TCP_PSH) for s in data] == [False, False, True]
