"""The target under abuse, over real loopback sockets: protocol garbage is answered with a
C2HTermReq and a close of that connection only, bad commands with NVMe statuses, and the keep-alive
timer and ANA changes behave as docs/PROTOCOL.md §1.7, §3.3, §5.3, §5.4 and §8 describe."""

from __future__ import annotations

import contextlib
import logging
import struct
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

import pytest
import trio
import trio.lowlevel
import trio.testing
from hypothesis import HealthCheck, given, settings, strategies as st

from initiator.controller import ControllerOptions, HostController, connect_controller
from initiator.queue import Completion, HostQueue
from nvmeof.constants import OAES_ANA_CHANGE, AnaState, FeatureId, PduType
from nvmeof.wire.fabrics import CONNECT_COMMAND, CONNECT_DATA, PROPERTY_SET_COMMAND
from target.config import (
    DEMO_NQN,
    NamespaceConfig,
    PortConfig,
    SubsystemConfig,
    TargetConfig,
)
from target.daemon import Target
from tests.pairs import CH, build_pdu, icreq, rw_sqe, sqe, term_req

NS1_BLOCKS = (16 << 20) // 512
HOST = "127.0.0.1"
LOCAL_HOSTNQN = "nqn.2014-08.org.nvmexpress:uuid:00000000-0000-4000-8000-000000000001"


def config(strict: bool = True) -> TargetConfig:
    """Strict ports: these tests check the specification's rules (a port's ``strict`` mode);
    the default, nvmet's tolerance, is checked against recorded nvmet answers in
    tests/target/test_tolerance.py."""
    sub = SubsystemConfig(
        nqn=DEMO_NQN,
        namespaces=(
            NamespaceConfig(nsid=1, size=16 << 20, block_size=512),
            NamespaceConfig(nsid=2, size=16 << 20, block_size=4096),
        ),
    )
    return TargetConfig(
        subsystems=(sub,),
        ports=(
            PortConfig(id=1, port=0, subsystems=(DEMO_NQN,),
                       ana_states=((1, AnaState.OPTIMIZED),), strict=strict),
            PortConfig(id=2, port=0, subsystems=(DEMO_NQN,),
                       ana_states=((1, AnaState.NON_OPTIMIZED),), strict=strict),
        ),
    )  # fmt: skip


class _Collect(logging.Handler):
    def __init__(self, level: int) -> None:
        super().__init__(level)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextmanager
def target_logs(level: int) -> Iterator[list[logging.LogRecord]]:
    handler = _Collect(level)
    logger = logging.getLogger("nvmeof.target")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(min(level, logger.getEffectiveLevel()))
    try:
        yield handler.records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


def target_errors() -> contextlib.AbstractContextManager[list[logging.LogRecord]]:
    """ERROR records of the target logger: an exception escaping a connection handler is a bug
    even though the daemon survives it."""
    return target_logs(logging.ERROR)


@asynccontextmanager
async def running_target(strict: bool = True) -> AsyncIterator[tuple[Target, trio.Nursery]]:
    """An in-process target on free ports; everything started in the nursery ends with it."""
    target = Target(config(strict))
    async with trio.open_nursery() as nursery:
        await nursery.start(target.serve)
        try:
            yield target, nursery
        finally:
            nursery.cancel_scope.cancel()


def port_of(target: Target, port_id: int = 1) -> int:
    return target.ports[port_id].bound_port


async def healthy_controller(
    nursery: trio.Nursery, target: Target, port_id: int = 1, kato_ms: int = 5000
) -> HostController:
    return await connect_controller(
        nursery, HOST, port_of(target, port_id), DEMO_NQN,
        ControllerOptions(kato_ms=kato_ms, command_timeout=5),
    )  # fmt: skip


def pattern(n: int, seed: int) -> bytes:
    return bytes((i * 31 + seed) & 0xFF for i in range(n))


