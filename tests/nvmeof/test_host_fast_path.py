"""The host's data-path shortcuts behave exactly like the general path.

- :meth:`HostConnection.next_completion` (what a host queue's reader calls) against
  :meth:`HostConnection.next_event`: for any input, the same events in the same order, the same
  error (FES, FEI, message, echoed header), the same H2C bytes (H2CData, TermReq), the same
  data in the read buffers and the same state.
- Reused command records (capsule buffers) against fresh connections: byte-identical capsules.
"""

from __future__ import annotations

import dataclasses
import tracemalloc
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from hypothesis import given, settings, strategies as st

from nvmeof.constants import FatalErrorStatus as Fes, PduType
from nvmeof.errors import TransportError
from nvmeof.tcp.events import ConnectionEstablished, ResponseReceived
from nvmeof.tcp.host import Event, HostConnection
from tests.nvmeof.test_fuzz_pdus import (
    DIGEST_COMBOS,
    FUZZ,
    chunk_sizes,
    chunked,
    mutated_stream,
    recording,
)
from tests.pairs import (
    SCRIPT,
    build_pdu,
    cqe_psh,
    data_psh,
    icresp,
    join,
    rw_sqe,
    sqe,
    submit_script,
)


def transcript(chunks: Sequence[bytes], *, hd: bool, dd: bool, fast: bool) -> list[object]:
    """Everything observable while a host that sent ICReq (and, once established, the scripted
    commands) takes ``chunks``: events, the error, bytes to send, state, the read buffers."""
    host = HostConnection(header_digest=hd, data_digest=dd)
    host.initiate()
    log: list[object] = [join(host.data_to_send())]
    buffers: dict[int, bytearray] = {}
    step: Callable[[], Event | None] = host.next_completion if fast else host.next_event
    for chunk in chunks:
        host.receive_data(chunk)
        try:
            while (event := step()) is not None:
                log.append((type(event).__name__, dataclasses.astuple(event)))
                if isinstance(event, ConnectionEstablished):
                    buffers = submit_script(host)
        except TransportError as err:
            log.append(("error", err.fes, err.fei, str(err), err.header))
        log.append(join(host.data_to_send()))
        log.append((host.state, host.outstanding))
    log.append({cid: bytes(buf) for cid, buf in buffers.items()})
    return log


def assert_same(chunks: Sequence[bytes], *, hd: bool, dd: bool) -> None:
    general = transcript(chunks, hd=hd, dd=dd, fast=False)
    assert transcript(chunks, hd=hd, dd=dd, fast=True) == general


@pytest.mark.parametrize(("hd", "dd"), DIGEST_COMBOS)
def test_recorded_session_gives_the_same_transcript(hd: bool, dd: bool) -> None:
    _, c2h, _, _ = recording(hd, dd)
    for sizes in ([1 << 30], [13, 999], [1]):
        assert_same(chunked(c2h, sizes), hd=hd, dd=dd)


@FUZZ
@given(case=mutated_stream(1), sizes=chunk_sizes)
def test_mutated_controller_stream_gives_the_same_transcript(
    case: tuple[bool, bool, bytes], sizes: list[int]
) -> None:
    hd, dd, stream = case
    assert_same(chunked(stream, sizes), hd=hd, dd=dd)


# What the scripted commands expect back: CIDs 5 and 6 are reads (8192 and 512 bytes).
_READS = {5: 8192, 6: 512}
_SUCCESS_LAST = 0x08 | 0x04
_PERTURBATIONS = {
    "offset": [-1, 1, 512, -4096, 4096],
    "length": [-1, 1, 4096],  # the data actually carried
    "datal": [-1, 1],  # what the header says it carries
    "flags": [0, 0x04, 0x08, _SUCCESS_LAST],
    "cid": [3, 5, 6, 7, 0x1234],
    "status": [1, 0x8004, 0x0008, 0x4002],
    "bad_ddgst": [True],
    "duplicate": [True],
    # the common header itself, byte by byte: (offset, value); offset 4 (PLEN) adds the value.
    # The plain path reads the two common shapes from the buffer and must leave any other
    # header to the framer's checks.
    "ch": [
        (1, 0x01),
        (1, 0x02),
        (1, 0x10),
        (2, 28),
        (2, 8),
        (3, 0),
        (3, 28),
        (3, 32),
        (4, 4),
        (4, -4),
    ],
}


