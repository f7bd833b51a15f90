"""Reservations over real TCP: two hosts (different Host IDs) on two ports, raw reservation
commands, the statuses nvmet answers (More bit where nvmet logs a location), notifications
with their AEN, features 0x82/0x83, Identify, preempt-and-abort of a held write, survival of
a reconnect, and PTPL through a restart on the same file."""

from __future__ import annotations

import uuid
from dataclasses import replace
from pathlib import Path

import trio

from initiator.controller import HostController
from nvmeof.constants import AdminOpcode, Cns, FeatureId, IoOpcode, LogPage
from nvmeof.status import StatusCode
from nvmeof.wire.identify import parse_identify_ctrl, parse_identify_ns
from nvmeof.wire.reservations import (
    ONCS_RESERVATIONS,
    ReservationType,
    acquire_cdw10,
    build_acquire_data,
    parse_notification_log,
)
from target.config import NamespaceConfig, PortConfig, SubsystemConfig, TargetConfig
from tests.resv_commands import (
    CONFLICT,
    DNR,
    MORE,
    acquire,
    read_status,
    register,
    report,
    sqe,
    word,
    write_status,
)

NQN = "nqn.2026-12.io.nvmeof-emu:resv"
HOST_A = "nqn.2014-08.org.nvmexpress:uuid:aaaaaaaa-0000-4000-8000-00000000000a"
HOST_B = "nqn.2014-08.org.nvmexpress:uuid:bbbbbbbb-0000-4000-8000-00000000000b"
KEY_A, KEY_B = 0xA1, 0xB2
INVALID = StatusCode.INVALID_FIELD << 1
AEN_RESERVATION = 0x00800006  # type 6 (I/O command specific), info 0, log page 0x80


def resv_config(tmp_path: Path | None = None, *, reservations: bool = True) -> TargetConfig:
    if tmp_path is None:
        ns = NamespaceConfig(nsid=1, size=4 << 20, reservations=reservations)
    else:
        ns = NamespaceConfig(nsid=1, size=4 << 20, backend="file", path=str(tmp_path / "ns.img"))
    sub = SubsystemConfig(nqn=NQN, namespaces=(ns, NamespaceConfig(nsid=2, size=1 << 20)))
    ports = (
        PortConfig(id=1, port=0, subsystems=(NQN,)),
        PortConfig(id=2, port=0, subsystems=(NQN,)),
    )
    return TargetConfig(subsystems=(sub,), ports=ports)


async def two_hosts(lb):  # type: ignore[no-untyped-def]
    a = await lb.connect(1, NQN, hostnqn=HOST_A)
    b = await lb.connect(2, NQN, hostnqn=HOST_B)
    return a, b


async def test_two_hosts_register_acquire_conflict_report(start_target) -> None:  # type: ignore[no-untyped-def]
    lb = await start_target(resv_config())
    with trio.fail_after(20):
        a, b = await two_hosts(lb)
        assert await register(a, nrkey=KEY_A) == 0
        assert await register(b, nrkey=KEY_B) == 0
        assert await register(b, nrkey=KEY_A) == CONFLICT  # registered with another key
        assert await acquire(a, 0, ReservationType.WRITE_EXCLUSIVE, KEY_A) == 0
        assert await write_status(b) == CONFLICT | MORE  # refused at parse, logged at the opcode
        assert await read_status(b) == 0
        assert await write_status(b, nsid=2) == 0  # another namespace: no reservation there
        assert await write_status(a) == 0
        status = await report(a)
        assert (status.rtype, status.regctl, status.gen) == (1, 2, 2)
        holders = {r.hostid: r.holds for r in status.registrants}
        assert holders == {a.options.hostid: True, b.options.hostid: False}
        assert {r.cntlid for r in status.registrants} == {0xFFFF}  # dynamic controllers
        # EDS = 0: the Host ID is 128 bits over Fabrics (spec; nvmet; SPDK)
        no_eds, _ = await word(a, sqe(IoOpcode.RESERVATION_REPORT, 1023, 0), read=4096)
        assert no_eds == DNR | MORE | (StatusCode.HOST_ID_INCONSIST << 1)
        short, _ = await word(a, sqe(IoOpcode.RESERVATION_REPORT, 14, 1), read=60)
        assert short == DNR | MORE | (StatusCode.INVALID_FIELD << 1)  # less than the header
        truncated = await report(a, length=64 + 64)
        assert truncated.regctl == 2 and len(truncated.registrants) == 1
        # short data: nvmet_copy_from_sgl fails (Data SGL Length Invalid at DPTR)
        short_data, _ = await word(b, sqe(IoOpcode.RESERVATION_REGISTER), write=b"\0" * 8)
        assert short_data == DNR | MORE | (StatusCode.SGL_INVALID_DATA << 1)
        iekey, _ = await word(b, sqe(IoOpcode.RESERVATION_ACQUIRE, acquire_cdw10(0, 1, iekey=True)),
                              write=build_acquire_data(KEY_B))  # fmt: skip
        assert iekey == DNR | (StatusCode.INVALID_FIELD << 1)