async def verified_io(ctrl: HostController, lba: int, seed: int, size: int = 4096) -> None:
    """Write then read back: in-capsule (<= 8 KiB) or R2T-driven above that."""
    data = pattern(size, seed)
    done = await ctrl.write(1, lba, data, 512)
    assert done.ok, done.status
    done, buf = await ctrl.read(1, lba, size // 512, 512)
    assert done.ok, done.status
    assert buf == data


async def read_until_closed(stream: trio.SocketStream) -> tuple[bytes, bool]:
    """Everything the target sends until it closes; (bytes, whether it was a reset)."""
    buf = bytearray()
    try:
        while data := await stream.receive_some(65536):
            buf += data
    except trio.BrokenResourceError:
        return bytes(buf), True
    return bytes(buf), False


def pdus_of(stream: bytes) -> list[bytes]:
    out, pos = [], 0
    while pos + 8 <= len(stream):
        plen = CH.unpack_from(stream, pos)[4]
        assert plen >= 8 and pos + plen <= len(stream), f"truncated PDU at {pos}"
        out.append(stream[pos : pos + plen])
        pos += plen
    assert pos == len(stream)
    return out


async def open_raw(target: Target, port_id: int = 1) -> trio.SocketStream:
    return await trio.open_tcp_stream(HOST, port_of(target, port_id))


async def raw_icreq(stream: trio.SocketStream) -> None:
    await stream.send_all(icreq())
    got = b""
    while len(got) < 128:
        chunk = await stream.receive_some(128 - len(got))
        assert chunk, "closed before ICResp"
        got += chunk
    assert got[:8] == bytes.fromhex("0100800080000000")


async def expect_term_req(stream: trio.SocketStream, fes: int, fei: int | None = None) -> bytes:
    """The target answers with a C2HTermReq (FES/FEI as given) and closes the connection."""
    data, _ = await read_until_closed(stream)
    pdus = pdus_of(data)
    assert pdus, "closed without a C2HTermReq"
    last = pdus[-1]
    assert last[0] == PduType.C2H_TERM_REQ
    got_fes, got_fei, echoed = term_req(last)
    assert got_fes == fes
    if fei is not None:
        assert got_fei == fei
    return echoed


# -- protocol garbage ------------------------------------------------------------------------


async def test_garbage_gets_term_req_while_healthy_controller_works() -> None:
    with trio.fail_after(10), target_errors() as errors:
        async with running_target() as (target, nursery):
            ctrl = await healthy_controller(nursery, target)
            await verified_io(ctrl, 0, 1)
            await verified_io(ctrl, 64, 2, size=64 * 1024)  # through R2T
            bad = await open_raw(target)
            await bad.send_all(b"\xff" * 64)
            echoed = await expect_term_req(bad, 0x01, 0)
            assert 8 <= len(echoed) <= 128 and echoed == b"\xff" * len(echoed)
            await bad.aclose()
            await verified_io(ctrl, 0, 3)
            await verified_io(ctrl, 64, 4, size=64 * 1024)
            assert not nursery.cancel_scope.cancel_called
    assert errors == []


async def test_malformed_capsule_after_icreq_gets_term_req() -> None:
    with trio.fail_after(10), target_errors() as errors:
        async with running_target() as (target, nursery):
            ctrl = await healthy_controller(nursery, target)
            await verified_io(ctrl, 0, 1)
            for bad_pdu, fes, fei in (
                (build_pdu(PduType.CAPSULE_CMD, sqe(0x18, 1), hlen=24), 0x01, 2),
                (build_pdu(PduType.CAPSULE_CMD, sqe(0x18, 1), hd=True), 0x01, 1),
                (build_pdu(PduType.CAPSULE_CMD, sqe(0x18, 1), plen=70), 0x01, 3),
                (icreq(), 0x02, None),
                (build_pdu(PduType.H2C_DATA, struct.pack("<HHII4x", 1, 9, 0, 4), b"abcd",
                           flags=4), 0x01, 10),
            ):  # fmt: skip
                stream = await open_raw(target)
                await raw_icreq(stream)
                await stream.send_all(bad_pdu)
                echoed = await expect_term_req(stream, fes, fei)
                assert bad_pdu.startswith(echoed[:8])
                await stream.aclose()
                await verified_io(ctrl, 8, fes)
            assert not nursery.cancel_scope.cancel_called
    assert errors == []


async def test_pdu_before_icreq_and_bad_icreq_get_term_req() -> None:
    with trio.fail_after(10), target_errors() as errors:
        async with running_target() as (target, _):
            for raw, fes, fei in (
                (build_pdu(PduType.CAPSULE_CMD, sqe(0x18, 1)), 0x02, None),
                (icreq(hpda=32), 0x06, 10),
                (icreq(pfv=1), 0x06, 8),
            ):
                stream = await open_raw(target)
                await stream.send_all(raw)
                await expect_term_req(stream, fes, fei)
                await stream.aclose()
    assert errors == []


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,
)
@given(
    prefix=st.sampled_from([b"", icreq(), icreq(digest_bits=3)]),
    garbage=st.binary(min_size=1, max_size=2048),
)
async def test_random_bytes_never_hurt_the_target(prefix: bytes, garbage: bytes) -> None:
    with trio.fail_after(10), target_errors() as errors:
        async with running_target() as (target, nursery):
            ctrl = await healthy_controller(nursery, target, kato_ms=0)
            await verified_io(ctrl, 0, 1)
            stream = await open_raw(target)
            await stream.send_all(prefix + garbage)
            await stream.send_eof()  # whatever it made of the bytes, the target must close
            data, _ = await read_until_closed(stream)
            await stream.aclose()
            pdus = pdus_of(data)
            allowed = {PduType.ICRESP, PduType.C2H_TERM_REQ, PduType.CAPSULE_RESP,
                       PduType.C2H_DATA, PduType.R2T}  # fmt: skip
            assert all(p[0] in allowed for p in pdus)
            if prefix:
                assert pdus and pdus[0][0] == PduType.ICRESP
            for i, p in enumerate(pdus):
                if p[0] == PduType.C2H_TERM_REQ:
                    term_req(p)
                    assert i == len(pdus) - 1  # nothing after a TermReq
            await verified_io(ctrl, 0, 2)
            assert not nursery.cancel_scope.cancel_called
            assert len(target.connections) == 2  # the healthy admin + I/O queues only
    assert errors == []


