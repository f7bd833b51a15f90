"""The kernel-log classifier of the interop tests, on lines a Linux host printed (no VM needed)."""

from __future__ import annotations

import re

from interop_harness import kernel_trouble

TROUBLE = re.compile(r"error|fail|timeout|reset|reconnect", re.IGNORECASE)

# Linux 6.12.118 (trixie) in CI: `nvme disconnect` of two controllers, then a keep-alive work item
# that ran while nvme1's admin queue was down (the RTT is 2^32 - 275052 ms: never dispatched).
DISCONNECT_RACE = """\
[    7.455024] nvme nvme0: new ctrl: NQN "nqn.2026-11.io.nvmeof-emu:demo", addr 10.0.2.2:4420
[    7.710946] nvme nvme1: new ctrl: NQN "nqn.2026-11.io.nvmeof-emu:demo", addr 10.0.2.2:4421
[   19.816594] nvme nvme0: Removing ctrl: NQN "nqn.2026-11.io.nvmeof-emu:demo"
[   19.894973] nvme nvme1: Removing ctrl: NQN "nqn.2026-11.io.nvmeof-emu:demo"
[   19.902074] nvme nvme1: long keepalive RTT (4294692244 ms)
[   19.902406] nvme nvme1: failed nvme_keep_alive_end_io error=4
"""


def test_a_keepalive_the_host_refused_while_removing_the_controller_is_its_teardown() -> None:
    trouble, teardown = kernel_trouble(DISCONNECT_RACE, TROUBLE)
    assert trouble == []
    assert teardown == ["[   19.902406] nvme nvme1: failed nvme_keep_alive_end_io error=4"]


def test_a_keepalive_failure_before_removal_is_trouble() -> None:
    log = DISCONNECT_RACE.replace("nvme1: Removing", "nvme2: Removing")
    trouble, teardown = kernel_trouble(log, TROUBLE)
    assert trouble == ["[   19.902406] nvme nvme1: failed nvme_keep_alive_end_io error=4"]
    assert teardown == []


def test_a_keepalive_the_target_failed_is_trouble_even_while_removing() -> None:
    # 10 is BLK_STS_IOERR: the command was sent and failed or was cancelled, which a target causes.
    log = DISCONNECT_RACE.replace("error=4", "error=10")
    trouble, _ = kernel_trouble(log, TROUBLE)
    assert trouble == ["[   19.902406] nvme nvme1: failed nvme_keep_alive_end_io error=10"]


def test_other_trouble_after_removal_is_still_trouble() -> None:
    log = DISCONNECT_RACE + "[   20.1] nvme nvme1: queue 0: timeout cid 0x3 type 4 opcode 0x18\n"
    trouble, teardown = kernel_trouble(log, TROUBLE)
    assert trouble == ["[   20.1] nvme nvme1: queue 0: timeout cid 0x3 type 4 opcode 0x18"]
    assert len(teardown) == 1
