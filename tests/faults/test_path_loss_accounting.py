"""Path-loss, detection and recovery figures as the operator causes them: the target is a daemon
subprocess (nvmeof_emu.TargetProcess), each path kill goes through its control API from this
process, and our initiator here counts what it saw — with I/O in flight on the killed path and
with the path idle.

What the figures must say (initiator/multipath.py, MultipathHead.check_paths):
- reset and close: the loss is seen at once; one path loss, and I/O moves within a second;
- blackhole: nothing is seen until the host's own keep-alive (KATO 1 s) or I/O timeout gives
  up: the detection time is that wait, and the recovery time (from when I/O on the path
  stopped) covers it, not the few milliseconds after detection; on an idle path the I/O that
  comes later never waits for the dead path, and its recovery time says so;
- refuse: existing connections carry on, so the path is not lost at all.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import trio

from initiator import ControllerOptions, open_host
from initiator.multipath import MultipathHead
from nvmeof_emu import TargetProcess

NQN = "nqn.2026-11.io.nvmeof-emu:demo"
KATO_MS = 1000
BLOCK = 512


@pytest.fixture(scope="module")
def daemon() -> Iterator[TargetProcess]:
    with TargetProcess(pcap=False, log_level="info") as target:  # the embedded demo config
        yield target


async def reads(head: MultipathHead, stop: trio.Event, failed: list[str]) -> None:
    """Reads at depth 4 until ``stop``, each one checked."""

    async def one_lane(lane: int) -> None:
        lba = lane * 64
        while not stop.is_set():
            try:
                await head.read(lba, 8)
            except Exception as err:  # counted: the test asserts there is none
                failed.append(str(err))
            lba = (lba + 8) % 4096

    async with trio.open_nursery() as nursery:
        for lane in range(4):
            nursery.start_soon(one_lane, lane)


@pytest.mark.parametrize("mode", ["reset", "close", "blackhole", "refuse"])
@pytest.mark.parametrize("busy", [True, False], ids=["io-in-flight", "idle"])
async def test_a_path_killed_from_another_process_is_counted_from_the_loss(
    daemon: TargetProcess, mode: str, busy: bool
) -> None:
    options = ControllerOptions(io_queues=1, kato_ms=KATO_MS, command_timeout=3.0,
                                reconnect_delay=0.2)  # fmt: skip
    client = daemon.client
    with trio.fail_after(40):
        async with open_host(options) as host:
            for port_id in (1, 2):
                await host.connect(*daemon.ports[port_id], NQN)
            head = host.namespace(NQN, 1)
            await head.read(0, 8)  # both paths up and answering
            failed: list[str] = []
            stop = trio.Event()
            async with trio.open_nursery() as nursery:
                if busy:
                    nursery.start_soon(reads, head, stop, failed)
                    await trio.sleep(0.3)
                await trio.to_thread.run_sync(client.port_down, 1, mode)
                try:
                    settle = 2.5 * KATO_MS / 1000 + 1.0 if mode == "blackhole" else 1.0
                    await trio.sleep(settle)
                    if not busy:  # I/O comes only now, after the loss
                        nursery.start_soon(reads, head, stop, failed)
                        await trio.sleep(0.5)
                finally:
                    stop.set()
                    await trio.to_thread.run_sync(client.port_up, 1)
            losses = head.stats.path_losses
            detection, recovery = head.detection_latency, head.failover_latency
            reconnect = head.paths[0].session
            with trio.move_on_after(3):  # the lost path comes back by itself
                while mode != "refuse" and not head.paths[0].usable:  # noqa: ASYNC110
                    await trio.sleep(0.05)
    assert failed == []
    if mode == "refuse":
        assert losses == 0 and recovery.count == 0 and detection.count == 0
        return
    assert losses == 1 and head.paths[0].stats.losses == 1
    assert recovery.count == 1  # the first completion of a command sent after the loss
    assert reconnect.reconnected >= 1 and reconnect.reconnects >= reconnect.reconnected
    if mode == "blackhole" and busy:
        # seen only by the host's keep-alive (KATO) or I/O timeout: seconds, not milliseconds,
        # and the commands in flight waited all that time
        assert detection.count == 1 and detection.largest >= KATO_MS / 1000 * 0.8
        assert recovery.largest >= detection.largest
    else:  # seen at once, or (idle) the later I/O never waited for the dead path
        assert recovery.largest < 1.0
        if busy:
            # The four lanes may all sit between a completion and their next read at the
            # instant the connection drops (a loaded machine): the path is idle when lost and
            # nothing waited, so no detection time is measured. Otherwise it is immediate.
            assert detection.count <= 1
            assert detection.count == 0 or detection.largest < 0.5
        else:
            assert detection.count == 0
