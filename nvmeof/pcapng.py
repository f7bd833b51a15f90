"""Sans-IO packet capture: pcapng blocks and a synthesized TCP flow around a byte stream.

A TCP endpoint sees a byte stream, not packets, so a capture taken there has to invent the
packets: :class:`TcpFlow` wraps each direction's bytes into Ethernet/IP/TCP frames with a
handshake, consistent sequence and acknowledgment numbers and a FIN (or RST) exchange, and
:class:`FlowRecorder` stores them as a pcapng file that Wireshark's NVMe/TCP dissector
(epan/dissectors/packet-nvme-tcp.c, TCP port 4420 by default) decodes. Bytes in, bytes out:
the caller owns the clock and the file.

Sources: the pcapng format is draft-ietf-opsawg-pcapng (section 3.5 options, 4.1 Section
Header Block, 4.2 Interface Description Block, 4.3 Enhanced Packet Block); IPv4 and its header
checksum RFC 791 section 3.1; TCP and its checksum RFC 9293 section 3.1 (formerly RFC 793);
the IPv6 header and upper-layer checksum RFC 8200 sections 3 and 8.1; the window scale option
RFC 7323 section 2; Ethernet II framing and link type 1 from the tcpdump.org link-type list.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterator
from dataclasses import dataclass

# -- pcapng blocks (draft-ietf-opsawg-pcapng) ---------------------------------------------------

SECTION_HEADER_BLOCK = 0x0A0D0D0A
INTERFACE_DESCRIPTION_BLOCK = 0x00000001
ENHANCED_PACKET_BLOCK = 0x00000006
BYTE_ORDER_MAGIC = 0x1A2B3C4D
LINKTYPE_ETHERNET = 1
#: Section length unknown (-1): the file is written as it grows (section 4.1).
SECTION_LENGTH_UNKNOWN = 0xFFFFFFFFFFFFFFFF
OPT_ENDOFOPT = 0
SHB_USERAPPL = 4
IF_NAME = 2
#: Without an if_tsresol option timestamps count microseconds (section 4.2), which is what
#: :func:`enhanced_packet_block` takes: so no option is written.
TIMESTAMP_UNITS_PER_SECOND = 1_000_000

# Every block is written little-endian; the byte-order magic of the section header tells a
# reader so (section 4.1).
_BLOCK_HEAD = struct.Struct("<II")
_BLOCK_TAIL = struct.Struct("<I")
_OPTION_HEAD = struct.Struct("<HH")


def _pad32(data: bytes) -> bytes:
    """Block bodies and option values are padded to 32 bits (section 3.1)."""
    return data + bytes(-len(data) % 4)


def _options(options: list[tuple[int, bytes]]) -> bytes:
    """Options (section 3.5): code, length, value padded to 32 bits, then opt_endofopt."""
    if not options:
        return b""
    out = b"".join(_OPTION_HEAD.pack(code, len(value)) + _pad32(value) for code, value in options)
    return out + _OPTION_HEAD.pack(OPT_ENDOFOPT, 0)


def _block(block_type: int, body: bytes) -> bytes:
    """Type, total length, body, total length again (section 3.1)."""
    body = _pad32(body)
    total = _BLOCK_HEAD.size + len(body) + _BLOCK_TAIL.size
    return _BLOCK_HEAD.pack(block_type, total) + body + _BLOCK_TAIL.pack(total)


def section_header_block(application: str = "") -> bytes:
    """Version 1.0, section length unknown, ``shb_userappl`` naming the writer (section 4.1)."""
    options = [(SHB_USERAPPL, application.encode())] if application else []
    body = struct.pack("<IHHQ", BYTE_ORDER_MAGIC, 1, 0, SECTION_LENGTH_UNKNOWN)
    return _block(SECTION_HEADER_BLOCK, body + _options(options))


def interface_description_block(name: str = "", linktype: int = LINKTYPE_ETHERNET) -> bytes:
    """An interface with no snapshot length limit (0) and microsecond timestamps (section
    4.2); ``if_name`` is what Wireshark shows as the capture interface."""
    options = [(IF_NAME, name.encode())] if name else []
    body = struct.pack("<HHI", linktype, 0, 0)
    return _block(INTERFACE_DESCRIPTION_BLOCK, body + _options(options))


def enhanced_packet_block(packet: bytes, timestamp_us: int, interface_id: int = 0) -> bytes:
    """One whole packet (captured = original length) at ``timestamp_us`` microseconds since
    the Unix epoch, split into high and low 32 bits (section 4.3)."""
    body = struct.pack("<IIIII", interface_id, (timestamp_us >> 32) & 0xFFFFFFFF,
                       timestamp_us & 0xFFFFFFFF, len(packet), len(packet))  # fmt: skip
    return _block(ENHANCED_PACKET_BLOCK, body + packet)


# -- Ethernet, IP and TCP headers -----------------------------------------------------------------

ETHERTYPE_IPV4 = 0x0800
ETHERTYPE_IPV6 = 0x86DD
IPPROTO_TCP = 6
TCP_FIN = 0x01
TCP_SYN = 0x02
TCP_RST = 0x04
TCP_PSH = 0x08
TCP_ACK = 0x10
#: Payload bytes per synthesized segment: an IPv4 total length (16 bits) must hold them plus
#: 40 bytes of IPv4 and TCP header.
MAX_SEGMENT = 65000
#: The MSS the SYNs announce: a loopback interface's (MTU 65536 less 40 header bytes).
SYN_MSS = 65495
#: Window scale shift offered in the SYNs (RFC 7323 section 2.3 allows at most 14): the
#: advertised window is then about 1 GiB, so Wireshark's TCP analysis never sees a full window
#: however many bytes one side sends before the other answers.
WINDOW_SCALE = 14
_WINDOW = 0xFFFF
# Locally administered unicast MAC addresses (the 0x02 bit of the first octet, IEEE 802).
CLIENT_MAC = bytes.fromhex("020000000001")
SERVER_MAC = bytes.fromhex("020000000002")
_IPV4 = struct.Struct("!BBHHHBBH4s4s")
_IPV6_HEAD = struct.Struct("!IHBB")
_TCP = struct.Struct("!HHIIHHHH")


def internet_checksum(data: bytes) -> int:
    """The 16-bit one's complement of the one's complement sum of 16-bit words (RFC 791
    section 3.1; RFC 1071 explains it), an odd trailing byte padded with zero."""
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ipv4_header(source: bytes, destination: bytes, payload_length: int, identification: int) -> bytes:  # fmt: skip
    """20 bytes: version 4, IHL 5, DF set, TTL 64, protocol TCP, header checksum (RFC 791)."""
    fields = [0x45, 0, 20 + payload_length, identification & 0xFFFF, 0x4000, 64, IPPROTO_TCP]
    header = _IPV4.pack(*fields, 0, source, destination)
    return _IPV4.pack(*fields, internet_checksum(header), source, destination)


def ipv6_header(source: bytes, destination: bytes, payload_length: int) -> bytes:
    """40 bytes: version 6, no traffic class or flow label, next header TCP, hop limit 64."""
    return _IPV6_HEAD.pack(6 << 28, payload_length, IPPROTO_TCP, 64) + source + destination


def tcp_segment(source: bytes, destination: bytes, source_port: int, destination_port: int,
                seq: int, ack: int, flags: int, payload: bytes = b"", options: bytes = b"") -> bytes:  # fmt: skip
    """TCP header (options padded to 32 bits) plus payload, its checksum over the IPv4 or IPv6
    pseudo-header of ``source`` and ``destination`` (4 or 16 bytes each)."""
    options = _pad32(options)
    offset_words = (_TCP.size + len(options)) // 4
    window = _WINDOW
    head = _TCP.pack(source_port, destination_port, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF,
                     offset_words << 12 | flags, window, 0, 0)  # fmt: skip
    segment = head + options + payload
    if len(source) == 4:  # RFC 9293 section 3.1: addresses, zero, protocol, TCP length (16)
        pseudo = source + destination + struct.pack("!BBH", 0, IPPROTO_TCP, len(segment))
    else:  # RFC 8200 section 8.1: addresses, upper-layer length (32), zero, next header
        pseudo = source + destination + struct.pack("!I3xB", len(segment), IPPROTO_TCP)
    checksum = internet_checksum(pseudo + segment)
    return segment[:16] + struct.pack("!H", checksum) + segment[18:]


@dataclass(frozen=True)
class Endpoint:
    """One end of a TCP connection: an IPv4 or IPv6 address and a port."""

    address: str
    port: int

    @property
    def packed(self) -> bytes:
        return ipaddress.ip_address(self.address.split("%")[0]).packed  # no IPv6 zone index


class _Direction:
    """One sender's half of a flow: where its next byte goes in sequence space."""

    def __init__(self, endpoint: Endpoint, mac: bytes, isn: int) -> None:
        self.endpoint = endpoint
        self.address = endpoint.packed
        self.mac = mac
        self.next_seq = isn  # the SYN takes one sequence number, the FIN another
        self.identification = 0


