"""Persist Through Power Loss, with a real crash: the target daemon (a subprocess) is SIGKILLed
after the host's reservation commands were acknowledged, then started again on the same
backing file. Registrations and the reservation made with PTPL are back; without PTPL they are
gone, as the spec says of a power loss."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio

from initiator.controller import ControllerOptions, HostController, connect_controller
from nvmeof.wire.reservations import ReservationType
from nvmeof_emu import TargetProcess
from tests.resv_commands import CONFLICT, MORE, acquire, register, report, write_status

NQN = "nqn.2026-12.io.nvmeof-emu:ptpl"
HOST_A = "nqn.2014-08.org.nvmexpress:uuid:aaaaaaaa-1111-4000-8000-00000000000a"
HOST_B = "nqn.2014-08.org.nvmexpress:uuid:bbbbbbbb-1111-4000-8000-00000000000b"
OTHER = "nqn.2014-08.org.nvmexpress:uuid:cccccccc-1111-4000-8000-00000000000c"


def config(tmp_path: Path) -> dict[str, Any]:
    return {
        "subsystem": [{"nqn": NQN, "namespace": [
            {"nsid": 1, "size": "8MiB", "backend": "file", "path": str(tmp_path / "ns1.img")},
            {"nsid": 2, "size": "8MiB", "backend": "file", "path": str(tmp_path / "ns2.img")},
        ]}],
        "port": [{"id": 1, "addr": "127.0.0.1", "port": 0, "subsystems": [NQN]}],
    }  # fmt: skip


async def connect(nursery: trio.Nursery, target: TargetProcess, hostnqn: str) -> HostController:
    addr, port = target.ports[1]
    options = ControllerOptions(hostnqn=hostnqn, io_queues=1, reconnect_delay=0.2)
    return await connect_controller(nursery, addr, port, NQN, options)


async def test_registrations_with_ptpl_survive_sigkill(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    with TargetProcess(config(tmp_path), workdir=tmp_path / "run", pcap=False) as target:
        with trio.fail_after(30):
            a = await connect(nursery, target, HOST_A)
            b = await connect(nursery, target, HOST_B)
            # namespace 1 persists (CPTPL 11b), namespace 2 does not
            assert await register(a, nrkey=0xA1, cptpl=3) == 0
            assert await register(b, nrkey=0xB2) == 0
            assert await acquire(a, 0, ReservationType.EXCLUSIVE_ACCESS, 0xA1) == 0
            assert await register(a, 2, 0xA1, 0xA2) == 0  # replace: the last acknowledged key
            for ctrl, key in ((a, 0xA1), (b, 0xB2)):
                assert await register(ctrl, nrkey=key, nsid=2) == 0
            before = await report(a)
            target.power_cycle()  # SIGKILL (no shutdown path runs), start on the same files

            c = await connect(nursery, target, OTHER)
            after = await report(c)
            assert after.ptpls and after.rtype == ReservationType.EXCLUSIVE_ACCESS
            assert after.registrants == before.registrants and after.gen == before.gen
            assert after.registrants[0].rkey == 0xA2 and after.registrants[0].holds
            assert await write_status(c) == CONFLICT | MORE  # the reservation still fences
            forgotten = await report(c, nsid=2)
            assert forgotten.regctl == 0 and forgotten.rtype == 0  # no PTPL: a power loss forgets
    assert (tmp_path / "ns1.img.reservations.json").exists()
    assert not (tmp_path / "ns2.img.reservations.json").exists()
