"""An emulated target inside the test's own Trio run: no subprocess, the same handle shape.

    async with running_target(config) as target:        # or: await nursery.start(serve_target)
        async with nvmeof_host(target) as host:
            async with target.path_down(1, mode="reset"):
                ...
        assert (await target.metrics()).value("nvmeof_target_commands_total") > 0

:func:`running_target` serves a :class:`~target.daemon.Target` and its control API
(:func:`~target.control.httpapi.serve_control`) on free loopback ports, with an
:class:`~target.control.aclient.AsyncControlClient`. It records the target's log records while
it runs; leaving the block raises :class:`~nvmeof_emu.checks.TargetFailed` if any was an
internal error (the rule in :mod:`nvmeof_emu.checks`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import trio

from logfmt import LogfmtFormatter
from nvmeof_emu.checks import TargetFailed, ana_state_on, fault_fields, io_ports, is_internal_error
from nvmeof_emu.config import ConfigSource, as_target_config
from target.cli import add_config_faults
from target.config import with_free_ports
from target.control.aclient import AsyncControlClient
from target.control.clientbase import ControlNotFound, Endpoint, Metrics
from target.control.httpapi import serve_control
from target.daemon import Target

LOOPBACK_ANY: Endpoint = ("127.0.0.1", 0)
#: The loggers of the target and its control API.
TARGET_LOGGER = "nvmeof.target"


class LogRecorder(logging.Handler):
    """Keeps the target's log records (formatted as the daemon's log lines) while it runs."""

    def __init__(self, level: int) -> None:
        super().__init__(level)
        self.setFormatter(LogfmtFormatter())
        self.lines: list[str] = []
        self.problems: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        line = self.format(record)
        self.lines.append(line)
        if is_internal_error(record):
            self.problems.append(line)


@dataclass
class InProcessTarget:
    """A target served in this Trio run (from :func:`running_target`)."""

    target: Target
    client: AsyncControlClient
    control: Endpoint
    metrics_endpoint: Endpoint | None
    recorder: LogRecorder = field(repr=False)
    stopped: trio.Event = field(repr=False)
    pcap_dir: Path | None = None

    @property
    def ports(self) -> dict[int, Endpoint]:
        """Port ID -> (addr, bound TCP port), for every port listening now."""
        return {pid: (port.addr, port.bound_port) for pid, port in sorted(self.target.ports.items())
                if port.bound_port}  # fmt: skip

    @property
    def port_subsystems(self) -> dict[int, tuple[str, ...]]:
        return {pid: tuple(port.subsystems) for pid, port in sorted(self.target.ports.items())}

    @property
    def discovery(self) -> Endpoint:
        """The discovery-only port, else the first port (every port answers discovery)."""
        ports = self.ports
        quiet = [pid for pid, nqns in self.port_subsystems.items() if not nqns and pid in ports]
        return ports[min(quiet or ports)]

    @property
    def nqns(self) -> list[str]:
        return list(self.target.state.subsystems)

    @property
    def log(self) -> str:
        return "\n".join(self.recorder.lines)

    def internal_errors(self) -> list[str]:
        return list(self.recorder.problems)

    async def metrics(self) -> Metrics:
        return await self.client.metrics()

    def captures(self) -> list[Path]:
        return sorted(self.pcap_dir.glob("*.pcapng")) if self.pcap_dir else []

    def stop(self) -> None:
        """Stop serving, gracefully: listeners go, the commands being executed are answered
        (at most the target's drain timeout), then connections close and the control API shuts
        down (:meth:`wait_stopped`)."""
        self.target.stop()

    async def wait_stopped(self) -> None:
        await self.stopped.wait()

    # -- context managers that undo themselves --------------------------------------------------

    @asynccontextmanager
    async def path_down(self, port_id: int, mode: str = "reset") -> AsyncIterator[int]:
        """Take a path down for the block, then up again; yields the connections affected."""
        affected = await self.client.port_down(port_id, mode)
        try:
            yield affected
        finally:
            with trio.CancelScope(shield=True):
                await self.client.port_up(port_id)

    @asynccontextmanager
    async def fault(
        self, action: str = "status", *, opcode: int | str | None = None, **fields: Any
    ) -> AsyncIterator[dict[str, Any]]:
        """A fault rule for the block; yields the rule with its id."""
        rule = await self.client.fault_add(action, **fault_fields(opcode, fields))
        try:
            yield rule
        finally:
            with trio.CancelScope(shield=True), suppress(ControlNotFound):
                await self.client.fault_remove(int(rule["id"]))

    @asynccontextmanager
    async def ana(self, port: int, group: int, state: str, **options: Any) -> AsyncIterator[None]:
        """An ANA group's state on a port for the block; the previous state afterwards."""
        previous = ana_state_on(await self.client.status(), port, group)
        await self.client.set_ana(port, group, state, **options)
        try:
            yield
        finally:
            with trio.CancelScope(shield=True):
                if previous is None:
                    await self.client.ana_group_remove(port, group)
                else:
                    await self.client.set_ana(port, group, previous)

    @asynccontextmanager
    async def subsystem(
        self,
        nqn: str,
        *,
        namespaces: Sequence[Mapping[str, Any]] = ({"nsid": 1, "size": "16M"},),
        ports: Sequence[int] | None = None,
        **attributes: Any,
    ) -> AsyncIterator[str]:
        """A subsystem for the block, on ``ports`` (default: every port exposing one)."""
        where = io_ports(self.port_subsystems) if ports is None else ports
        await self.client.subsystem_add(nqn, namespaces=namespaces, ports=where, **attributes)
        try:
            yield nqn
        finally:
            with trio.CancelScope(shield=True), suppress(ControlNotFound):
                await self.client.subsystem_remove(nqn)


@asynccontextmanager
async def running_target(
    config: ConfigSource = None,
    *,
    free_ports: bool = True,
    pcap_dir: str | os.PathLike[str] | None = None,
    log_level: int = logging.DEBUG,
    metrics: bool = True,
) -> AsyncIterator[InProcessTarget]:
    """Serve a target (``config`` as for :class:`~nvmeof_emu.process.TargetProcess`) with its
    control API on free loopback ports for the block; TargetFailed at the end if it logged
    an internal error."""
    base = as_target_config(config)
    target = Target(with_free_ports(base) if free_ports else base, pcap_dir=pcap_dir)
    add_config_faults(target, base)
    recorder = LogRecorder(log_level)
    logger = logging.getLogger(TARGET_LOGGER)
    saved_level = logger.level
    if logger.getEffectiveLevel() > log_level:
        logger.setLevel(log_level)
    logger.addHandler(recorder)
    try:
        async with trio.open_nursery() as nursery:
            stopped = trio.Event()
            await nursery.start(_serve, target, stopped)
            ends = await nursery.start(partial(
                serve_control, target, control=LOOPBACK_ANY,
                metrics=LOOPBACK_ANY if metrics else None, shutdown_trigger=stopped.wait))  # fmt: skip
            assert ends.control is not None
            async with AsyncControlClient(ends.control) as client:
                handle = InProcessTarget(target, client, ends.control, ends.metrics, recorder,
                                         stopped, target.pcap_dir)  # fmt: skip
                try:
                    yield handle
                finally:
                    target.stop()
                    nursery.cancel_scope.cancel()
    except BaseException as error:
        if recorder.problems:
            error.add_note(_problems(recorder))  # the test's own error stays first
        raise
    finally:
        logger.removeHandler(recorder)
        logger.setLevel(saved_level)
    if recorder.problems:
        raise TargetFailed(_problems(recorder))


def _problems(recorder: LogRecorder) -> str:
    return (f"the in-process target logged {len(recorder.problems)} internal error(s):\n"
            + "\n".join(recorder.problems))  # fmt: skip


async def serve_target(
    config: ConfigSource = None,
    *,
    task_status: trio.TaskStatus[InProcessTarget] = trio.TASK_STATUS_IGNORED,
    **options: Any,
) -> None:
    """``target = await nursery.start(serve_target, config)``: :func:`running_target` as a
    task, serving until cancelled or ``target.stop()``."""
    async with running_target(config, **options) as handle:
        task_status.started(handle)
        await handle.wait_stopped()


async def _serve(
    target: Target, stopped: trio.Event, *, task_status: trio.TaskStatus[Target]
) -> None:
    try:
        await target.serve(task_status=task_status)
    finally:
        stopped.set()