@pytest.mark.parametrize(("hd", "dd"), [(False, False), (True, False), (False, True), (True, True)])
async def test_large_io_with_digests(hd: bool, dd: bool) -> None:
    # Regression: a 1 MiB write (MDTS) streams eight 128 KiB H2CData PDUs; the framer's fixed
    # buffer used to overflow and the error escaped the connection task.
    with trio.fail_after(10), target_errors() as errors:
        async with running_target() as (target, nursery):
            ctrl = await connect_controller(
                nursery, HOST, port_of(target), DEMO_NQN,
                ControllerOptions(kato_ms=0, header_digest=hd, data_digest=dd, command_timeout=5),
            )  # fmt: skip
            for seed, size in ((1, 512), (2, 8192), (3, 64 * 1024), (4, 1 << 20)):
                await verified_io(ctrl, 0, seed, size=size)
    assert errors == []


async def test_sq_flow_control_disabled_reads_complete_by_success_flag() -> None:
    with trio.fail_after(10), target_errors() as errors:
        async with running_target() as (target, nursery):
            _, cntlid = await raw_admin(nursery, target, 0)
            io = await raw_queue(nursery, target, 1)
            cmd = CONNECT_COMMAND.build({"fctype": 1, "qid": 1, "sqsize": 7, "cattr": 1 << 2})
            data = connect_pair(1, cntlid=cntlid)[1]
            assert (await io.submit(cmd, write=data, timeout=5)).ok
            (served,) = [c for c in target.connections if c.qid == 1]
            assert served.sq_flow_control is False
            payload = pattern(4096, 9)
            assert (await io.submit(rw_sqe(0x01, 0, 1, 16, 8), write=payload, timeout=5)).ok
            buf = bytearray(4096)
            done = await io.submit(rw_sqe(0x02, 0, 1, 16, 8), read=buf, timeout=5)
            assert done == Completion(0, 0, 0) and buf == payload
            # A failed read still gets a real CapsuleResp with its status.
            done = await io.submit(
                rw_sqe(0x02, 0, 1, NS1_BLOCKS, 1), read=bytearray(512), timeout=5
            )
            assert status_of(done) == (0x080, True)
    assert errors == []


