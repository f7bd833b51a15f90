"""Nothing acknowledged is ever lost (issue 13), by the method used on real storage against
power cuts: fio's verify state (``--verify_state_save`` / ``--verify_only
--verify_state_load=1``) on the Linux kernel's NVMe/TCP host (../shared/linuxvm: Linux 6.1,
fio 3.33), with nvmeof-target's process SIGKILLed under the I/O.

The target is a subprocess (``nvmeof_emu.TargetProcess``): one subsystem, one file-backed
namespace (a sparse file, 128 MiB per cycle), one port advertised as the guest sees the host.
The guest (tests/interop/guest/crash_fio.sh) connects once (keep-alive 2 s, reconnect delay
1 s, ctrl-loss-tmo 300 s) and runs ``NVMEOF_CRASH_KILLS`` cycles (default 3) in one boot. Each
cycle: fio writes 4 KiB random blocks with crc32c verify headers into the cycle's own 128 MiB
slice, never written before, with its own ``--randseed``; once the target's written-bytes
counter moves (fio is writing), the test waits a random delay and SIGKILLs the target, starting it again at once on the same file and ports
(:meth:`~nvmeof_emu.TargetProcess.power_cycle`); the kernel keeps fio's I/O queued and re-sends
what was in flight once it has reconnected; two seconds later the guest stops fio with SIGTERM
(fio completes what is in flight and saves its state) and runs ``fio --verify_only
--verify_state_load=1``, the same job, which reads back what that run saw complete, in issue
order (why fio rides the outage rather than dying on EIO, and why a fresh slice per cycle:
see the guest script; in short, fio 3.33 cannot tell a lost write from an older fio block at
the same offset in a write-only job).

The delays and fio's seeds come from one seeded RNG: ``NVMEOF_CRASH_SEED`` (else a random
one); the seed is printed and in the figures, so a failing schedule can be run again.

Asserted per cycle: writes were reaching the target when it was killed, and at least one of
fio's writes was outstanding across the kill (its longest completion latency is at least the
kernel's reconnect delay, 1 s, which any write caught by the kill waits for); a new target
process started on the same port; the host reconnected (the guest saw its controller live again, and
the new process has a controller with I/O queues and received writes); the verify-only pass
exited 0 with fio error 0, no verify failure line, and read back every write of the run but
at most one queue depth (fio keeps the last ``iodepth`` completions: verification of the
newest writes stops at the first one not among them).

Then a negative control, proving the check is real: the guest names the first block the last
cycle wrote (its iolog); the test stops the target, puts that block back to what it held
before the last cycle, zeros (what a lost acknowledged write leaves in a fresh slice), and
starts it again; the same verify-only pass must now fail, at that offset.

One VM boot: about 90 s for 3 kills on bookworm under TCG, 6 minutes for 20. Trixie
(``LINUXVM_RELEASE=trixie``: Linux 6.12, fio 3.39) passes the same test, 3 kills in 75 s.
"""

from __future__ import annotations

import faulthandler
import os
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trio
from interop_harness import FIO_VERIFY_FAILURE, GUEST_DIR, GUEST_HOST_IP, LinuxVM, StreamingVM

from nvmeof_emu import TargetProcess

pytestmark = pytest.mark.interop

NQN = "nqn.2026-12.io.nvmeof-emu:crash"
KILLS = int(os.environ.get("NVMEOF_CRASH_KILLS", "3"))
SLICE_MIB = 128  # per cycle: far more than a cycle writes (fio must not fill it)
RATE_IOPS = 1000  # fio's write cap: under TCG it does ~300; under KVM a cycle would fill its slice
BS = 4096
IODEPTH = 16
RECONNECT_DELAY = 1.0  # s, `nvme connect -c`
CONNECT_ARGS = "-k 2 -c 1 -l 300"  # keep-alive 2 s, reconnect delay 1 s, ctrl-loss-tmo 300 s
KILL_DELAY = (0.0, 4.0)  # s after fio's writes reach the target
BOOT_TIMEOUT = 180.0  # s from `run` until the first cycle's fio starts
WRITING_TIMEOUT = 30.0  # s from a cycle's start until its writes reach the target
LIVE_TIMEOUT = 90.0  # s from the restart until the guest sees its controller live
VERIFY_TIMEOUT = 180.0  # s from then until the verify-only pass has ended
CYCLE_TIMEOUT = 60.0  # s from one cycle's verify until the next one starts
RECONNECT_TIMEOUT = 30.0  # s for the new process to show the host's controller
VM_TIMEOUT = int(BOOT_TIMEOUT + 120 * (KILLS + 1) + 60)
END_TIMEOUT = 120.0