@st.composite
def answer_streams(draw: st.DrawFn) -> tuple[bool, bool, bytes]:
    """ICResp, then the answers a target gives the scripted commands (reads in one or two
    C2HData, with SUCCESS or with a CapsuleResp after them), up to three of them broken: a
    wrong offset, length, DATAL, flag, CID or status, a bad data digest, a duplicate."""
    hd, dd = draw(st.sampled_from(DIGEST_COMBOS))
    pdus: list[dict[str, Any]] = []
    cids = draw(st.permutations(range(7)))[: draw(st.integers(1, 7))]
    for cid in cids:
        read_len = _READS.get(cid, 0)
        if read_len and draw(st.integers(0, 3)):
            success = draw(st.booleans())
            halves = read_len > 4096 and draw(st.booleans())
            pieces = [(0, 4096), (4096, 4096)] if halves else [(0, read_len)]
            for i, (offset, length) in enumerate(pieces):
                last = i == len(pieces) - 1
                flags = (_SUCCESS_LAST if success else 0x04) if last else 0
                pdus.append({"kind": 0, "cid": cid, "offset": offset, "length": length,
                             "datal": 0, "flags": flags})  # fmt: skip
            if not success:
                pdus.append({"kind": 1, "cid": cid, "status": 0})
        else:
            pdus.append({"kind": 1, "cid": cid, "status": 0})
    for _ in range(draw(st.integers(0, 3))):
        pdu = draw(st.sampled_from(pdus))
        field = draw(st.sampled_from(sorted(_PERTURBATIONS)))
        value = draw(st.sampled_from(_PERTURBATIONS[field]))
        if field == "duplicate":
            pdus.insert(draw(st.integers(0, len(pdus))), dict(pdu))
        elif field in ("offset", "length", "datal"):
            pdu[field] = pdu.get(field, 0) + value
        else:
            pdu[field] = value
    resp = icresp(digest_bits=(1 if hd else 0) | (2 if dd else 0), maxh2cdata=4096)
    return hd, dd, resp + b"".join(_build(pdu, hd, dd) for pdu in pdus)


def _build(pdu: dict[str, Any], hd: bool, dd: bool) -> bytes:
    if pdu["kind"] == 1:
        psh = cqe_psh(pdu["cid"], pdu.get("status", 0), dw0=0x1234, sqhd=7, sqid=1)
        out = bytearray(build_pdu(PduType.CAPSULE_RESP, psh, hd=hd))
    else:
        length = max(pdu["length"], 1)
        data = bytes([pdu["cid"] + length & 0xFF]) * length
        psh = data_psh(pdu["cid"], 0, max(pdu["offset"], 0), length + pdu["datal"])
        out = bytearray(build_pdu(PduType.C2H_DATA, psh, data, hd=hd, dd=dd, flags=pdu["flags"],
                                  corrupt_ddgst=dd and bool(pdu.get("bad_ddgst"))))  # fmt: skip
    if "ch" in pdu:
        offset, value = pdu["ch"]
        if offset == 4:
            plen = int.from_bytes(out[4:8], "little") + value
            out[4:8] = plen.to_bytes(4, "little")
        else:
            out[offset] = value
    return bytes(out)


@settings(FUZZ, max_examples=600)
@given(case=answer_streams(), sizes=chunk_sizes)
def test_answers_around_the_outstanding_commands_give_the_same_transcript(
    case: tuple[bool, bool, bytes], sizes: list[int]
) -> None:
    hd, dd, stream = case
    assert_same(chunked(stream, sizes), hd=hd, dd=dd)


def _answers(halves: bool, success: bool) -> list[dict[str, Any]]:
    """Correct answers to every scripted command: reads in one or two C2HData, with SUCCESS or
    followed by a CapsuleResp."""
    pdus: list[dict[str, Any]] = [{"kind": 1, "cid": cid, "status": 0} for cid in range(5)]
    for cid, read_len in _READS.items():
        pieces = [(0, 4096), (4096, 4096)] if halves and read_len > 4096 else [(0, read_len)]
        for i, (offset, length) in enumerate(pieces):
            last = i == len(pieces) - 1
            flags = (_SUCCESS_LAST if success else 0x04) if last else 0
            pdus.append({"kind": 0, "cid": cid, "offset": offset, "length": length, "datal": 0,
                         "flags": flags})  # fmt: skip
        if not success:
            pdus.append({"kind": 1, "cid": cid, "status": 0})
    return pdus


