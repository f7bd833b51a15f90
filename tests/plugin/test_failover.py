"""The plugin's promise, end to end: a two-port target, our initiator on both paths, the
optimized path reset while verified I/O runs, and metrics (the target's and the host's) that
show the I/O failed over with no error; once in this Trio run, once with the real daemon."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio

from nvmeof_emu import ConnectedHost, InProcessTarget, TargetProcess
from tests.plugin.failover import TWO_PATHS, assert_failed_over_cleanly, fail_over_under_load


@pytest.mark.nvmeof_target(TWO_PATHS)
async def test_inprocess_io_fails_over_when_the_optimized_path_is_reset(
    nvmeof_target_inprocess: InProcessTarget, nvmeof_host_inprocess: ConnectedHost
) -> None:
    target, host = nvmeof_target_inprocess, nvmeof_host_inprocess
    with trio.fail_after(20):
        total = await fail_over_under_load(
            host, target.ports, lambda: target.path_down(1, mode="reset")
        )
        assert_failed_over_cleanly(total, host.metrics(), await target.metrics(), target.ports)
    assert target.internal_errors() == []


@pytest.mark.nvmeof_target(TWO_PATHS)
async def test_daemon_io_fails_over_when_the_optimized_path_is_reset(
    nvmeof_target: TargetProcess, nvmeof_host: ConnectedHost
) -> None:
    target, host = nvmeof_target, nvmeof_host

    @asynccontextmanager
    async def path_down() -> AsyncIterator[int]:
        # The blocking context manager, from a thread: the host's tasks keep running meanwhile.
        manager = target.path_down(1, mode="reset")
        affected = await trio.to_thread.run_sync(manager.__enter__)
        try:
            yield affected
        finally:
            await trio.to_thread.run_sync(manager.__exit__, None, None, None)

    with trio.fail_after(20):
        total = await fail_over_under_load(host, target.ports, path_down)
        target_metrics = await trio.to_thread.run_sync(target.metrics)
        assert_failed_over_cleanly(total, host.metrics(), target_metrics, target.ports)
    assert target.internal_errors() == []
    assert target.captures(), "each connection is captured while the test runs"