WRITTEN = "nvmeof_target_written_bytes_total"
INFLIGHT = "nvmeof_target_inflight_commands"


def crash_config(image: Path) -> dict[str, Any]:
    return {
        "subsystem": [{"nqn": NQN, "allow_any_host": True,
                       "namespace": [{"nsid": 1, "size": f"{SLICE_MIB * KILLS}MiB",
                                      "block_size": 512,
                                      "backend": "file", "path": str(image)}]}],
        "port": [{"id": 1, "port": 0, "advertise": GUEST_HOST_IP, "subsystems": [NQN]}],
    }  # fmt: skip


@dataclass
class Cycle:
    n: int
    delay: float  # s from fio writing until the kill
    fio_seed: int
    writing_after: float = 0.0  # s from CRASH-START until the target saw writes
    inflight_at_kill: int = 0  # commands inside the target just before the kill (a glimpse)
    restart: float = 0.0  # s the SIGKILL and the new start took
    live_after: float = 0.0  # s from the new start until the guest saw the controller live
    pids: tuple[int, int] = (0, 0)
    written_new: float = 0.0  # bytes the new process wrote (post-restart and re-sent I/O)
    notes: list[str] = field(default_factory=list)


async def metric(target: TargetProcess, name: str) -> float:
    async with target.async_client() as client:
        return (await client.metrics()).value(name)


async def host_controllers(target: TargetProcess) -> int:
    """Controllers of NQN with an I/O queue on the (new) process."""
    async with target.async_client() as client:
        for sub in (await client.status())["subsystems"]:
            if sub["nqn"] == NQN:
                return sum(1 for c in sub["controllers"] if len(c["queues"]) > 1)
    return 0


async def wait_writing(target: TargetProcess, vm: StreamingVM, cycle: int) -> None:
    """Until the target's written-bytes counter moves: fio's writes arrive."""
    start = await metric(target, WRITTEN)
    with trio.move_on_after(WRITING_TIMEOUT):
        while await metric(target, WRITTEN) == start:
            if vm.exited.is_set() or f"CRASH-DOWN-{cycle}" in vm.markers:
                pytest.fail(f"cycle {cycle}: the guest ended fio before any write arrived:\n"
                            f"{vm.context()}")  # fmt: skip
            await trio.sleep(0.05)
        return
    pytest.fail(f"cycle {cycle}: no write reached the target within {WRITING_TIMEOUT:g} s "
                f"of fio's start:\n{vm.context()}")  # fmt: skip


def lose_block(image: Path, offset: int) -> bytes:
    """Zero the block at ``offset`` (the target stopped): what it held before the last cycle,
    which wrote it. Returns what it held."""
    with image.open("r+b") as handle:
        handle.seek(offset)
        current = handle.read(BS)
        handle.seek(offset)
        handle.write(bytes(BS))
        handle.flush()
        os.fsync(handle.fileno())
    return current


def fio_job(run_steps: Any, name: str) -> dict[str, Any]:
    jobs = run_steps.step(name).json()["jobs"]
    assert len(jobs) == 1, f"{name}: {len(jobs)} jobs"
    job: dict[str, Any] = jobs[0]
    return job