@pytest.mark.parametrize(("hd", "dd"), DIGEST_COMBOS)
@pytest.mark.parametrize("halves", [False, True])
@pytest.mark.parametrize("success", [False, True])
def test_every_single_broken_answer_gives_the_same_transcript(
    hd: bool, dd: bool, halves: bool, success: bool
) -> None:
    """Each perturbation of each answer in turn (the property test above samples them)."""
    resp = icresp(digest_bits=(1 if hd else 0) | (2 if dd else 0), maxh2cdata=4096)
    base = _answers(halves, success)
    assert_same([resp + b"".join(_build(pdu, hd, dd) for pdu in base)], hd=hd, dd=dd)
    for index in range(len(base)):
        for field, values in _PERTURBATIONS.items():
            for value in values:
                pdus = [dict(pdu) for pdu in base]
                pdu = pdus[index]
                if field == "duplicate":
                    pdus.insert(index, dict(pdu))
                elif field in ("offset", "length", "datal"):
                    if pdu["kind"] != 0:
                        continue
                    pdu[field] += value
                else:
                    pdu[field] = value
                stream = resp + b"".join(_build(pdu, hd, dd) for pdu in pdus)
                assert_same([stream], hd=hd, dd=dd)


def test_next_completion_refills_one_object() -> None:
    host = established()
    for cid in (1, 2):
        host.send_command(rw_sqe(0x02, cid, 1, 0, 1), read_buffer=bytearray(512))
    host.receive_data(b"".join(
        build_pdu(PduType.C2H_DATA, data_psh(cid, 0, 0, 512), bytes([cid]) * 512,
                  flags=_SUCCESS_LAST) for cid in (1, 2)
    ))  # fmt: skip
    first = host.next_completion()
    assert first == ResponseReceived(1, 0, 0, 0, 0, 0)
    assert host.next_completion() is first == ResponseReceived(2, 0, 0, 0, 0, 0)
    assert host.next_completion() is None and host.outstanding == 0


@pytest.mark.parametrize("api", ["next_event", "next_completion"])
def test_data_beyond_the_hosts_limit_is_refused_on_both_paths(api: str) -> None:
    """The plain path reads C2HData from the buffer: it must keep the framer's data limit."""
    host = HostConnection(max_c2h_data=4096)
    host.initiate()
    host.data_to_send()
    host.receive_data(icresp())
    assert isinstance(host.next_event(), ConnectionEstablished)
    host.send_command(rw_sqe(0x02, 1, 1, 0, 16), read_buffer=bytearray(8192))
    host.receive_data(build_pdu(PduType.C2H_DATA, data_psh(1, 0, 0, 8192), bytes(8192),
                                flags=_SUCCESS_LAST))  # fmt: skip
    with pytest.raises(TransportError) as refused:
        getattr(host, api)()
    assert refused.value.fes == Fes.DATA_TRANSFER_LIMIT_EXCEEDED


# -- reused command records ----------------------------------------------------------------------


def established(hd: bool = False, dd: bool = False, cpda: int = 0) -> HostConnection:
    host = HostConnection(header_digest=hd, data_digest=dd)
    host.initiate()
    host.data_to_send()
    host.receive_data(icresp(digest_bits=(1 if hd else 0) | (2 if dd else 0), cpda=cpda))
    assert isinstance(host.next_event(), ConnectionEstablished)
    return host


def complete(host: HostConnection, cid: int, read_len: int = 0) -> None:
    if read_len:
        pdu = build_pdu(PduType.C2H_DATA, data_psh(cid, 0, 0, read_len), bytes(read_len),
                        hd=host.header_digest, dd=host.data_digest, flags=_SUCCESS_LAST)  # fmt: skip
    else:
        pdu = build_pdu(PduType.CAPSULE_RESP, cqe_psh(cid), hd=host.header_digest)
    host.receive_data(pdu)
    event = host.next_completion()
    assert isinstance(event, ResponseReceived) and event.cid == cid and event.status == 0


