"""What a completion promises about the data (docs/DURABILITY.md), shown on a real target over
loopback: a completed write is in the backing file (read with os.pread, before anything else
happens), a Flush or a FUA write has run fdatasync before it completes, ``sync = "always"``
syncs every write, ``sync = "none"`` never; RAM namespaces say they are volatile. Then a real
power cycle (SIGKILL, start again on the same files): the same identifiers, and the data that
was flushed."""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Any

import pytest
import trio

from initiator.controller import ControllerOptions, HostController, connect_controller
from nvmeof.constants import Cns, IoOpcode
from nvmeof.wire.fast import RW_TAIL, RW_TAIL_OFFSET
from nvmeof.wire.sqe import RW_CONTROL_FUA
from nvmeof_emu import TargetProcess
from target.config import NamespaceConfig, PortConfig, SubsystemConfig, TargetConfig
from tests.integration.conftest import Loopback, StartTarget

NQN = "nqn.2026-11.io.nvmeof-emu:durability"
BLOCK = 4096


def pattern(seed: str, size: int = BLOCK) -> bytes:
    blocks = (hashlib.sha256(f"{seed}/{i}".encode()).digest() for i in range(size // 32 + 1))
    return b"".join(blocks)[:size]


def file_config(tmp_path: Path, *syncs: str) -> TargetConfig:
    """One file namespace per sync mode (NSID 1, 2, ...), plus a RAM one after them."""
    spaces = [NamespaceConfig(nsid=i, size=1 << 20, block_size=BLOCK, backend="file",
                              path=str(tmp_path / f"ns{i}.img"), sync=sync)
              for i, sync in enumerate(syncs, start=1)]  # fmt: skip
    spaces.append(NamespaceConfig(nsid=len(syncs) + 1, size=1 << 20))
    sub = SubsystemConfig(nqn=NQN, namespaces=tuple(spaces))
    return TargetConfig(subsystems=(sub,), ports=(PortConfig(id=1, port=0, subsystems=(NQN,)),))


class SyncSpy:
    """Counts os.fdatasync calls per file (by inode: the backend's descriptor is its own)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[int] = []
        real = os.fdatasync

        def spy(fd: int) -> None:
            real(fd)
            self.calls.append(os.fstat(fd).st_ino)

        monkeypatch.setattr(os, "fdatasync", spy)

    def count(self, path: Path) -> int:
        inode = path.stat().st_ino
        return sum(1 for call in self.calls if call == inode)


async def write(ctrl: HostController, nsid: int, slba: int, data: bytes, fua: bool = False) -> int:
    """One Write (FUA when asked); its status (0: success)."""
    sqe = bytearray(64)
    sqe[0] = IoOpcode.WRITE
    sqe[4:8] = nsid.to_bytes(4, "little")
    control = RW_CONTROL_FUA if fua else 0
    RW_TAIL.pack_into(sqe, RW_TAIL_OFFSET, slba, len(data) // BLOCK - 1, control, 0, 0, 0, 0)
    done = await ctrl.io_queues[0].submit(sqe, write=data, timeout=10)
    return done.status_word & 0xFFFE


async def flush(ctrl: HostController, nsid: int) -> int:
    return (await ctrl.io(IoOpcode.FLUSH, nsid, 0, 1)).status_word & 0xFFFE


async def started(start_target: StartTarget, config: TargetConfig) -> tuple[Loopback, Any]:
    lb = await start_target(config)
    return lb, await lb.connect(1, NQN, io_queues=1)


async def test_a_completed_write_is_in_the_file_before_anything_else_happens(
    start_target: StartTarget, tmp_path: Path
) -> None:
    with trio.fail_after(10):
        _, ctrl = await started(start_target, file_config(tmp_path, "flush", "none"))
        for nsid in (1, 2):
            fd = os.open(tmp_path / f"ns{nsid}.img", os.O_RDONLY)
            try:
                for slba in range(8):
                    data = pattern(f"{nsid}/{slba}")
                    assert await write(ctrl, nsid, slba, data) == 0
                    # no await between the completion and the read: the pwrite was done first
                    assert os.pread(fd, BLOCK, slba * BLOCK) == data
            finally:
                os.close(fd)


async def test_flush_and_fua_run_fdatasync_before_they_complete_plain_writes_do_not(
    start_target: StartTarget, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = SyncSpy(monkeypatch)
    image = tmp_path / "ns1.img"
    with trio.fail_after(10):
        _, ctrl = await started(start_target, file_config(tmp_path, "flush"))
        for slba in range(4):
            assert await write(ctrl, 1, slba, pattern(str(slba))) == 0
        assert spy.count(image) == 0  # buffered: in the page cache, as nvmet's buffered_io
        assert await flush(ctrl, 1) == 0
        assert spy.count(image) == 1  # counted when the completion arrives: it ran before
        assert await write(ctrl, 1, 9, pattern("fua"), fua=True) == 0
        assert spy.count(image) == 2


async def test_sync_always_syncs_every_write_and_none_never_syncs(
    start_target: StartTarget, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = SyncSpy(monkeypatch)
    always, never = tmp_path / "ns1.img", tmp_path / "ns2.img"
    with trio.fail_after(10):
        _, ctrl = await started(start_target, file_config(tmp_path, "always", "none"))
        for written in range(1, 4):
            assert await write(ctrl, 1, written, pattern(str(written))) == 0
            assert spy.count(always) == written
        assert (await ctrl.io(IoOpcode.WRITE_ZEROES, 1, 0, 2)).ok
        assert spy.count(always) == 4
        assert await flush(ctrl, 1) == 0  # nothing left to sync, and it still does
        assert spy.count(always) == 5
        assert await write(ctrl, 2, 0, pattern("fast"), fua=True) == 0
        assert await flush(ctrl, 2) == 0
        assert spy.count(never) == 0


async def test_each_namespace_says_what_its_data_survives(
    start_target: StartTarget, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="nvmeof.target")
    lb = await start_target(file_config(tmp_path, "flush", "none"))
    lines = {(r.levelno, r.getMessage()) for r in caplog.records}
    where = f"namespace subsystem={NQN} nsid="
    assert (logging.INFO, f"{where}3 backend=ram volatile: lost when the target stops") in lines
    assert (logging.INFO, f"{where}1 backend=file path={tmp_path / 'ns1.img'} sync=flush") in lines
    unsafe = [m for level, m in lines if level == logging.WARNING and f"{where}2 " in m]
    assert len(unsafe) == 1 and "sync=none" in unsafe[0] and "unsafe" in unsafe[0]
    status = lb.target.status()["subsystems"][0]["namespaces"]
    assert [n["durability"] for n in status] == ["sync=flush", "sync=none", "volatile"]


# -- a power cycle: the daemon SIGKILLed and started again on the same files ------------------


def power_cycle_config(tmp_path: Path) -> dict[str, Any]:
    return {
        "subsystem": [{"nqn": NQN, "namespace": [
            {"nsid": 1, "size": "4MiB", "block_size": BLOCK, "backend": "file",
             "path": str(tmp_path / "ns1.img")},
        ]}],
        "port": [{"id": 1, "addr": "127.0.0.1", "port": 0, "subsystems": [NQN]}],
    }  # fmt: skip


async def identity(ctrl: HostController) -> tuple[bytes, bytes]:
    """Identify Namespace and the namespace identification descriptors, as read."""
    return bytes(await ctrl.identify_raw(Cns.NAMESPACE, 1)), bytes(
        await ctrl.identify_raw(Cns.NS_DESC_LIST, 1)
    )


async def test_a_power_cycle_keeps_identifiers_and_flushed_data(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    options = ControllerOptions(io_queues=1, reconnect_delay=0.2, command_timeout=10)
    with TargetProcess(
        power_cycle_config(tmp_path), workdir=tmp_path / "run", pcap=False
    ) as target:
        with trio.fail_after(60):
            ctrl = await connect_controller(nursery, *target.ports[1], NQN, options)
            before = await identity(ctrl)
            data = pattern("before the power cycle", 16 * BLOCK)
            assert await write(ctrl, 1, 100, data) == 0
            assert await flush(ctrl, 1) == 0
            target.power_cycle()  # SIGKILL: no shutdown path runs
            ctrl = await connect_controller(nursery, *target.ports[1], NQN, options)
            assert await identity(ctrl) == before
            done, back = await ctrl.read(1, 100, 16, BLOCK)
            assert done.ok and back == data