async def test_kernel_fio_verify_state_survives_target_sigkill(
    linuxvm: LinuxVM, interop_figures: Callable[[str], None], tmp_path: Path
) -> None:
    release = os.environ.get("LINUXVM_RELEASE", "bookworm")
    faulthandler.cancel_dump_traceback_later()  # every wait below is bounded on its own
    seed = int(os.environ.get("NVMEOF_CRASH_SEED") or random.SystemRandom().randrange(10**9))
    rng = random.Random(seed)
    cycles = [Cycle(n, round(rng.uniform(*KILL_DELAY), 2), rng.randrange(1, 2**31))
              for n in range(1, KILLS + 1)]  # fmt: skip
    print(f"\n  crash| seed {seed} (NVMEOF_CRASH_SEED={seed} repeats it): {KILLS} kills, delays "
          + " ".join(f"{c.delay:.2f}" for c in cycles), flush=True)  # fmt: skip

    image = tmp_path / "ns1.img"
    control: dict[str, Any] = {}
    target = TargetProcess(crash_config(image), workdir=tmp_path / "target", pcap=False,
                           log_level="info")  # fmt: skip
    with target:
        port = target.ports[1][1]
        env = {"NQN": NQN, "ADDR": GUEST_HOST_IP, "PORT": str(port),
               "CONNECT_ARGS": CONNECT_ARGS, "SEEDS": " ".join(str(c.fio_seed) for c in cycles),
               "SLICE_MIB": str(SLICE_MIB), "RATE_IOPS": str(RATE_IOPS), "BS": str(BS), "IODEPTH": str(IODEPTH), "CONTROL": "1"}  # fmt: skip
        argv = [str(linuxvm.run_path), "-t", str(VM_TIMEOUT),
                "--console-log", str(tmp_path / "console.log")]  # fmt: skip
        for key, value in env.items():
            argv += ["-e", f"{key}={value}"]
        vm = StreamingVM([*argv, str(GUEST_DIR / "crash_fio.sh")], tmp_path / "vm.log",
                         name="crash")  # fmt: skip
        async with trio.open_nursery() as nursery:
            nursery.start_soon(vm.run)
            for c in cycles:
                limit = BOOT_TIMEOUT if c.n == 1 else CYCLE_TIMEOUT
                started, _ = await vm.wait_marker(f"CRASH-START-{c.n}", limit)
                await wait_writing(target, vm, c.n)
                c.writing_after = trio.current_time() - started
                await trio.sleep(c.delay)
                if vm.exited.is_set() or f"CRASH-DOWN-{c.n}" in vm.markers:
                    pytest.fail(f"cycle {c.n}: fio or the path ended before the kill:\n"
                                f"{vm.context()}")  # fmt: skip
                async with target.async_client() as client:
                    c.inflight_at_kill = int((await client.metrics()).value(INFLIGHT))
                old_pid = target.pid
                killed = trio.current_time()
                await trio.to_thread.run_sync(target.power_cycle)
                up = trio.current_time()
                c.restart, c.pids = up - killed, (old_pid, target.pid)
                print(f"  crash| cycle {c.n}: killed pid {old_pid} {c.writing_after + c.delay:.2f}"
                      f" s into fio ({c.inflight_at_kill} commands inside it), pid {target.pid}"
                      f" up {c.restart:.2f} s later", flush=True)  # fmt: skip
                live_at, live = await vm.wait_marker(f"CRASH-LIVE-{c.n}", LIVE_TIMEOUT)
                c.live_after = live_at - up
                assert live.split()[-1] == "rc=0", f"cycle {c.n}: {live}\n{vm.context()}"
                with trio.fail_after(RECONNECT_TIMEOUT):
                    while await host_controllers(target) < 1:  # noqa: ASYNC110 - the API
                        await trio.sleep(0.2)
                await vm.wait_marker(f"CRASH-VERIFY-{c.n}", VERIFY_TIMEOUT)
                c.written_new = await metric(target, WRITTEN)

            _, line = await vm.wait_marker("CRASH-CONTROL", CYCLE_TIMEOUT)
            match = re.search(r"offset=(\d+)", line)
            assert match, f"the guest named no block for the control: {line}\n{vm.context()}"
            offset = int(match.group(1))
            await trio.to_thread.run_sync(target.stop)
            control.update(offset=offset, held=lose_block(image, offset))
            await trio.to_thread.run_sync(target.start)
            print(f"  crash| control: block {offset} (header {control['held'][:8].hex()}) "
                  "zeroed", flush=True)  # fmt: skip
            _, control["line"] = await vm.wait_marker("CRASH-CONTROL-VERIFY", LIVE_TIMEOUT
                                                      + VERIFY_TIMEOUT)  # fmt: skip
            with trio.fail_after(END_TIMEOUT):
                await vm.exited.wait()
    run = vm.result()

    # -- every cycle ---------------------------------------------------------------------------
    transcript = f"\n--- guest transcript: {tmp_path / 'vm.log'}\n{run.context()}"
    rows = []
    for c in cycles:
        assert c.pids[0] != c.pids[1], f"cycle {c.n}: no new target process {c.pids}"
        assert c.written_new > 0, f"cycle {c.n}: the restarted target received no write"
        info = next(i for i in run.infos("cycle") if i["cycle"] == str(c.n))
        assert info["fio_alive_at_stop"] == "1", f"cycle {c.n}: fio ended by itself: {info}"
        assert info["state_file"], f"cycle {c.n}: fio saved no verify state{transcript}"
        write = fio_job(run, f"write-{c.n}-json")
        verify = fio_job(run, f"verify-{c.n}-json")
        verify_step = run.step(f"verify-{c.n}")
        bad = [line for line in verify_step.output.splitlines() if FIO_VERIFY_FAILURE.search(line)]
        assert verify_step.rc == 0 and verify["error"] == 0 and not bad, (
            f"cycle {c.n}: the verify-only pass failed (rc {verify_step.rc}, error "
            f"{verify['error']}):\n{verify_step.output}{transcript}"
        )
        assert write["error"] == 0, f"cycle {c.n}: fio's writes failed: {write['error']}"
        longest = write["write"]["clat_ns"]["max"] / 1e9
        assert longest >= RECONNECT_DELAY, (
            f"cycle {c.n}: no write was outstanding across the kill: the longest took {longest:.2f}"
            f" s, less than the reconnect delay"
        )
        written_ios = write["write"]["io_bytes"] // BS
        verified_ios = verify["read"]["io_bytes"] // BS
        assert verified_ios > 0, f"cycle {c.n}: nothing verified{transcript}"
        assert written_ios - IODEPTH <= verified_ios <= written_ios, (
            f"cycle {c.n}: {verified_ios} blocks verified of {written_ios} written{transcript}"
        )
        rows.append(f"    cycle {c.n}: kill {c.writing_after + c.delay:4.1f} s into fio "
                    f"({c.inflight_at_kill:2d} commands inside), restart {c.restart:.1f} s, host"
                    f" live {c.live_after:4.1f} s later, longest write {longest:.1f} s, "
                    f"{verified_ios}/{written_ios} blocks verified, "
                    f"{c.written_new / 2**20:.1f} MiB to the new process")  # fmt: skip

    # -- the control -----------------------------------------------------------------------------
    # fio's verify header starts with its magic 0xacca (little-endian) and the verify type
    assert control["held"][:2] == b"\xca\xac", (
        f"control: block {control['offset']} held no fio block: {control['held'][:32].hex()}"
    )
    check = run.step("control-verify")
    fails = [line for line in check.output.splitlines() if FIO_VERIFY_FAILURE.search(line)]
    assert check.rc != 0 and fails, (
        f"control: the block at offset {control['offset']} was zeroed (a lost write), and the "
        f"verify-only pass did not notice:\n{check.output}{transcript}"
    )
    assert any(f"offset {control['offset']}" in line for line in fails), (
        f"control: verify failed elsewhere than at {control['offset']}:\n{check.output}"
    )
    dmesg = run.step("dmesg-nvme").output.splitlines()
    trouble = [line for line in dmesg if re.search(r"Call Trace|WARNING:|BUG:", line)]
    assert not trouble, "the guest kernel complained:\n" + "\n".join(trouble)
    assert run.rc == 0, f"the guest script failed (rc {run.rc}){transcript}"

    kernel = next((i["kernel"] for i in run.infos("kernel")), "?")
    figures = [
        f"crash ({release}, Linux {kernel}): {KILLS} SIGKILLs of the target under fio in one "
        f"boot, seed {seed}, VM {run.duration:.0f} s; every verify-only pass clean; control "
        f"(block {control['offset']} zeroed): {fails[0].strip()}",
        *rows,
    ]
    print("\n" + "\n".join(figures))
    for line in figures:
        interop_figures(line)