# -- commands that fail get NVMe statuses, not disconnects -------------------------------------


def status_of(done: Completion) -> tuple[int, bool]:
    """(kernel-style code (SCT << 8) | SC, DNR)."""
    return (done.status_word >> 1) & 0x7FF, bool(done.status_word & 0x8000)


async def test_bad_commands_get_nvme_statuses() -> None:
    with trio.fail_after(10), target_errors() as errors:
        async with running_target() as (target, nursery):
            ctrl = await healthy_controller(nursery, target)
            io = ctrl.io_queues[0]
            # Unknown admin opcode -> Invalid Opcode, DNR, More (logged at the opcode, as nvmet).
            done = await ctrl.admin.submit(sqe(0x7E), timeout=5)
            assert done.status_word == (0x001 << 1) | 0x8000 | 0x4000
            # Unknown I/O opcode -> Invalid Opcode, DNR, More.
            done = await io.submit(sqe(0x7E, nsid=1), timeout=5)
            assert done.status_word == 0xC002
            # Identify with an unsupported CNS -> Invalid Field, DNR.
            done = await ctrl.admin.submit(sqe(0x06, nsid=1, cdw={10: 0x42}),
                                           read=bytearray(4096), timeout=5)  # fmt: skip
            assert status_of(done) == (0x002, True)
            # Read beyond capacity -> LBA Out of Range, DNR.
            done, _ = await ctrl.read(1, NS1_BLOCKS - 1, 2, 512)
            assert done.status_word == 0xC100  # logged at SLBA: More
            assert status_of(done) == (0x080, True)
            # Write beyond capacity through R2T -> refused before any data moves.
            done = await ctrl.write(1, NS1_BLOCKS - 8, bytes(16384), 512)
            assert status_of(done) == (0x080, True)
            # I/O to an NSID that does not exist -> Invalid Namespace, DNR.
            done, _ = await ctrl.read(99, 0, 1, 512)
            assert status_of(done) == (0x00B, True)
            done = await ctrl.write(99, 0, bytes(512), 512)
            assert status_of(done) == (0x00B, True)
            # Get Log Page of an unsupported log -> Invalid Field (nvmet_execute_get_log_page).
            done = await ctrl.admin.submit(sqe(0x02, nsid=0xFFFFFFFF, cdw={10: 0x00FF_00C0}),
                                           read=bytearray(1024), timeout=5)  # fmt: skip
            assert status_of(done) == (0x002, True)
            # Read whose SGL length disagrees with NLB -> Data SGL Length Invalid.
            done = await io.submit(rw_sqe(0x02, 0, 1, 0, 1), read=bytearray(1024), timeout=5)
            assert status_of(done) == (0x00F, True)
            # A second Connect on a connected queue -> Command Sequence Error.
            connect = CONNECT_COMMAND.build({"fctype": 1, "qid": 0, "sqsize": 31})
            done = await ctrl.admin.submit(connect, write=bytes(1024), timeout=5)
            assert status_of(done)[0] == 0x00C
            # The connection carries on.
            await verified_io(ctrl, 0, 5)
            assert not ctrl.admin.closed and not io.closed
    assert errors == []


async def test_identify_unsupported_cns_without_nsid_is_invalid_field() -> None:
    with trio.fail_after(10):
        async with running_target() as (target, nursery):
            ctrl = await healthy_controller(nursery, target)
            done = await ctrl.admin.submit(sqe(0x06, nsid=0, cdw={10: 0x42}),
                                           read=bytearray(4096), timeout=5)  # fmt: skip
            assert status_of(done) == (0x002, True)


def connect_pair(qid: int, *, kato_ms: int = 0, cntlid: int = 0xFFFF,
                 hostnqn: str = LOCAL_HOSTNQN, sqsize: int = 31) -> tuple[bytes, bytes]:  # fmt: skip
    cmd = CONNECT_COMMAND.build({"fctype": 1, "qid": qid, "sqsize": sqsize, "kato": kato_ms})
    data = CONNECT_DATA.build({"hostid": bytes(range(16)), "cntlid": cntlid,
                               "subsysnqn": DEMO_NQN, "hostnqn": hostnqn})  # fmt: skip
    return cmd, data


