"""Property tests: whatever bytes arrive, the connection cores fail only with TransportError,
and then queue a well-formed TermReq and ignore further input (docs/PROTOCOL.md §1.7)."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache

from hypothesis import HealthCheck, event, given, settings, strategies as st

from nvmeof.constants import PduType
from nvmeof.errors import TransportError
from nvmeof.tcp.controller import ConnState, ControllerConnection
from nvmeof.tcp.events import ConnectionEstablished
from nvmeof.tcp.host import HostConnection, HostState
from tests.pairs import (
    CH,
    ScriptedController,
    icreq,
    icresp,
    record_session,
    split_pdus,
    submit_script,
)

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

DIGEST_COMBOS = [(False, False), (True, False), (False, True), (True, True)]


@cache
def recording(hd: bool, dd: bool) -> tuple[bytes, bytes, tuple[int, ...], tuple[int, ...]]:
    """(host->controller bytes, controller->host bytes, PDU start offsets of each)."""
    h2c, c2h, _ = record_session(header_digest=hd, data_digest=dd)

    def starts(stream: bytes) -> tuple[int, ...]:
        out, pos = [], 0
        for pdu in split_pdus(stream):
            out.append(pos)
            pos += len(pdu)
        return tuple(out)

    return h2c, c2h, starts(h2c), starts(c2h)


def chunked(data: bytes, sizes: Sequence[int]) -> list[bytes]:
    out, pos, i = [], 0, 0
    while pos < len(data):
        n = sizes[i % len(sizes)]
        out.append(data[pos : pos + n])
        pos, i = pos + n, i + 1
    return out


def check_term_req(out: Sequence[bytes | bytearray | memoryview], pdu_type: int) -> None:
    assert out, "no TermReq queued after a fatal error"
    last = bytes(out[-1])
    assert len(last) >= 24
    t, flags, hlen, pdo, plen = CH.unpack_from(last)
    assert (t, flags, hlen, pdo) == (pdu_type, 0, 24, 0)
    assert 24 <= plen <= 152 and plen == len(last)


def run_controller(chunks: list[bytes], *, respond: bool = True) -> str:
    """Feed ``chunks``; answer commands like a target. Returns how the run ended."""
    ctrl = ControllerConnection(max_h2c_data=4096, max_c2h_data=4096)
    responder = ScriptedController(ctrl)
    for i, chunk in enumerate(chunks):
        ctrl.receive_data(chunk)
        try:
            while (event := ctrl.next_event()) is not None:
                if respond:
                    responder.handle(event)
        except TransportError:
            check_term_req(ctrl.data_to_send(), PduType.C2H_TERM_REQ)
            assert ctrl.state is ConnState.TERMINATED
            for rest in chunks[i + 1 :]:  # further input is ignored
                ctrl.receive_data(rest)
                assert ctrl.next_event() is None
            assert ctrl.data_to_send() == []
            return "terminated"
    ctrl.data_to_send()
    return ctrl.state.value


def run_host(chunks: list[bytes], *, hd: bool = False, dd: bool = False) -> str:
    """Feed ``chunks`` to a host that sent ICReq and, once established, the scripted commands."""
    host = HostConnection(header_digest=hd, data_digest=dd)
    host.initiate()
    for i, chunk in enumerate(chunks):
        host.receive_data(chunk)
        try:
            while (event := host.next_event()) is not None:
                if isinstance(event, ConnectionEstablished):
                    submit_script(host)
        except TransportError:
            check_term_req(host.data_to_send(), PduType.H2C_TERM_REQ)
            assert host.state is HostState.TERMINATED
            for rest in chunks[i + 1 :]:
                host.receive_data(rest)
                assert host.next_event() is None
            return "terminated"
    host.data_to_send()
    return host.state.value


chunk_sizes = st.one_of(
    st.just([1 << 30]),  # everything at once
    st.lists(st.integers(1, 64), min_size=1, max_size=4),
    st.lists(st.integers(1, 5000), min_size=1, max_size=4),
)


# -- (a) random bytes ---------------------------------------------------------------------------


@FUZZ
@given(
    prefix=st.sampled_from([b"", icreq(), icreq(digest_bits=3), icreq(digest_bits=1)]),
    garbage=st.binary(max_size=600),
    sizes=chunk_sizes,
)
def test_controller_survives_random_bytes(prefix: bytes, garbage: bytes, sizes: list[int]) -> None:
    event(run_controller(chunked(prefix + garbage, sizes)))


@FUZZ
@given(
    garbage=st.binary(max_size=600),
    sizes=chunk_sizes,
    resp=st.sampled_from([b"", icresp(), icresp(maxh2cdata=4096, cpda=3)]),
)
def test_host_survives_random_bytes(garbage: bytes, sizes: list[int], resp: bytes) -> None:
    event(run_host(chunked(resp + garbage, sizes)))


@FUZZ
@given(
    pdu_type=st.sampled_from([*range(10), 0xFF]),
    flags=st.integers(0, 255),
    hlen=st.sampled_from([0, 8, 24, 72, 128, 255]),
    pdo=st.sampled_from([0, 24, 28, 72, 76, 255]),
    plen=st.one_of(st.integers(0, 300), st.just(0xFFFFFFFF)),
    body=st.binary(max_size=300),
    established=st.booleans(),
)
def test_controller_survives_random_headers(pdu_type: int, flags: int, hlen: int, pdo: int,
                                            plen: int, body: bytes, established: bool) -> None:  # fmt: skip
    """Random but plausible common headers reach deeper checks than random bytes do."""
    raw = CH.pack(pdu_type, flags, hlen, pdo, plen) + body
    event(run_controller(chunked((icreq() if established else b"") + raw, [len(raw) + 128])))


# -- (b)/(c) mutated valid streams ------------------------------------------------------------


@st.composite
def mutations(draw: st.DrawFn, size: int, starts: tuple[int, ...]) -> list[tuple[str, int, int]]:
    """Edits biased toward PDU headers: ("set", pos, byte) / ("del", pos, n) / ("ins", pos, b)."""
    ops = []
    for _ in range(draw(st.integers(1, 4))):
        if draw(st.booleans()):
            pos = draw(st.sampled_from(starts)) + draw(st.integers(0, 79))
        else:
            pos = draw(st.integers(0, size - 1))
        pos = min(pos, size - 1)
        kind = draw(st.sampled_from(["set", "set", "set", "del", "ins"]))
        value = draw(st.integers(0, 255)) if kind != "del" else draw(st.integers(1, 16))
        ops.append((kind, pos, value))
    return ops


def mutate(data: bytes, ops: list[tuple[str, int, int]]) -> bytes:
    buf = bytearray(data)
    for kind, pos, value in ops:
        pos = min(pos, max(len(buf) - 1, 0))
        if kind == "set" and buf:
            buf[pos] = value
        elif kind == "del":
            del buf[pos : pos + value]
        else:
            buf[pos:pos] = bytes([value])
    return bytes(buf)


@st.composite
def mutated_stream(draw: st.DrawFn, direction: int) -> tuple[bool, bool, bytes]:
    hd, dd = draw(st.sampled_from(DIGEST_COMBOS))
    h2c, c2h, h2c_starts, c2h_starts = recording(hd, dd)
    stream, starts = (h2c, h2c_starts) if direction == 0 else (c2h, c2h_starts)
    return hd, dd, mutate(stream, draw(mutations(len(stream), starts)))


def test_recorded_streams_replay_cleanly() -> None:
    for hd, dd in DIGEST_COMBOS:
        h2c, c2h, _, _ = recording(hd, dd)
        assert run_controller(chunked(h2c, [1 << 30])) == "established"
        assert run_controller(chunked(h2c, [7, 300])) == "established"
        assert run_host(chunked(c2h, [1 << 30]), hd=hd, dd=dd) == "established"
        assert run_host(chunked(c2h, [13, 999]), hd=hd, dd=dd) == "established"


@FUZZ
@given(case=mutated_stream(0), sizes=chunk_sizes)
def test_controller_survives_mutated_host_stream(
    case: tuple[bool, bool, bytes], sizes: list[int]
) -> None:
    _, _, stream = case
    event(run_controller(chunked(stream, sizes)))


@FUZZ
@given(case=mutated_stream(1), sizes=chunk_sizes)
def test_host_survives_mutated_controller_stream(
    case: tuple[bool, bool, bytes], sizes: list[int]
) -> None:
    hd, dd, stream = case
    event(run_host(chunked(stream, sizes), hd=hd, dd=dd))
