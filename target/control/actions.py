"""Operator actions on a running target, as plain methods (the HTTP control API and
``nvmeof-target ctl`` call these; tests that embed the target call them directly).

Every change is logged and kept, with a timestamp, in :attr:`Operations.changes`.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING, Any

import trio

from nvmeof.constants import AnaState
from target.config import (
    HostConfig,
    NamespaceConfig,
    PortConfig,
    ReferralConfig,
    SubsystemConfig,
    TargetConfig,
)
from target.control.faults import FaultRule
from target.control.lifecycle import Lifecycle
from target.control.live import ControlError, LiveConfig, NotFound
from target.control.reservation_actions import ReservationActions, reservation_summary

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


class Operations(ReservationActions, Lifecycle, LiveConfig):
    """Mixed into :class:`~target.daemon.Target`; the restart and scenario markers are in
    :class:`~target.control.lifecycle.Lifecycle`, the reservation actions in
    :class:`~target.control.reservation_actions.ReservationActions`."""

    state: TargetState
    connections: set[QueueConnection]

    def __init__(self) -> None:
        super().__init__()
        self.changes: deque[Change] = deque(maxlen=1000)

    # -- helpers that the daemon provides ---------------------------------------------------------

    def listening(self, port: Port) -> bool:  # pragma: no cover - Target overrides
        raise NotImplementedError

    def record(self, what: str) -> None:
        """Keep an operator change in the audit trail (and log it)."""
        self.changes.append(Change(time.time(), what))
        log.info("operator change: %s", what)

    def _port(self, port_id: int) -> Port:
        port = self.state.ports.get(port_id)
        if port is None:
            raise NotFound(f"no port {port_id} (ports: {sorted(self.state.ports)})")
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
        self.record(f"port {port_id} down mode={mode} connections={len(conns)}")
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
        self.record(f"port {port_id} up (was {previous})")

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
        self.record(f"ana port={port_id} group={group} state={ana.label} "
                     f"chgcnt={self.state.ana_chgcnt} notified={len(notified)}")  # fmt: skip
        return self.state.ana_chgcnt

    async def set_ana_via_change(self, port_id: int, group: int, state: AnaState | str,
                                 after_ms: int) -> None:  # fmt: skip
        """Go through the ANA "change" (transition) state for ``after_ms``, then ``state``."""
        self.set_ana(port_id, group, AnaState.CHANGE)
        await trio.sleep(after_ms / 1000)
        self.set_ana(port_id, group, state)

    # -- live configuration: each one edits the configuration (LiveConfig.change_config) -------

    async def subsystem_add(self, cfg: SubsystemConfig, ports: Iterable[int] = ()) -> list[str]:
        """Create a subsystem (with its namespaces) and expose it on ``ports``."""
        port_ids = tuple(ports)

        def edit(config: TargetConfig) -> TargetConfig:
            if any(sub.nqn == cfg.nqn for sub in config.subsystems):
                raise ControlError(f"subsystem {cfg.nqn!r} already exists")
            for port_id in port_ids:
                _port_config(config, port_id)
            linked = tuple(replace(p, subsystems=(*p.subsystems, cfg.nqn))
                           if p.id in port_ids else p for p in config.ports)  # fmt: skip
            return replace(config, subsystems=(*config.subsystems, cfg), ports=linked)

        return await self.change_config(edit)

    async def subsystem_remove(self, nqn: str) -> list[str]:
        """Remove a subsystem: its controllers are dropped, every port stops exposing it."""

        def edit(config: TargetConfig) -> TargetConfig:
            _subsystem_config(config, nqn)
            ports = tuple(replace(p, subsystems=tuple(n for n in p.subsystems if n != nqn))
                          for p in config.ports)  # fmt: skip
            subsystems = tuple(s for s in config.subsystems if s.nqn != nqn)
            return replace(config, subsystems=subsystems, ports=ports)

        return await self.change_config(edit)

    async def subsystem_update(self, nqn: str, **attributes: Any) -> list[str]:
        """Change subsystem attributes (serial, model, allow_any_host, allowed_hosts,
        max_io_queues, queue_size, cntlid_min, cntlid_max, max_namespaces)."""
        bad = attributes.keys() - SUBSYSTEM_ATTRIBUTES
        if bad:
            raise ControlError(f"not a subsystem attribute: {', '.join(sorted(bad))}")
        return await self._edit_subsystem(nqn, lambda sub: replace(sub, **attributes))

    async def host_allow(self, nqn: str, host: str) -> list[str]:
        """Let ``host`` connect to subsystem ``nqn`` (nvmet: link under allowed_hosts)."""

        def edit(sub: SubsystemConfig) -> SubsystemConfig:
            if host in sub.allowed_hosts:
                return sub
            return replace(sub, allowed_hosts=(*sub.allowed_hosts, host))

        return await self._edit_subsystem(nqn, edit)

    async def host_disallow(self, nqn: str, host: str) -> list[str]:
        """Stop allowing ``host`` (its live controllers stay, as with nvmet)."""

        def edit(sub: SubsystemConfig) -> SubsystemConfig:
            if host not in sub.allowed_hosts:
                raise NotFound(f"{host} is not an allowed host of {nqn}")
            return replace(sub, allowed_hosts=tuple(h for h in sub.allowed_hosts if h != host))

        return await self._edit_subsystem(nqn, edit)

    async def host_add(self, host: str, **dhchap: str | None) -> list[str]:
        """Add a host to the target's host list (nvmetcli ``hosts``), with its DH-HMAC-CHAP
        settings if any (``dhchap_key``, ``dhchap_ctrl_key``, ``dhchap_hash``,
        ``dhchap_dhgroup``) and its TLS PSK (``tls_key``, ``tls_psk_derivation``); adding a
        known host changes nothing."""
        entry = HostConfig(nqn=host, **{k: v for k, v in dhchap.items() if v is not None})
        return await self.change_config(
            lambda c: c if c.host(host) else replace(c, hosts=(*c.hosts, entry))
        )

    async def host_set_key(self, host: str, **dhchap: str | None) -> list[str]:
        """Change a host's DH-HMAC-CHAP or TLS settings (given ones only; an empty string
        removes a key): new connections use them, live ones keep theirs until they
        re-authenticate (a TLS connection keeps its session)."""
        changes: dict[str, Any] = {k: (v or None) if k.endswith("_key") else v
                                   for k, v in dhchap.items() if v is not None}  # fmt: skip

        def edit(config: TargetConfig) -> TargetConfig:
            if config.host(host) is None:
                raise NotFound(f"no host {host} (hosts: {list(config.host_nqns)})")
            return replace(config, hosts=tuple(replace(h, **changes) if h.nqn == host else h
                                               for h in config.hosts))  # fmt: skip

        return await self.change_config(edit)

    async def host_remove(self, host: str) -> list[str]:
        def edit(config: TargetConfig) -> TargetConfig:
            if config.host(host) is None:
                raise NotFound(f"no host {host} (hosts: {list(config.host_nqns)})")
            return replace(config, hosts=tuple(h for h in config.hosts if h.nqn != host))

        return await self.change_config(edit)

    async def ns_add(self, nqn: str, cfg: NamespaceConfig) -> list[str]:
        def edit(sub: SubsystemConfig) -> SubsystemConfig:
            if any(ns.nsid == cfg.nsid for ns in sub.namespaces):
                raise ControlError(f"NSID {cfg.nsid} already exists in {nqn}")
            return replace(sub, namespaces=(*sub.namespaces, cfg))

        return await self._edit_subsystem(nqn, edit)

    async def ns_remove(self, nqn: str, nsid: int) -> list[str]:
        def edit(sub: SubsystemConfig) -> SubsystemConfig:
            _namespace_config(sub, nsid)
            return replace(sub, namespaces=tuple(n for n in sub.namespaces if n.nsid != nsid))

        return await self._edit_subsystem(nqn, edit)

    async def ns_update(self, nqn: str, nsid: int, **changes: Any) -> list[str]:
        """Change a namespace live: ``size`` (resize), ``enabled``, ``ana_group``; any other
        field (backend, path, block size, identifiers) replaces it under the same NSID."""
        bad = changes.keys() - NAMESPACE_FIELDS
        if bad:
            raise ControlError(f"not a namespace field: {', '.join(sorted(bad))}")

        def edit(sub: SubsystemConfig) -> SubsystemConfig:
            ns = _namespace_config(sub, nsid)
            if "size" in changes and changes["size"] % ns.block_size:
                raise ControlError(f"size must be a positive multiple of {ns.block_size}")
            updated = replace(ns, **changes)
            return replace(sub, namespaces=tuple(updated if n.nsid == nsid else n
                                                 for n in sub.namespaces))  # fmt: skip

        return await self._edit_subsystem(nqn, edit)

    async def ns_resize(self, nqn: str, nsid: int, size: int) -> list[str]:
        return await self.ns_update(nqn, nsid, size=size)

    async def port_add(self, cfg: PortConfig) -> Port:
        """Create a port (a new path) and listen on it; returns it (``bound_port`` is the TCP
        port actually bound when ``cfg.port`` is 0)."""

        def edit(config: TargetConfig) -> TargetConfig:
            if any(p.id == cfg.id for p in config.ports):
                raise ControlError(f"port {cfg.id} already exists")
            return replace(config, ports=(*config.ports, cfg))

        await self.change_config(edit)
        return self.state.ports[cfg.id]

    async def port_remove(self, port_id: int) -> list[str]:
        """Remove a port: its listener closes and its connections are closed."""

        def edit(config: TargetConfig) -> TargetConfig:
            _port_config(config, port_id)
            return replace(config, ports=tuple(p for p in config.ports if p.id != port_id))

        return await self.change_config(edit)

    async def port_link(self, port_id: int, nqn: str) -> list[str]:
        """Expose subsystem ``nqn`` on a port."""

        def edit(port: PortConfig) -> PortConfig:
            if nqn in port.subsystems:
                return port
            return replace(port, subsystems=(*port.subsystems, nqn))

        return await self._edit_port(port_id, edit)

    async def port_unlink(self, port_id: int, nqn: str) -> list[str]:
        """Stop exposing ``nqn`` on a port; its controllers there are dropped."""

        def edit(port: PortConfig) -> PortConfig:
            if nqn not in port.subsystems:
                raise NotFound(f"port {port_id} does not expose {nqn}")
            return replace(port, subsystems=tuple(n for n in port.subsystems if n != nqn))

        return await self._edit_port(port_id, edit)

    async def referral_add(self, port_id: int, referral: ReferralConfig) -> list[str]:
        def edit(port: PortConfig) -> PortConfig:
            kept = tuple(r for r in port.referrals if r.name != referral.name)
            return replace(port, referrals=(*kept, referral))

        return await self._edit_port(port_id, edit)

    async def referral_remove(self, port_id: int, name: str) -> list[str]:
        def edit(port: PortConfig) -> PortConfig:
            if all(r.name != name for r in port.referrals):
                raise NotFound(f"port {port_id} has no referral {name!r}")
            return replace(port, referrals=tuple(r for r in port.referrals if r.name != name))

        return await self._edit_port(port_id, edit)

    async def ana_group_remove(self, port_id: int, group: int) -> list[str]:
        """Forget a group's state on a port (it reads as optimized again)."""

        def edit(port: PortConfig) -> PortConfig:
            if all(g != group for g, _ in port.ana_states):
                raise NotFound(f"port {port_id} has no ANA group {group}")
            return replace(port, ana_states=tuple(a for a in port.ana_states if a[0] != group))

        return await self._edit_port(port_id, edit)

    async def _edit_subsystem(self, nqn: str,
                              edit: Callable[[SubsystemConfig], SubsystemConfig]) -> list[str]:  # fmt: skip
        def whole(config: TargetConfig) -> TargetConfig:
            edited = edit(_subsystem_config(config, nqn))
            return replace(config, subsystems=tuple(edited if s.nqn == nqn else s
                                                    for s in config.subsystems))  # fmt: skip

        return await self.change_config(whole)

    async def _edit_port(self, port_id: int,
                         edit: Callable[[PortConfig], PortConfig]) -> list[str]:  # fmt: skip
        def whole(config: TargetConfig) -> TargetConfig:
            edited = edit(_port_config(config, port_id))
            return replace(config, ports=tuple(edited if p.id == port_id else p
                                               for p in config.ports))  # fmt: skip

        return await self.change_config(whole)

    # -- faults ----------------------------------------------------------------------------------

    def fault_add(self, rule: FaultRule | dict[str, Any]) -> FaultRule:
        try:
            fault = rule if isinstance(rule, FaultRule) else FaultRule(**rule)
        except (TypeError, ValueError) as err:
            raise ControlError(f"bad fault rule: {err}") from None
        self.state.faults.add(fault)
        self.record(f"fault add id={fault.id} action={fault.action} "
                     f"{ {k: v for k, v in fault.describe().items() if v not in (None,)} }")  # fmt: skip
        return fault

    def fault_list(self) -> list[dict[str, Any]]:
        return [rule.describe() for rule in self.state.faults.rules]

    def fault_clear(self, rule_id: int | None = None) -> int:
        self.state.fault_log.flush()  # the folded lines of the rules going away
        if rule_id is None:
            count = self.state.faults.clear()
        else:
            count = int(self.state.faults.remove(rule_id))
            if not count:
                raise NotFound(f"no fault rule {rule_id}")
        self.record(f"fault clear {'all' if rule_id is None else rule_id} removed={count}")
        return count

    # -- status ----------------------------------------------------------------------------------

    def port_status(self, port: Port) -> dict[str, Any]:
        """One port as ``status()`` lists it (``port`` is the TCP port bound)."""
        conns = self._port_connections(port)
        return {
            "id": port.id, "addr": port.addr, "port": port.bound_port, "mode": port.mode,
            "listening": self.listening(port), "advertise": port.advertised_addr,
            "subsystems": list(port.subsystems),
            "ana": {str(g): s.label for g, s in sorted(port.ana.items())},
            "referrals": [{"name": r.name, "addr": r.addr, "port": r.port, "portid": r.portid}
                          for r in port.referrals],
            "connections": len(conns),
            "blackholed": sum(1 for c in conns if c.blackholed),
            "tls": port.tls, "tls_connections": sum(1 for c in conns if c.tls_identity is not None),
        }  # fmt: skip

    def status(self) -> dict[str, Any]:
        """Ports, subsystems, controllers, queues, connections and ANA states (JSON-ready)."""
        state = self.state
        ports = [self.port_status(p) for p in sorted(state.ports.values(), key=lambda p: p.id)]
        subsystems = []
        for sub in state.subsystems.values():
            subsystems.append({
                "nqn": sub.nqn, "serial": sub.serial, "model": sub.model,
                "allow_any_host": sub.allow_any_host, "allowed_hosts": list(sub.allowed_hosts),
                "namespaces": [{"nsid": ns.nsid, "size": ns.size, "block_size": ns.block_size,
                                "backend": ns.config.backend, "durability": ns.durability,
                                "ana_group": ns.ana_group,
                                "enabled": ns.enabled, "uuid": str(uuid.UUID(bytes=ns.uuid)),
                                "reservations": reservation_summary(ns)}
                               for ns in sub.namespaces.values()],
                "controllers": [{"cntlid": c.cntlid, "host": c.hostnqn, "port": c.port.id,
                                 "kato_ms": c.kato_ms, "queues": sorted(c.queues)}
                                for c in sub.controllers.values()],
            })  # fmt: skip
        return {
            "ports": ports, "subsystems": subsystems, "hosts": [h.nqn for h in state.hosts],
            # how each known host authenticates (never its secrets)
            "host_authentication": {h.nqn: h.authentication for h in state.hosts},
            "host_tls": sorted(h.nqn for h in state.hosts if h.tls_key is not None),
            "discovery_controllers": len(state.discovery_controllers),
            "connections": len(self.connections), "ana_change_count": state.ana_chgcnt,
            "faults": self.fault_list(), "faults_fired": dict(state.faults_fired),
            "changes": [{"time": c.time, "what": c.what} for c in list(self.changes)[-50:]],
        }  # fmt: skip


#: What :meth:`Operations.subsystem_update` may change.
SUBSYSTEM_ATTRIBUTES = frozenset(f.name for f in fields(SubsystemConfig)) - {"nqn", "namespaces"}
#: What :meth:`Operations.ns_update` may change.
NAMESPACE_FIELDS = frozenset(f.name for f in fields(NamespaceConfig)) - {"nsid"}


def _subsystem_config(config: TargetConfig, nqn: str) -> SubsystemConfig:
    for sub in config.subsystems:
        if sub.nqn == nqn:
            return sub
    raise NotFound(f"no subsystem {nqn!r}")


def _namespace_config(sub: SubsystemConfig, nsid: int) -> NamespaceConfig:
    for ns in sub.namespaces:
        if ns.nsid == nsid:
            return ns
    raise NotFound(f"{sub.nqn} has no namespace {nsid}")


def _port_config(config: TargetConfig, port_id: int) -> PortConfig:
    for port in config.ports:
        if port.id == port_id:
            return port
    raise NotFound(f"no port {port_id} (ports: {sorted(p.id for p in config.ports)})")