async def test_notifications_reach_every_controller_of_the_host(start_target) -> None:  # type: ignore[no-untyped-def]
    lb = await start_target(resv_config())
    with trio.fail_after(20):
        a, b = await two_hosts(lb)
        a2 = await lb.connect(2, NQN, hostnqn=HOST_A)  # host A's second path
        for ctrl, key in ((a, KEY_A), (b, KEY_B)):
            assert await register(ctrl, nrkey=key) == 0
        assert await acquire(a, 0, ReservationType.EXCLUSIVE_ACCESS_REG_ONLY, KEY_A) == 0
        results: dict[int, int] = {}

        async def wait_aer(ctrl: HostController) -> None:
            done = await ctrl.admin.submit(sqe(AdminOpcode.ASYNC_EVENT_REQUEST, nsid=0),
                                           timeout=float("inf"))  # fmt: skip
            results[ctrl.cntlid] = done.dw0

        async with trio.open_nursery() as nursery:
            for ctrl in (a, a2):
                nursery.start_soon(wait_aer, ctrl)
            await trio.sleep(0.1)
            # B preempts A: both of A's controllers hear "registration preempted"
            assert await acquire(b, 1, ReservationType.WRITE_EXCLUSIVE, KEY_B, KEY_A) == 0
        assert results == {a.cntlid: AEN_RESERVATION, a2.cntlid: AEN_RESERVATION}
        for ctrl in (a, a2):
            page = await ctrl.get_log_page(LogPage.RESERVATION, 64)
            note = parse_notification_log(page)
            assert (note.type, note.nsid, note.nr_pages) == (1, 1, 0)
            assert (
                parse_notification_log(await ctrl.get_log_page(LogPage.RESERVATION, 64)).type == 0
            )
        assert await write_status(a) == CONFLICT | MORE  # A was removed: not a registrant
        # features: the mask masks; persistence can't be set on RAM
        mask = sqe(AdminOpcode.SET_FEATURES, FeatureId.RESERVATION_MASK, 0b1110)
        assert (await b.admin.submit(mask, timeout=5)).status_word & ~1 == 0
        get = sqe(AdminOpcode.GET_FEATURES, FeatureId.RESERVATION_MASK)
        assert (await b.admin.submit(get, timeout=5)).dw0 == 0b1110
        bad = sqe(AdminOpcode.SET_FEATURES, FeatureId.RESERVATION_MASK, 1)
        assert (await b.admin.submit(bad, timeout=5)).status_word & ~1 == DNR | MORE | INVALID
        ptpl = sqe(AdminOpcode.SET_FEATURES, FeatureId.RESERVATION_PERSIST, 1)
        assert (await b.admin.submit(ptpl, timeout=5)).status_word & ~1 == DNR | MORE | INVALID
        get = sqe(AdminOpcode.GET_FEATURES, FeatureId.RESERVATION_PERSIST)
        assert (await b.admin.submit(get, timeout=5)).dw0 == 0


async def test_identify_and_disabled_namespaces(start_target) -> None:  # type: ignore[no-untyped-def]
    lb = await start_target(resv_config(reservations=False))
    with trio.fail_after(20):
        a = await lb.connect(1, NQN, hostnqn=HOST_A)
        ctrl_id = parse_identify_ctrl(await a.identify_raw(Cns.CONTROLLER))
        assert ctrl_id.oncs & ONCS_RESERVATIONS  # namespace 2 serves them
        assert ctrl_id.ctratt & 1  # 128-bit Host IDs: Report needs EDS
        assert parse_identify_ns(await a.identify_raw(Cns.NAMESPACE, 1)).rescap == 0
        assert parse_identify_ns(await a.identify_raw(Cns.NAMESPACE, 2)).rescap == 0xFE
        status, _ = await word(a, sqe(IoOpcode.RESERVATION_REGISTER), write=bytes(16))
        assert status == DNR | MORE | (
            StatusCode.INVALID_OPCODE << 1
        )  # as nvmet without resv_enable
        assert await register(a, nrkey=1) != 0
        status, _ = await word(a, sqe(IoOpcode.RESERVATION_REGISTER, nsid=2), write=bytes(16))
        assert status == 0