class TcpFlow:
    """A synthesized TCP connection between a client and a server endpoint.

    Each method returns the Ethernet frames for one event: :meth:`handshake` first, then
    :meth:`client_data` and :meth:`server_data` as bytes flow (each acknowledging all the
    other side sent so far), then :meth:`finish` or :meth:`reset`. Sequence numbers are exact:
    every payload byte is in exactly one segment, in order.
    """

    def __init__(self, client: Endpoint, server: Endpoint, *,
                 client_isn: int = 0x1000_0000, server_isn: int = 0x2000_0000) -> None:  # fmt: skip
        if len(client.packed) != len(server.packed):
            raise ValueError("client and server must both be IPv4 or both IPv6")
        self.client = _Direction(client, CLIENT_MAC, client_isn)
        self.server = _Direction(server, SERVER_MAC, server_isn)
        self._ethertype = ETHERTYPE_IPV4 if len(client.packed) == 4 else ETHERTYPE_IPV6
        self.closed = False

    def _frame(self, sender: _Direction, receiver: _Direction, flags: int,
               payload: bytes = b"", options: bytes = b"") -> bytes:  # fmt: skip
        segment = tcp_segment(sender.address, receiver.address, sender.endpoint.port,
                              receiver.endpoint.port, sender.next_seq,
                              receiver.next_seq if flags & TCP_ACK else 0, flags, payload,
                              options)  # fmt: skip
        if self._ethertype == ETHERTYPE_IPV4:
            ip = ipv4_header(sender.address, receiver.address, len(segment), sender.identification)
            sender.identification += 1
        else:
            ip = ipv6_header(sender.address, receiver.address, len(segment))
        ethernet = receiver.mac + sender.mac + struct.pack("!H", self._ethertype)
        return ethernet + ip + segment

    def handshake(self) -> list[bytes]:
        """SYN, SYN-ACK, ACK. The SYNs carry a maximum segment size (kind 2, length 4: RFC
        9293 section 3.7.1) that admits the largest synthesized segment, and offer window
        scaling (NOP, then kind 3, length 3)."""
        client, server = self.client, self.server
        syn_options = struct.pack("!BBHBBBB", 2, 4, SYN_MSS, 1, 3, 3, WINDOW_SCALE)
        frames = [self._frame(client, server, TCP_SYN, options=syn_options)]
        client.next_seq += 1
        frames.append(self._frame(server, client, TCP_SYN | TCP_ACK, options=syn_options))
        server.next_seq += 1
        frames.append(self._frame(client, server, TCP_ACK))
        return frames

    def client_data(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        return list(self._data(self.client, self.server, data))

    def server_data(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        return list(self._data(self.server, self.client, data))

    def _data(self, sender: _Direction, receiver: _Direction,
              data: bytes | bytearray | memoryview) -> Iterator[bytes]:  # fmt: skip
        view = memoryview(data).cast("B")
        for start in range(0, len(view), MAX_SEGMENT):
            chunk = bytes(view[start : start + MAX_SEGMENT])
            last = start + MAX_SEGMENT >= len(view)
            yield self._frame(sender, receiver, TCP_ACK | (TCP_PSH if last else 0), chunk)
            sender.next_seq += len(chunk)

    def finish(self, *, server_first: bool = False) -> list[bytes]:
        """The orderly close: FIN-ACK from the side closing first, the other's FIN-ACK, the
        last ACK."""
        first, second = (self.server, self.client) if server_first else (self.client, self.server)
        frames = [self._frame(first, second, TCP_FIN | TCP_ACK)]
        first.next_seq += 1
        frames.append(self._frame(second, first, TCP_FIN | TCP_ACK))
        second.next_seq += 1
        frames.append(self._frame(first, second, TCP_ACK))
        self.closed = True
        return frames

    def reset(self, *, by_server: bool = True) -> list[bytes]:
        """An abortive close: one RST-ACK (what SO_LINGER 0 sends)."""
        sender, receiver = (self.server, self.client) if by_server else (self.client, self.server)
        self.closed = True
        return [self._frame(sender, receiver, TCP_RST | TCP_ACK)]


class FlowRecorder:
    """A pcapng file of one TCP flow, as bytes to append to the file in order.

    ``timestamp_us`` is microseconds since the Unix epoch, read by the caller when the bytes
    were received or sent.
    """

    def __init__(self, flow: TcpFlow, *, interface_name: str = "", application: str = "") -> None:
        self.flow = flow
        self.interface_name = interface_name
        self.application = application

    def _packets(self, frames: list[bytes], timestamp_us: int) -> bytes:
        return b"".join(enhanced_packet_block(frame, timestamp_us) for frame in frames)

    def opening(self, timestamp_us: int) -> bytes:
        """Section header, interface description, and the handshake."""
        return (section_header_block(self.application)
                + interface_description_block(self.interface_name)
                + self._packets(self.flow.handshake(), timestamp_us))  # fmt: skip

    def client_sent(self, data: bytes | bytearray | memoryview, timestamp_us: int) -> bytes:
        return self._packets(self.flow.client_data(data), timestamp_us)

    def server_sent(self, data: bytes | bytearray | memoryview, timestamp_us: int) -> bytes:
        return self._packets(self.flow.server_data(data), timestamp_us)

    def closing(self, timestamp_us: int, *, reset: bool = False, server_first: bool = False) -> bytes:  # fmt: skip
        if self.flow.closed:
            return b""
        frames = self.flow.reset(by_server=server_first) if reset else self.flow.finish(
            server_first=server_first)  # fmt: skip
        return self._packets(frames, timestamp_us)
