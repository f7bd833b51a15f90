"""A minimal pcapng reader for the capture tests, written from the format description
(draft-ietf-opsawg-pcapng sections 3.1, 4.1-4.3) and RFC 791/9293/8200 header layouts, not
from nvmeof.pcapng, so that it checks the writer rather than mirroring it."""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass, field


@dataclass
class Segment:
    timestamp_us: int
    source: str
    destination: str
    source_port: int
    destination_port: int
    seq: int
    ack: int
    flags: int
    window: int
    options: bytes
    payload: bytes


@dataclass
class Capture:
    linktypes: list[int] = field(default_factory=list)
    interface_names: list[str] = field(default_factory=list)
    application: str = ""
    segments: list[Segment] = field(default_factory=list)


def ones_complement_sum_ok(data: bytes) -> bool:
    """A header carrying a correct Internet checksum sums (in one's complement) to all ones:
    the plain sum of its 16-bit words is a multiple of 0xFFFF."""
    if len(data) % 2:
        data += b"\0"
    words = [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]
    return sum(words) % 0xFFFF == 0


def _options(data: bytes) -> dict[int, bytes]:
    found, offset = {}, 0
    while offset + 4 <= len(data):
        code, length = struct.unpack_from("<HH", data, offset)
        if code == 0:
            break
        found[code] = data[offset + 4 : offset + 4 + length]
        offset += 4 + (length + 3) // 4 * 4
    return found


def parse_frame(frame: bytes, timestamp_us: int) -> Segment:
    """Ethernet II, then IPv4 or IPv6, then TCP; checks the IPv4 and TCP checksums."""
    ethertype = int.from_bytes(frame[12:14], "big")
    ip = frame[14:]
    if ethertype == 0x0800:
        header_length = (ip[0] & 0xF) * 4
        assert ip[0] >> 4 == 4 and ip[9] == 6
        assert ones_complement_sum_ok(ip[:header_length]), "bad IPv4 header checksum"
        total = int.from_bytes(ip[2:4], "big")
        assert total == len(ip)
        src, dst = ip[12:16], ip[16:20]
        tcp = ip[header_length:total]
        pseudo = src + dst + bytes([0, 6]) + len(tcp).to_bytes(2, "big")
    else:
        assert ethertype == 0x86DD and ip[0] >> 4 == 6 and ip[6] == 6
        assert int.from_bytes(ip[4:6], "big") == len(ip) - 40
        src, dst = ip[8:24], ip[24:40]
        tcp = ip[40:]
        pseudo = src + dst + len(tcp).to_bytes(4, "big") + bytes([0, 0, 0, 6])
    assert ones_complement_sum_ok(pseudo + tcp), "bad TCP checksum"
    sport, dport, seq, ack, offset_flags, window = struct.unpack_from("!HHIIHH", tcp)
    data_offset = (offset_flags >> 12) * 4
    return Segment(timestamp_us, str(ipaddress.ip_address(src)), str(ipaddress.ip_address(dst)),
                   sport, dport, seq, ack, offset_flags & 0x1FF, window, tcp[20:data_offset],
                   tcp[data_offset:])  # fmt: skip


def read_pcapng(data: bytes) -> Capture:
    """Every block of a little-endian section; a torn last block is ignored (a live file)."""
    capture = Capture()
    offset = 0
    while offset + 12 <= len(data):
        block_type, total = struct.unpack_from("<II", data, offset)
        if offset + total > len(data):
            break
        assert total % 4 == 0 and total >= 12
        assert struct.unpack_from("<I", data, offset + total - 4)[0] == total
        body = data[offset + 8 : offset + total - 4]
        if block_type == 0x0A0D0D0A:
            magic, major, minor = struct.unpack_from("<IHH", body)
            assert (magic, major, minor) == (0x1A2B3C4D, 1, 0)
            capture.application = _options(body[16:]).get(4, b"").decode()
        elif block_type == 1:
            capture.linktypes.append(struct.unpack_from("<H", body)[0])
            capture.interface_names.append(_options(body[8:]).get(2, b"").decode())
        elif block_type == 6:
            interface, high, low, captured, original = struct.unpack_from("<IIIII", body)
            assert interface < len(capture.linktypes) and captured == original
            capture.segments.append(parse_frame(body[20 : 20 + captured], high << 32 | low))
        offset += total
    return capture


def stream_bytes(capture: Capture, source_port: int) -> bytes:
    """The payload one side sent, in capture order."""
    return b"".join(s.payload for s in capture.segments if s.source_port == source_port)