@pytest.mark.parametrize(("hd", "dd"), DIGEST_COMBOS)
@pytest.mark.parametrize("cpda", [0, 3])
def test_reused_records_build_the_same_capsules(hd: bool, dd: bool, cpda: int) -> None:
    """Every scripted command sent on a connection whose records were used before (by other
    commands, of other kinds, with in-capsule data or not) gives the bytes a fresh connection
    gives."""
    for cmd in SCRIPT:
        fresh = established(hd, dd, cpda)
        worn = established(hd, dd, cpda)
        for other in SCRIPT:  # wear every record: all the CIDs outstanding at once, then done
            read = bytearray(other.read_len) if other.read_len else None
            worn.send_command(other.sqe, write_data=other.write, read_buffer=read,
                              in_capsule_limit=other.in_capsule_limit, cid=other.cid + 100)  # fmt: skip
        worn.data_to_send()
        for other in SCRIPT:
            complete(worn, other.cid + 100, other.read_len)
        for host in (fresh, worn):
            read = bytearray(cmd.read_len) if cmd.read_len else None
            host.send_command(cmd.sqe, write_data=cmd.write, read_buffer=read,
                              in_capsule_limit=cmd.in_capsule_limit)  # fmt: skip
        assert join(worn.data_to_send()) == join(fresh.data_to_send())


def test_a_capsule_answered_before_it_was_sent_is_not_rewritten() -> None:
    """A broken target answering a command still queued: the next command must not reuse (and
    overwrite) the queued capsule."""
    host = established()
    host.send_command(sqe(0x00, 1, nsid=1))
    complete(host, 1)  # before data_to_send()
    host.send_command(sqe(0x00, 2, nsid=2))
    first, second = (bytes(b) for b in host.data_to_send())
    assert first[10:12] == b"\x01\x00" and first[12:16] == b"\x01\x00\x00\x00"
    assert second[10:12] == b"\x02\x00" and second[12:16] == b"\x02\x00\x00\x00"


def test_completed_commands_release_the_callers_buffers() -> None:
    """A kept record would hold a view of the buffer, and a bytearray with a view cannot be
    resized."""
    host = established()
    read = bytearray(512)
    write = bytearray(512)
    host.send_command(rw_sqe(0x02, 1, 1, 0, 1), read_buffer=read)
    host.send_command(rw_sqe(0x01, 2, 1, 0, 1), write_data=write, in_capsule_limit=4096)
    host.data_to_send()
    complete(host, 1, 512)
    complete(host, 2)
    read.extend(b"x")
    write.extend(b"x")


def test_steady_state_reuses_every_per_command_object() -> None:
    """Thousands of reads at a fixed depth: the same command records, capsule buffers and
    completion object all along, and no memory kept under nvmeof/ (what a host queue's data
    path allocates per command is transient: ints, the framer's views)."""
    depth = 8
    host = established()
    buffers = [memoryview(bytearray(512)) for _ in range(depth)]
    answers = [build_pdu(PduType.C2H_DATA, data_psh(cid, 0, 0, 512), bytes([cid]) * 512,
                         flags=_SUCCESS_LAST) for cid in range(depth)]  # fmt: skip
    command = bytearray(rw_sqe(0x02, 0, 1, 0, 1))

    def run(rounds: int) -> None:
        for _ in range(rounds):
            for cid in range(depth):
                host.send_command(command, read_buffer=buffers[cid], cid=cid)
            host.data_to_send()
            host.receive_data(b"".join(answers))
            for cid in range(depth):
                done = host.next_completion()
                assert done is host._completion and done.cid == cid and done.status == 0
            assert host.next_completion() is None

    run(50)
    records = {id(r): r.capsule for r in host._pool}
    assert len(records) == depth
    tracemalloc.start(3)
    try:
        before = tracemalloc.take_snapshot()
        run(500)
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    assert {id(r): r.capsule for r in host._pool} == records  # same records, same buffers
    assert all(records[id(r)] is r.capsule for r in host._pool)
    watched = [tracemalloc.Filter(True, "*/nvmeof/*")]
    grown = after.filter_traces(watched).compare_to(before.filter_traces(watched), "lineno")
    assert sum(stat.size_diff for stat in grown) < 1024, grown[:5]
    assert all(bytes(buf) == bytes([cid]) * 512 for cid, buf in enumerate(buffers))