async def raw_queue(nursery: trio.Nursery, target: Target, qid: int) -> HostQueue:
    queue = await HostQueue.connect(nursery, HOST, port_of(target), qid=qid, depth=8)
    queue.in_capsule_limit = 8192  # Connect data always goes in-capsule (docs/PROTOCOL.md §2.3)
    return queue


@pytest.mark.parametrize("strict", [False, True])
async def test_command_before_connect_is_invalid_opcode_then_the_queue_closes(
    strict: bool,
) -> None:
    # nvmet_parse_connect_cmd: Invalid Opcode; nvmet-tcp has a single command for a queue
    # until Connect succeeds, so the next capsule ends the connection.
    for command, read in (
        (sqe(0x06, cdw={10: 1}), bytearray(4096)),  # Identify Controller
        (sqe(0x18), None),  # Keep Alive
        (sqe(0x7F, fctype=0x04), None),  # Property Get CAP
        (rw_sqe(0x02, 0, 1, 0, 1), bytearray(512)),  # a Read
    ):
        with trio.fail_after(10), target_errors() as errors:
            async with running_target(strict) as (target, nursery):
                queue = await raw_queue(nursery, target, 0)
                done = await queue.submit(command, read=read, timeout=5)
                assert status_of(done) == (0x001, True), command[0]
                assert not done.status_word & 0x4000  # no controller: nothing logged
                cmd, data = connect_pair(0)
                with pytest.raises(Exception):  # noqa: B017, PT011 - closed, any error
                    await queue.submit(cmd, write=data, timeout=5)
        assert errors == []


async def test_io_connect_with_unknown_cntlid_is_invalid_parameters() -> None:
    with trio.fail_after(10), target_errors() as errors:
        async with running_target() as (target, nursery):
            ctrl = await healthy_controller(nursery, target)
            for cntlid, hostnqn in ((0x1234, ctrl.options.hostnqn), (ctrl.cntlid, LOCAL_HOSTNQN)):
                queue = await raw_queue(nursery, target, 1)
                cmd, data = connect_pair(1, cntlid=cntlid, hostnqn=hostnqn)
                done = await queue.submit(cmd, write=data, timeout=5)
                assert status_of(done) == (0x182, True)
                assert done.status_word == 0x8304
                assert done.dw0 == 16 | (1 << 16)  # IPO 16 (CNTLID), IATTR 1 (Connect data)
                await queue.aclose()
            await verified_io(ctrl, 0, 1)
    assert errors == []


async def test_aer_limit_is_a_status() -> None:
    with trio.fail_after(10), target_errors() as errors:
        async with running_target() as (target, nursery):
            ctrl = await healthy_controller(nursery, target)
            subsystem = target.state.subsystems[DEMO_NQN]
            aens: list[Completion] = []

            async def aer() -> None:
                aens.append(await ctrl.admin.submit(sqe(0x0C), timeout=8))

            for _ in range(4):  # AERL 3: four may be outstanding
                nursery.start_soon(aer)
            # Once the four tasks have queued their AERs, a fifth goes after them on the wire.
            await trio.testing.wait_all_tasks_blocked()
            assert ctrl.admin.outstanding == 4
            done = await ctrl.admin.submit(sqe(0x0C), timeout=5)
            assert status_of(done) == (0x105, True)  # Asynchronous Event Request Limit Exceeded
            assert aens == []
            assert subsystem.controllers[ctrl.cntlid].aen.outstanding == 4
            await verified_io(ctrl, 0, 1)
    assert errors == []


async def test_h2c_term_req_closes_the_connection_quietly() -> None:
    with trio.fail_after(10), target_errors() as errors:
        async with running_target() as (target, _):
            stream = await open_raw(target)
            await raw_icreq(stream)
            await stream.send_all(build_pdu(PduType.H2C_TERM_REQ, struct.pack("<HI10x", 1, 0)))
            data, _ = await read_until_closed(stream)
            assert data == b""  # no answer to a TermReq, just the close
            await stream.aclose()
    assert errors == []