async def test_reservation_survives_reconnect_and_reset(start_target) -> None:  # type: ignore[no-untyped-def]
    lb = await start_target(resv_config())
    with trio.fail_after(20):
        a, b = await two_hosts(lb)
        assert await register(a, nrkey=KEY_A) == 0
        assert await acquire(a, 0, ReservationType.EXCLUSIVE_ACCESS, KEY_A) == 0
        await a.shutdown()
        a = await lb.connect(2, NQN, hostnqn=HOST_A)  # the same host, the other path
        assert await read_status(b) == CONFLICT | MORE
        assert await write_status(a) == 0
        assert (await report(b)).registrants[0].holds


async def test_preempt_and_abort_aborts_a_held_write(start_target) -> None:  # type: ignore[no-untyped-def]
    lb = await start_target(resv_config())
    with trio.fail_after(20):
        a, b = await two_hosts(lb)
        for ctrl, key in ((a, KEY_A), (b, KEY_B)):
            assert await register(ctrl, nrkey=key) == 0
        assert await acquire(a, 0, ReservationType.WRITE_EXCLUSIVE, KEY_A) == 0
        # the write is held before it runs (a ghost write on a live connection)
        lb.target.fault_add({"action": "ghost-write", "delay_ms": 500, "port": 1, "opcode": 1,
                             "count": 1})  # fmt: skip
        outcome: list[int] = []

        async def stale_write() -> None:
            outcome.append((await a.write(1, 8, b"S" * 512, 512)).status_word & ~1)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(stale_write)
            await trio.sleep(0.1)  # A's write is held by the fault
            assert await acquire(b, 2, ReservationType.WRITE_EXCLUSIVE, KEY_B, KEY_A) == 0
            assert (await b.write(1, 8, b"N" * 512, 512)).status_word & ~1 == 0
        assert outcome == [DNR | (StatusCode.ABORTED_PREEMPT_ABORT << 1)]
        _, data = await b.read(1, 8, 1, 512)
        assert bytes(data) == b"N" * 512  # the stale write never landed
        assert await write_status(a) == CONFLICT | MORE  # and A's next write conflicts


async def test_ptpl_survives_a_restart_on_the_same_file(start_target, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    config = resv_config(tmp_path)
    with trio.fail_after(30):
        async with trio.open_nursery() as serve:
            lb = await start_target(config, serve_in=serve)
            a, b = await two_hosts(lb)
            host_a = a.options.hostid
            assert await register(a, nrkey=KEY_A, cptpl=3) == 0  # persist through power loss
            assert await register(b, nrkey=KEY_B) == 0
            assert await acquire(a, 0, ReservationType.WRITE_EXCLUSIVE_REG_ONLY, KEY_A) == 0
            sidecar = tmp_path / "ns.img.reservations.json"
            assert sidecar.exists()
            ident = parse_identify_ns(await a.identify_raw(Cns.NAMESPACE, 1))
            assert ident.rescap == 0xFF  # PTPL possible on a file namespace
            await a.shutdown()
            await b.shutdown()
            lb.target.stop()
        lb2 = await start_target(replace(config))
        c = await lb2.connect(
            1, NQN, hostnqn="nqn.2014-08.org.nvmexpress:uuid:" + str(uuid.uuid4())
        )
        status = await report(c)
        assert status.ptpls and status.rtype == ReservationType.WRITE_EXCLUSIVE_REG_ONLY
        first = status.registrants[0]
        assert (first.hostid, first.rkey, first.holds) == (host_a, KEY_A, True)
        assert status.regctl == 2
        assert await write_status(c) == CONFLICT | MORE
        # PTPL cleared: the file goes, and a restart forgets
        a = await lb2.connect(1, NQN, hostnqn=HOST_A)
        assert await register(a, 0, 0, KEY_A, cptpl=2) == 0
        assert not sidecar.exists()


async def test_strict_port_refuses_cptpl_it_cannot_honour(start_target) -> None:  # type: ignore[no-untyped-def]
    config = resv_config()
    strict_ports = tuple(replace(p, strict=True) for p in config.ports)
    lb = await start_target(replace(config, ports=strict_ports))
    with trio.fail_after(20):
        a = await lb.connect(1, NQN, hostnqn=HOST_A)
        invalid = DNR | MORE | (StatusCode.INVALID_FIELD << 1)
        assert await register(a, nrkey=KEY_A, cptpl=3) == invalid  # RAM cannot persist
        assert await register(a, nrkey=KEY_A, cptpl=1) == invalid  # reserved
        assert await register(a, nrkey=KEY_A, cptpl=2) == 0
