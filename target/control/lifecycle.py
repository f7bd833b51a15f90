"""Operator actions on the target as a whole: a soft restart, and scenario markers.

:meth:`Lifecycle.restart` is what hosts see when a target restarts, without losing what the
emulator holds in memory: every connection is closed and every controller dropped, the
listeners are closed and bound again on the same TCP ports, and every port is up again. The
configuration, the namespaces and their data, ANA states, fault rules and counters are kept. A
real process restart (a new PID, RAM namespaces emptied) is the job of whoever started the
process (the pytest plugin, systemd): it is not something a process can do to itself and stay
reachable on its control API.

:meth:`Lifecycle.scenario_event` records one line of a running scenario in the audit trail and
counts it (``nvmeof_target_scenario_steps_total{scenario,action}``), so that a scenario's steps
show up in the target's own log and metrics next to the changes they caused.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import trio

from target.control.live import ControlError

if TYPE_CHECKING:
    from target.connection import QueueConnection
    from target.port import Port
    from target.state import TargetState

log = logging.getLogger("nvmeof.target")

#: How long a restart waits for the old connections' tasks to finish before binding again.
RESTART_DRAIN_SECONDS = 2.0


class Lifecycle:
    """Mixed into :class:`~target.daemon.Target` (through the operator actions)."""

    state: TargetState
    connections: set[QueueConnection]
    _config_lock: trio.Lock

    def __init__(self) -> None:
        super().__init__()
        #: Scenario steps reported with :meth:`scenario_event`, by (scenario, action).
        self.scenario_steps: dict[tuple[str, str], int] = {}

    # -- provided by the daemon and the operator actions -----------------------------------------

    async def open_listener(self, port: Port) -> None:  # pragma: no cover - Target overrides
        raise NotImplementedError

    def close_listener(self, port: Port) -> None:  # pragma: no cover - Target overrides
        raise NotImplementedError

    def record(self, what: str) -> None:  # pragma: no cover - Operations overrides
        raise NotImplementedError

    # -- restart ---------------------------------------------------------------------------------

    async def restart(self) -> dict[str, Any]:
        """Drop every connection and controller, rebind every listener, set every port up.

        Connections are closed with a FIN, as the kernel closes the sockets of a process that
        exits. The listeners are bound again only once the old connections are gone (or after
        :data:`RESTART_DRAIN_SECONDS`), so a host that reconnects at once meets a fresh target,
        never a half-closed one. Returns what was dropped.
        """
        async with self._config_lock:  # no live configuration change half-way through
            ports = sorted(self.state.ports.values(), key=lambda p: p.id)
            for port in ports:
                self.close_listener(port)
            controllers = self.state.controllers()
            for ctrl in controllers:
                ctrl.close("target restart")
            old = set(self.connections)
            for conn in old:
                conn.close("target restart")
            with trio.move_on_after(RESTART_DRAIN_SECONDS):
                while old & self.connections:  # noqa: ASYNC110 - tasks end on their own
                    await trio.sleep(0.005)
            unbound = []
            for port in ports:
                port.mode = "up"
                if not port.enabled:
                    continue
                try:
                    await self.open_listener(port)
                except OSError as err:  # taken meanwhile: bind the others all the same
                    unbound.append(f"port {port.id} ({port.addr}:{port.bound_port}): "
                                   f"{err.strerror or err}")  # fmt: skip
        ids = [p.id for p in ports]
        self.record(f"restart connections={len(old)} controllers={len(controllers)} "
                    f"ports={ids}" + (f" cannot listen: {'; '.join(unbound)}" if unbound else ""))  # fmt: skip
        if unbound:
            raise ControlError(f"restarted, but cannot listen again on {'; '.join(unbound)}")
        return {"connections": len(old), "controllers": len(controllers), "ports": ids}

    # -- scenario markers ------------------------------------------------------------------------

    def scenario_event(self, what: str, scenario: str | None = None,
                       action: str | None = None) -> None:  # fmt: skip
        """Record a scenario's step (or any marker) in the audit trail; count it by scenario and
        action for the metrics."""
        name = scenario or "-"
        kind = action or "mark"
        key = (name, kind)
        self.scenario_steps[key] = self.scenario_steps.get(key, 0) + 1
        self.record(f"scenario {name}: {what}" if scenario else f"event: {what}")