# -- keep-alive timeout ---------------------------------------------------------------------


CC_ENABLE = PROPERTY_SET_COMMAND.build({"fctype": 0, "offset": 0x14, "value": 0x00460001})


async def raw_admin(
    nursery: trio.Nursery, target: Target, kato_ms: int, hostnqn: str = LOCAL_HOSTNQN
) -> tuple[HostQueue, int]:
    """An admin queue brought up by hand (Connect, CC.EN): no keep-alive task."""
    admin = await raw_queue(nursery, target, 0)
    cmd, data = connect_pair(0, kato_ms=kato_ms, hostnqn=hostnqn)
    done = await admin.submit(cmd, write=data, timeout=5)
    assert done.ok
    assert (await admin.submit(CC_ENABLE, timeout=5)).ok
    return admin, done.dw0 & 0xFFFF


async def test_keep_alive_timeout_closes_every_queue_of_the_controller() -> None:
    with trio.fail_after(10), target_errors() as errors, target_logs(logging.WARNING) as logs:
        async with running_target() as (target, nursery):
            subsystem = target.state.subsystems[DEMO_NQN]
            # A controller that keeps its association alive (Keep Alive every 0.5 s) ...
            healthy = await healthy_controller(nursery, target, kato_ms=1000)
            # ... one that never sends a Keep Alive: admin + one I/O queue by hand ...
            admin, cntlid = await raw_admin(nursery, target, 1000)
            closed = {0: trio.Event(), 1: trio.Event()}
            admin.on_close = lambda err: closed[0].set()
            io = await raw_queue(nursery, target, 1)
            io.on_close = lambda err: closed[1].set()
            cmd, data = connect_pair(1, cntlid=cntlid, sqsize=7)
            assert (await io.submit(cmd, write=data, timeout=5)).ok
            # ... and one that turned its timer off with Set Features KATO = 0.
            quiet, quiet_id = await raw_admin(nursery, target, 1000, hostnqn="nqn.test:quiet")
            done = await quiet.submit(sqe(0x09, cdw={10: 0x0F, 11: 0}), timeout=5)
            assert done.ok
            assert {cntlid, quiet_id, healthy.cntlid} <= set(subsystem.controllers)
            with trio.fail_after(3):  # KATO 1 s, generous bound
                await closed[0].wait()
                await closed[1].wait()
            assert cntlid not in subsystem.controllers
            assert any("keep-alive timeout" in r.getMessage() for r in logs)
            # The controller that sent Keep Alives lived through it.
            assert healthy.cntlid in subsystem.controllers
            await verified_io(healthy, 0, 7)
            # So did the one with KATO 0; a Keep Alive to it is now Keep Alive Timeout Invalid.
            assert quiet_id in subsystem.controllers and not quiet.closed
            done = await quiet.submit(sqe(0x18), timeout=5)
            assert status_of(done) == (0x01A, False)  # nvmet: no DNR
    assert errors == []


# -- ANA -------------------------------------------------------------------------------------


async def test_ana_inaccessible_fails_io_and_completes_the_aer() -> None:
    with trio.fail_after(10), target_errors() as errors:
        async with running_target() as (target, nursery):
            ctrl = await healthy_controller(nursery, target, port_id=1)
            other = await healthy_controller(nursery, target, port_id=2)
            await verified_io(ctrl, 0, 1)
            before = await ctrl.ana_log()
            group1 = {g.grpid: g for g in before.groups}[1]
            assert group1.state == AnaState.OPTIMIZED and 1 in group1.nsids

            await ctrl.set_features(FeatureId.ASYNC_EVENT, OAES_ANA_CHANGE)
            aer: list[Completion] = []
            aer_done = trio.Event()

            async def wait_for_aen() -> None:
                aer.append(await ctrl.admin.submit(sqe(0x0C), timeout=8))
                aer_done.set()

            nursery.start_soon(wait_for_aen)
            await trio.lowlevel.checkpoint()  # let the AER go out first

            notified = target.state.set_ana_state(1, 1, AnaState.INACCESSIBLE)
            assert [c.cntlid for c in notified] == [ctrl.cntlid]
            await aer_done.wait()
            assert aer[0].status_word == 0
            assert aer[0].dw0 == 0x000C0302

            done, _ = await ctrl.read(1, 0, 1, 512)
            assert done.status_word == 0x4604  # ANA Inaccessible, SCT 3, no DNR, More
            assert status_of(done) == (0x302, False)
            done = await ctrl.write(1, 0, bytes(512), 512)
            assert status_of(done) == (0x302, False)

            after = await ctrl.ana_log()
            assert after.chgcnt == before.chgcnt + 1
            group1 = {g.grpid: g for g in after.groups}[1]
            assert group1.state == AnaState.INACCESSIBLE
            assert group1.chgcnt == after.chgcnt

            # Port 2's path to the same group is unaffected.
            await verified_io(other, 0, 2)
            # Back to optimized: I/O on port 1 works again.
            target.state.set_ana_state(1, 1, AnaState.OPTIMIZED)
            await verified_io(ctrl, 0, 3)
    assert errors == []


