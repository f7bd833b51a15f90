"""Operator actions on a running target, as plain methods (the HTTP control API and
``nvmeof-target ctl`` call these; tests that embed the target call them directly).

Every change is logged and kept, with a timestamp, in :attr:`Operations.changes`.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import trio

from nvmeof.constants import AnaState
from target.config import NamespaceConfig
from target.control.faults import FaultRule
from target.control.live import ControlError, LiveConfig

if TYPE_CHECKING:
    from target.connection import QueueConnection
    from target.port import Port
    from target.state import TargetState

log = logging.getLogger("nvmeof.target")

PORT_DOWN_MODES = ("reset", "close", "blackhole", "refuse")


@dataclass(frozen=True)
class Change:
    """One operator change, for the audit trail."""

    time: float  # Unix time
    what: str


class Operations(LiveConfig):
    """Mixed into :class:`~target.daemon.Target`."""

    state: TargetState
    connections: set[QueueConnection]

    def __init__(self) -> None:
        super().__init__()
        self.changes: deque[Change] = deque(maxlen=1000)

    # -- helpers that the daemon provides ---------------------------------------------------------

    def listening(self, port: Port) -> bool:  # pragma: no cover - Target overrides
        raise NotImplementedError

    def _record(self, what: str) -> None:
        self.changes.append(Change(time.time(), what))
        log.info("operator change: %s", what)

    def _port(self, port_id: int) -> Port:
        port = self.state.ports.get(port_id)
        if port is None:
            raise ControlError(f"no port {port_id} (ports: {sorted(self.state.ports)})")
        return port

    def _port_connections(self, port: Port) -> list[QueueConnection]:
        return [c for c in self.connections if c.port is port]

    # -- ports -----------------------------------------------------------------------------------

    async def port_down(self, port_id: int, mode: str = "reset") -> int:
        """Take a path down; returns how many connections were affected.

        ``reset``: TCP RST on every connection, new ones refused. ``close``: orderly FIN, new
        ones refused. ``blackhole``: connections (existing and new) stay open but nothing is
        read or answered, and the target's keep-alive timer is suspended for them: the host
        must detect the dead path itself. ``refuse``: existing connections stay, new ones are
        refused.
        """
        if mode not in PORT_DOWN_MODES:
            raise ControlError(f"unknown mode {mode!r} (one of {', '.join(PORT_DOWN_MODES)})")
        port = self._port(port_id)
        conns = self._port_connections(port)
        if port.mode != "up":
            await self.port_up(port_id)
        port.mode = mode
        if mode in ("reset", "close", "refuse"):
            self.close_listener(port)
        if mode == "reset":
            for conn in conns:
                conn.reset("port down (reset)")
        elif mode == "close":
            for conn in conns:
                conn.close("port down (close)")
        elif mode == "blackhole":
            for conn in conns:
                conn.blackhole(True)
        self._record(f"port {port_id} down mode={mode} connections={len(conns)}")
        return len(conns) if mode != "refuse" else 0

    async def port_up(self, port_id: int) -> None:
        """Restore a path: accept again. Connections left blackholed are reset rather than
        resumed: the host has given up on them, and running the commands queued in them now
        would execute stale writes (use the ``ghost-write`` fault to test that hazard)."""
        port = self._port(port_id)
        previous = port.mode
        port.mode = "up"
        for conn in self._port_connections(port):
            if conn.blackholed:
                conn.reset("port up after blackhole")
        if not self.listening(port):
            await self.open_listener(port)
        self._record(f"port {port_id} up (was {previous})")

    # -- ANA -------------------------------------------------------------------------------------

    def set_ana(self, port_id: int, group: int, state: AnaState | str) -> int:
        """Set the ANA state of ``group`` on a port (AEN to every affected controller)."""
        port = self._port(port_id)
        try:
            ana = state if isinstance(state, AnaState) else AnaState.from_label(state)
        except ValueError as err:
            raise ControlError(str(err)) from None
        try:
            notified = self.state.set_ana_state(port.id, group, ana)
        except ValueError as err:
            raise ControlError(str(err)) from None
        self._record(f"ana port={port_id} group={group} state={ana.label} "
                     f"chgcnt={self.state.ana_chgcnt} notified={len(notified)}")  # fmt: skip
        return self.state.ana_chgcnt

    async def set_ana_via_change(self, port_id: int, group: int, state: AnaState | str,
                                 after_ms: int) -> None:  # fmt: skip
        """Go through the ANA "change" (transition) state for ``after_ms``, then ``state``."""
        self.set_ana(port_id, group, AnaState.CHANGE)
        await trio.sleep(after_ms / 1000)
        self.set_ana(port_id, group, state)

    # -- namespaces ------------------------------------------------------------------------------

    def ns_add(self, nqn: str, cfg: NamespaceConfig) -> None:
        self._subsystem(nqn)
        try:
            self.state.add_namespace(nqn, cfg)
        except ValueError as err:
            raise ControlError(str(err)) from None
        self._record(f"namespace add {nqn} nsid={cfg.nsid} size={cfg.size} "
                     f"backend={cfg.backend}")  # fmt: skip

    def ns_remove(self, nqn: str, nsid: int) -> None:
        sub = self._subsystem(nqn)
        if nsid not in sub.namespaces:
            raise ControlError(f"{nqn} has no namespace {nsid}")
        self.state.remove_namespace(nqn, nsid)
        self._record(f"namespace remove {nqn} nsid={nsid}")

    def ns_resize(self, nqn: str, nsid: int, size: int) -> None:
        sub = self._subsystem(nqn)
        ns = sub.namespaces.get(nsid)
        if ns is None:
            raise ControlError(f"{nqn} has no namespace {nsid}")
        if size <= 0 or size % ns.block_size:
            raise ControlError(f"size must be a positive multiple of {ns.block_size}")
        self.state.resize_namespace(nqn, nsid, size)
        self._record(f"namespace resize {nqn} nsid={nsid} size={size}")

    def _subsystem(self, nqn: str) -> Any:
        sub = self.state.subsystems.get(nqn)
        if sub is None:
            raise ControlError(f"no subsystem {nqn!r}")
        return sub

    # -- faults ----------------------------------------------------------------------------------

    def fault_add(self, rule: FaultRule | dict[str, Any]) -> FaultRule:
        try:
            fault = rule if isinstance(rule, FaultRule) else FaultRule(**rule)
        except (TypeError, ValueError) as err:
            raise ControlError(f"bad fault rule: {err}") from None
        self.state.faults.add(fault)
        self._record(f"fault add id={fault.id} action={fault.action} "
                     f"{ {k: v for k, v in fault.describe().items() if v not in (None,)} }")  # fmt: skip
        return fault

    def fault_list(self) -> list[dict[str, Any]]:
        return [rule.describe() for rule in self.state.faults.rules]

    def fault_clear(self, rule_id: int | None = None) -> int:
        if rule_id is None:
            count = self.state.faults.clear()
        else:
            count = int(self.state.faults.remove(rule_id))
            if not count:
                raise ControlError(f"no fault rule {rule_id}")
        self._record(f"fault clear {'all' if rule_id is None else rule_id} removed={count}")
        return count

    # -- status ----------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """Ports, subsystems, controllers, queues, connections and ANA states (JSON-ready)."""
        state = self.state
        ports = []
        for port in sorted(state.ports.values(), key=lambda p: p.id):
            conns = self._port_connections(port)
            ports.append({
                "id": port.id, "addr": port.addr, "port": port.bound_port, "mode": port.mode,
                "listening": self.listening(port), "advertise": port.advertised_addr,
                "subsystems": list(port.subsystems),
                "ana": {str(g): s.label for g, s in sorted(port.ana.items())},
                "connections": len(conns),
                "blackholed": sum(1 for c in conns if c.blackholed),
            })  # fmt: skip
        subsystems = []
        for sub in state.subsystems.values():
            subsystems.append({
                "nqn": sub.nqn, "serial": sub.serial, "allow_any_host": sub.allow_any_host,
                "namespaces": [{"nsid": ns.nsid, "size": ns.size, "block_size": ns.block_size,
                                "backend": ns.config.backend, "ana_group": ns.ana_group,
                                "enabled": ns.enabled} for ns in sub.namespaces.values()],
                "controllers": [{"cntlid": c.cntlid, "host": c.hostnqn, "port": c.port.id,
                                 "kato_ms": c.kato_ms, "queues": sorted(c.queues)}
                                for c in sub.controllers.values()],
            })  # fmt: skip
        return {
            "ports": ports, "subsystems": subsystems,
            "discovery_controllers": len(state.discovery_controllers),
            "connections": len(self.connections), "ana_change_count": state.ana_chgcnt,
            "faults": self.fault_list(), "faults_fired": dict(state.faults_fired),
            "changes": [{"time": c.time, "what": c.what} for c in list(self.changes)[-50:]],
        }  # fmt: skip
