"""Packet capture (``--pcap DIR``, ``Target.capture_to``): a loopback run with this project's
initiator leaves one pcapng file per connection that parses back to the exact byte streams,
and that Wireshark's NVMe/TCP dissector (epan/dissectors/packet-nvme-tcp.c) decodes PDU by PDU
with digest checking on."""

from __future__ import annotations

import collections
import hashlib
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trio

from nvmeof.constants import Cns, PduType
from nvmeof.pcapng import Endpoint, FlowRecorder, TcpFlow
from target.cli import build_parser
from target.daemon import Target
from tests.integration.conftest import itest_config
from tests.pcapng_reader import Capture, read_pcapng, stream_bytes

KIB = 1024
# Port 1's in-capsule limit is 8 KiB (conftest): 4 KiB goes in the capsule, 64 KiB and 300 KiB
# by R2T and H2CData (300 KiB takes three R2Ts of at most MAXH2CDATA, 128 KiB).
WRITES = (4 * KIB, 64 * KIB, 300 * KIB)


def pattern(seed: str, size: int) -> bytes:
    blocks = (hashlib.sha256(f"{seed}/{i}".encode()).digest() for i in range(size // 32 + 1))
    return b"".join(blocks)[:size]


async def capture_demo_run(lb, directory: Path) -> dict[str, int]:
    """Two controllers through ports 1 and 2, the first with header and data digests: Connect,
    properties, Identify, Set Features, then in-capsule and R2T writes read back by C2HData;
    then an orderly shutdown. Returns the TCP port of each target port used, by name."""
    lb.target.capture_to(directory)  # the run-time switch: new connections from now on
    with trio.fail_after(20):
        digests = await lb.connect(1, header_digest=True, data_digest=True, io_queues=2)
        plain = await lb.connect(2, io_queues=1)
        for ctrl in (digests, plain):
            await ctrl.identify_raw(Cns.NAMESPACE, nsid=1)
            for queue, size in enumerate(WRITES):
                data = pattern(f"{ctrl.cntlid}/{size}", size)
                assert (await ctrl.write(1, 0, data, 512, queue=queue)).ok
                done, back = await ctrl.read(1, 0, size // 512, 512, queue=queue + 1)
                assert done.ok and back == data
            await ctrl.shutdown()
        await lb.wait_until(lambda: not lb.target.connections)
    lb.target.capture_to(None)
    return {"port1": lb.ports[1], "port2": lb.ports[2]}


def test_cli_option():
    args = build_parser().parse_args(["serve", "--pcap", "/tmp/captures"])
    assert args.pcap == "/tmp/captures"
    assert build_parser().parse_args(["serve"]).pcap is None


async def test_capture_files_parse_back(lb, tmp_path):
    ports = await capture_demo_run(lb, tmp_path)
    files = sorted(tmp_path.iterdir())
    # Admin + 2 I/O queues on port 1, admin + 1 I/O queue on port 2.
    names = [f.name for f in files]
    assert sum(n.startswith("port1-127.0.0.1_") for n in names) == 3, names
    assert sum(n.startswith("port2-127.0.0.1_") for n in names) == 2, names
    assert all(n.endswith(".pcapng") for n in names)
    total = {"host": 0, "target": 0}
    for path in files:
        capture = read_pcapng(path.read_bytes())
        assert capture.linktypes == [1] and capture.application == "nvmeof-emu target"
        port = ports["port1" if path.name.startswith("port1") else "port2"]
        host_port = int(path.name.split("_")[1].split("-")[0])
        assert {s.destination_port for s in capture.segments if s.source_port == host_port} == {
            port
        }
        host_bytes, target_bytes = stream_bytes(capture, host_port), stream_bytes(capture, port)
        # The streams start with ICReq and ICResp and end with the FIN exchange.
        assert host_bytes[0] == PduType.ICREQ and target_bytes[0] == PduType.ICRESP
        assert capture.segments[-1].flags == 0x10 and capture.segments[-2].flags == 0x11
        total["host"] += len(host_bytes)
        total["target"] += len(target_bytes)
    # Every payload byte moved in both directions, at least once.
    assert total["host"] > 2 * sum(WRITES) and total["target"] > 2 * sum(WRITES)


async def test_capture_off_for_new_connections(lb, tmp_path):
    lb.target.capture_to(tmp_path)
    lb.target.capture_to(None)
    with trio.fail_after(10):
        ctrl = await lb.connect(1, io_queues=1)
        await ctrl.shutdown()
    assert not list(tmp_path.iterdir())


def test_pcap_dir_at_construction(tmp_path):
    directory = tmp_path / "new" / "captures"
    target = Target(itest_config(), pcap_dir=directory)
    assert target.pcap_dir == directory and directory.is_dir()


async def test_reset_ends_with_rst_and_live_file_parses(lb, tmp_path):
    """A file is readable while its connection runs; ``port down --mode reset`` ends it with
    the RST the socket sends (SO_LINGER 0)."""
    lb.target.capture_to(tmp_path)
    with trio.fail_after(10):
        ctrl = await lb.connect(1, io_queues=0, kato_ms=0)
        [path] = tmp_path.iterdir()
        live = read_pcapng(path.read_bytes())
        assert [s.flags for s in live.segments[:3]] == [0x02, 0x12, 0x10]
        assert stream_bytes(live, live.segments[0].source_port)[0] == PduType.ICREQ
        await lb.target.port_down(1, mode="reset")
        await lb.wait_until(lambda: not lb.target.connections)
        await lb.target.port_up(1)
        await ctrl.shutdown()
    last = read_pcapng(path.read_bytes()).segments[-1]
    assert last.flags == 0x14 and last.source_port == lb.ports[1]  # RST-ACK from the target


# -- Wireshark ------------------------------------------------------------------------------------

TSHARK = shutil.which("tshark")
needs_tshark = pytest.mark.skipif(
    TSHARK is None, reason="tshark not installed (Debian: apt-get install tshark; .ci/run does)"
)
# Expert info severities as tshark prints them in _ws.expert.severity (epan/proto.h PI_*), and
# the digest status values of proto_tree_add_checksum (epan/proto.h PROTO_CHECKSUM_E_*).
PI_WARN = 0x600000
DIGEST_GOOD = 1
FIELDS = ("frame.number", "nvme-tcp.type", "nvme-tcp.hdgst.status", "nvme-tcp.ddgst.status",
          "nvme-tcp.unknown_data", "_ws.malformed", "_ws.expert.severity", "_ws.expert.message")  # fmt: skip


def tshark_fields(path: Path, ports: dict[str, int]) -> list[dict[str, list[str]]]:
    """One row per frame, FIELDS by name, each a list (several PDUs may share a frame); the
    digests checked, the test's ports decoded as NVMe/TCP (Wireshark 4.0 has no NVMe/TCP
    heuristic: a port other than 4420 needs ``-d``)."""
    assert TSHARK is not None
    command = [TSHARK, "-n", "-r", str(path),
               "-o", "nvme-tcp.check_hdgst:TRUE", "-o", "nvme-tcp.check_ddgst:TRUE"]  # fmt: skip
    for port in ports.values():
        command += ["-d", f"tcp.port=={port},nvme-tcp"]
    command += ["-T", "fields", "-E", "separator=\t", "-E", "occurrence=a", "-E", "aggregator=|"]
    for name in FIELDS:
        command += ["-e", name]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=True)
    return [
        {
            name: [v for v in value.split("|") if v]
            for name, value in zip(FIELDS, line.split("\t"), strict=True)
        }
        for line in result.stdout.splitlines()
    ]


@dataclass
class Decoded:
    types: collections.Counter[int] = field(default_factory=collections.Counter)
    good_digests: collections.Counter[str] = field(default_factory=collections.Counter)
    problems: list[str] = field(default_factory=list)

    def add(self, rows: list[dict[str, list[str]]], name: str) -> None:
        """PDU types, good digests, and problems: malformed, a warning or error, a digest
        not good, undecoded PDU bytes."""
        for row in rows:
            where = f"{name} frame {row['frame.number'][0]}"
            self.types.update(int(t, 0) for t in row["nvme-tcp.type"])
            for kind in ("hdgst", "ddgst"):
                for status in row[f"nvme-tcp.{kind}.status"]:
                    if int(status, 0) == DIGEST_GOOD:
                        self.good_digests[kind] += 1
                    else:
                        self.problems.append(f"{where}: {kind} status {status}")
            if row["_ws.malformed"]:
                self.problems.append(f"{where}: malformed")
            if row["nvme-tcp.unknown_data"]:
                self.problems.append(f"{where}: unknown data")
            messages = row["_ws.expert.message"]
            for severity, message in zip(row["_ws.expert.severity"], messages, strict=True):
                if int(severity, 0) >= PI_WARN:
                    self.problems.append(f"{where}: {message}")


@needs_tshark
async def test_wireshark_decodes_every_pdu(lb, tmp_path):
    ports = await capture_demo_run(lb, tmp_path)
    decoded = Decoded()
    with_digests = 0  # PDUs after ICReq and ICResp on port 1, where the host asked for digests
    for path in sorted(tmp_path.iterdir()):
        capture = read_pcapng(path.read_bytes())
        before = sum(decoded.types.values())
        decoded.add(tshark_fields(path, ports), path.name)
        # Every PDU the host and the target sent was decoded: as many as the streams hold.
        pdus = count_pdus(capture)
        assert sum(decoded.types.values()) - before == pdus, path.name
        if path.name.startswith("port1-"):
            with_digests += pdus - 2
    types = decoded.types
    assert not decoded.problems, decoded.problems
    assert types[PduType.ICREQ] == types[PduType.ICRESP] == 5
    assert types[PduType.CAPSULE_CMD] == types[PduType.CAPSULE_RESP] >= 30
    assert types[PduType.R2T] == 2 * 2 and types[PduType.H2C_DATA] == 2 * 4
    assert types[PduType.C2H_DATA] >= 2 * len(WRITES)
    assert set(types) == {PduType.ICREQ, PduType.ICRESP, PduType.CAPSULE_CMD,
                          PduType.CAPSULE_RESP, PduType.H2C_DATA, PduType.C2H_DATA, PduType.R2T}  # fmt: skip
    # Each of them had its header digest checked, and the ones with data their data digest.
    assert decoded.good_digests["hdgst"] == with_digests
    assert decoded.good_digests["ddgst"] >= 3 + len(WRITES) * 2


def count_pdus(capture: Capture) -> int:
    """PDUs in both byte streams, walked by their common header's PLEN (NVMe/TCP 1.0 3.3)."""
    count = 0
    for source_port in {s.source_port for s in capture.segments}:
        stream = stream_bytes(capture, source_port)
        offset = 0
        while offset < len(stream):
            offset += int.from_bytes(stream[offset + 4 : offset + 8], "little")
            count += 1
        assert offset == len(stream)
    return count


def corrupt(stream: bytes, pdu_index: int, offset_from_end: int) -> bytes:
    """``stream`` with one bit flipped ``offset_from_end`` bytes before the end of a PDU."""
    offset = 0
    for _ in range(pdu_index):
        offset += int.from_bytes(stream[offset + 4 : offset + 8], "little")
    end = offset + int.from_bytes(stream[offset + 4 : offset + 8], "little")
    broken = bytearray(stream)
    broken[end - offset_from_end] ^= 1
    return bytes(broken)


@needs_tshark
async def test_wireshark_flags_bad_digests(lb, tmp_path):
    """The check above can fail: with one bit flipped in the Connect's data digest and in the
    header digest of its response, tshark reports both."""
    lb.target.capture_to(tmp_path)
    with trio.fail_after(10):
        ctrl = await lb.connect(1, header_digest=True, data_digest=True, io_queues=0, kato_ms=0)
        await ctrl.shutdown()
        await lb.wait_until(lambda: not lb.target.connections)
    [path] = tmp_path.iterdir()
    capture = read_pcapng(path.read_bytes())
    host_port, target_port = capture.segments[0].source_port, capture.segments[0].destination_port
    streams = {host_port: corrupt(stream_bytes(capture, host_port), 1, 1),  # Connect's DDGST
               target_port: corrupt(stream_bytes(capture, target_port), 1, 4 + 1)}  # fmt: skip
    broken = tmp_path / "broken.pcapng"
    broken.write_bytes(replay(capture, streams))
    decoded = Decoded()
    decoded.add(tshark_fields(broken, {"port1": target_port}), broken.name)
    assert [p.split(": ")[1] for p in decoded.problems] == ["ddgst status 0", "hdgst status 0"]


def replay(capture: Capture, streams: dict[int, bytes]) -> bytes:
    """``capture`` recorded again, segment for segment, with each side's bytes from
    ``streams`` (by source port)."""
    syn = capture.segments[0]
    client = Endpoint(syn.source, syn.source_port)
    recorder = FlowRecorder(TcpFlow(client, Endpoint(syn.destination, syn.destination_port)))
    out = [recorder.opening(syn.timestamp_us)]
    cursor = dict.fromkeys(streams, 0)
    for segment in capture.segments:
        if segment.payload:
            start = cursor[segment.source_port]
            cursor[segment.source_port] += len(segment.payload)
            data = streams[segment.source_port][start : cursor[segment.source_port]]
            send = (
                recorder.client_sent if segment.source_port == client.port else recorder.server_sent
            )
            out.append(send(data, segment.timestamp_us))
    out.append(recorder.closing(capture.segments[-1].timestamp_us))
    return b"".join(out)