# -- bugs ----------------------------------------------------------------------------------


def connect_via_r2t(cid: int, length: int) -> bytes:
    """A Connect capsule whose data is to come by R2T (SGL 0x5A) instead of in-capsule."""
    raw = bytearray(sqe(0x7F, cid, fctype=0x01, raw={44: 31}))
    struct.pack_into("<QI3xB", raw, 24, 0, length, 0x5A)
    return build_pdu(PduType.CAPSULE_CMD, bytes(raw))


async def test_second_command_before_connect_closes_the_queue() -> None:
    # Regression: the second request_data for a CID raised LocalProtocolError out of the
    # connection task. Now, as nvmet: the queue had one command before Connect, so the second
    # capsule ends the connection (after the first one's R2T).
    with trio.fail_after(10), target_errors() as errors:
        async with running_target() as (target, _):
            stream = await open_raw(target)
            await raw_icreq(stream)
            # Unauthenticated: two Connects with the same CID, data by R2T.
            await stream.send_all(connect_via_r2t(5, 1024) * 2)
            await stream.send_eof()
            data, _ = await read_until_closed(stream)
            await stream.aclose()
    pdus = pdus_of(data)
    assert [p[0] for p in pdus] == [PduType.R2T]
    assert struct.unpack_from("<HH", pdus[0], 8)[0] == 5 and pdus[0][16:20] == b"\0\4\0\0"
    assert errors == []


async def test_oversized_connect_data_is_refused_without_r2t() -> None:
    with trio.fail_after(10), target_errors():
        async with running_target() as (target, _):
            stream = await open_raw(target)
            await raw_icreq(stream)
            await stream.send_all(connect_via_r2t(5, 8 << 20))  # 8 MiB "Connect data"
            await stream.send_eof()
            data, _ = await read_until_closed(stream)
            await stream.aclose()
    pdus = pdus_of(data)
    assert [p[0] for p in pdus] == [PduType.CAPSULE_RESP]
    assert pdus[0][22:24] != b"\0\0"


async def test_get_log_page_above_mdts_is_invalid_field() -> None:
    with trio.fail_after(10):
        async with running_target() as (target, nursery):
            ctrl = await healthy_controller(nursery, target)
            length = 2 << 20  # MDTS 8 -> 1 MiB maximum
            numd = length // 4 - 1
            cdw10 = 0x0C | (numd & 0xFFFF) << 16  # ANA log
            command = sqe(0x02, nsid=0xFFFFFFFF, cdw={10: cdw10, 11: numd >> 16})
            done = await ctrl.admin.submit(command, read=bytearray(length), timeout=5)
            assert status_of(done) == (0x002, True)


async def test_identify_with_oversized_buffer_is_refused() -> None:
    with trio.fail_after(10):
        async with running_target() as (target, nursery):
            ctrl = await healthy_controller(nursery, target)
            command = sqe(0x06, cdw={10: 0x01})  # Identify Controller
            done = await ctrl.admin.submit(command, read=bytearray(8192), timeout=5)
            assert status_of(done) == (0x00F, True)
            assert not ctrl.admin.closed
