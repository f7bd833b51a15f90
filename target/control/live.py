"""Live configuration: the running target brought to a wanted configuration, difference by
difference.

Every live change goes one way: build the wanted :class:`~target.config.TargetConfig`, check it
with the configuration file's own :func:`~target.config.validate.validate` (so a live change and
a file give the same one-line error), compare it with :meth:`LiveConfig.current_config` (what
the target serves now, read from the live objects) and apply the difference. ``ctl config
apply FILE`` and the single-object routes (``POST /subsystems``, ``DELETE /ports/3``...) differ
only in how the wanted configuration is built.

What hosts see follows nvmet (drivers/nvme/target/configfs.c, core.c):

* a removed subsystem drops its controllers (nvmet_subsys_del_ctrls), a subsystem unlinked from
  a port drops its controllers on that port (nvmet_port_subsys_drop_link ->
  nvmet_port_del_ctrls), a removed port closes its connections (nvmet_tcp_remove_port): hosts
  see the connection drop and reconnect or give up by their own timers;
* anything a discovery log shows (ports, links, referrals, hosts allowed) bumps GENCTR and sends
  the discovery log change AEN (nvmet_port_disc_changed, nvmet_subsys_disc_changed);
* namespaces added, removed, resized, enabled or disabled: namespace attribute notice
  (nvmet_ns_changed); a namespace moved to another ANA group or an ANA state changed: ANA change
  notice (nvmet_send_ana_event);
* removing an allowed host does not drop its controllers (nvmet_allowed_hosts_drop_link).

Subsystem attributes (serial, model, queue limits, CNTLID range, max namespaces), a port's
in-capsule size and strictness apply to controllers and connections made afterwards. Fault
rules and a port's operator state (down, blackhole) are run-time state, not configuration:
:meth:`LiveConfig.apply_config` leaves them alone.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

import trio

from target.config import (
    SECRET_HIDDEN,
    ConfigError,
    HostConfig,
    NamespaceConfig,
    PortConfig,
    SubsystemConfig,
    TargetConfig,
    derived_ids,
    derived_serial,
)
from target.config.validate import validate
from target.port import Port

if TYPE_CHECKING:
    from target.connection import QueueConnection
    from target.controller import Controller
    from target.state import TargetState
    from target.subsystem import Namespace, Subsystem

log = logging.getLogger("nvmeof.target")

LIVE_SOURCE = "control API"


class ControlError(ValueError):
    """An operator request that cannot be done (bad value, conflicting state): one clear line."""


class NotFound(ControlError):
    """The request names a port, subsystem, namespace, host or rule that does not exist."""


class LiveConfig:
    """Mixed into :class:`~target.daemon.Target` (through the operator actions)."""

    state: TargetState
    connections: set[QueueConnection]

    def __init__(self) -> None:
        self._config_lock = trio.Lock()

    # -- provided by the daemon and the operator actions -----------------------------------------

    async def open_listener(self, port: Port) -> None:  # pragma: no cover - Target overrides
        raise NotImplementedError

    def close_listener(self, port: Port) -> None:  # pragma: no cover - Target overrides
        raise NotImplementedError

    def record(self, what: str) -> None:  # pragma: no cover - Operations overrides
        raise NotImplementedError

    # -- the live state as configuration ---------------------------------------------------------

    def current_config(self) -> TargetConfig:
        """What the target serves now, as a configuration (identifiers and bound ports filled
        in): ``ctl config export`` writes it, and applying it changes nothing."""
        state = self.state
        return TargetConfig(
            subsystems=tuple(_subsystem_config(sub) for sub in state.subsystems.values()),
            ports=tuple(_port_config(port)
                        for port in sorted(state.ports.values(), key=lambda p: p.id)),
            hosts=state.hosts,
            discovery_nqn=state.unique_discovery_nqn,
        )  # fmt: skip

    # -- applying a wanted configuration ---------------------------------------------------------

    async def apply_config(self, wanted: TargetConfig, source: str = LIVE_SOURCE) -> list[str]:
        """Bring the target to ``wanted``; returns what changed, one line per change (also in
        the audit trail). Nothing changes when ``wanted`` does not validate (ControlError with
        the validation's one line). A port whose configured TCP port is 0 keeps the port it
        is bound to."""
        return await self.change_config(lambda _current: wanted, source)

    async def change_config(self, edit: Callable[[TargetConfig], TargetConfig],
                            source: str = LIVE_SOURCE) -> list[str]:  # fmt: skip
        """Apply ``edit(current configuration)``, one change at a time (a lock orders
        concurrent callers, so an edit always starts from the state the previous one left)."""
        async with self._config_lock:
            current = self.current_config()
            wanted = _keep_hidden_secrets(edit(current), current)
            try:
                validate(wanted, source, "native")  # the API's bodies are native tables
            except ConfigError as err:
                raise ControlError(str(err)) from None
            wanted = _effective(wanted, current)
            done: list[str] = []
            try:
                self._remove_ports(current, wanted, done)
                self._reconcile_subsystems(current, wanted, done)
                await self._reconcile_ports(current, wanted, done)
            finally:
                state = self.state
                if wanted.hosts != current.hosts:
                    state.hosts = wanted.hosts
                    done += _host_changes(current, wanted)
                if wanted.discovery_nqn != current.discovery_nqn:
                    state.set_unique_discovery_nqn(wanted.discovery_nqn)
                    done.append(f"discovery_nqn {wanted.discovery_nqn or '(well-known)'}")
                if done and _discovery_view(wanted) != _discovery_view(current):
                    state.discovery_changed()
                for line in done:
                    self.record(line)
            return done

    def _remove_ports(self, current: TargetConfig, wanted: TargetConfig, done: list[str]) -> None:
        """Ports that go away, or move to another address: listener closed, connections closed
        with a FIN (nvmet_tcp_remove_port shuts each queue's socket down)."""
        wanted_ports = {p.id: p for p in wanted.ports}
        for cfg in current.ports:
            want = wanted_ports.get(cfg.id)
            if want is not None and (want.addr, want.port) == (cfg.addr, cfg.port):
                continue
            port = self.state.ports.pop(cfg.id)
            self.close_listener(port)
            conns = [c for c in self.connections if c.port is port]
            for conn in conns:
                conn.close(f"port {port.id} removed")
            done.append(f"port remove {cfg.id} connections={len(conns)}")

    def _reconcile_subsystems(self, current: TargetConfig, wanted: TargetConfig,
                              done: list[str]) -> None:  # fmt: skip
        state = self.state
        wanted_subs = {s.nqn: s for s in wanted.subsystems}
        for cfg in current.subsystems:
            if cfg.nqn not in wanted_subs:
                dropped = state.remove_subsystem(cfg.nqn)
                done.append(f"subsystem remove {cfg.nqn} controllers={dropped}")
        current_subs = {s.nqn: s for s in current.subsystems}
        for nqn, want in wanted_subs.items():
            have = current_subs.get(nqn)
            if have is None:
                state.add_subsystem(want)
                done.append(f"subsystem add {nqn} namespaces={len(want.namespaces)}")
            elif have != want:
                self._update_subsystem(state.subsystems[nqn], have, want, done)

    def _update_subsystem(self, sub: Subsystem[Controller], have: SubsystemConfig,
                          want: SubsystemConfig, done: list[str]) -> None:  # fmt: skip
        state = self.state
        attributes = replace(want, namespaces=have.namespaces)
        if attributes != have:
            sub.update(want)
            done.append(f"subsystem update {sub.nqn} {_fields_changed(have, attributes)}")
        have_ns = {ns.nsid: ns for ns in have.namespaces}
        want_ns = {ns.nsid: ns for ns in want.namespaces}
        for nsid in have_ns.keys() - want_ns.keys():
            state.remove_namespace(sub.nqn, nsid)
            done.append(f"namespace remove {sub.nqn} nsid={nsid}")
        for nsid, cfg in want_ns.items():
            old = have_ns.get(nsid)
            if old is None:
                state.add_namespace(sub.nqn, cfg)
                sync = f" sync={cfg.sync}" if cfg.backend == "file" else ""
                done.append(f"namespace add {sub.nqn} nsid={nsid} size={cfg.size} "
                            f"backend={cfg.backend}{sync}")  # fmt: skip
            elif old != cfg:
                self._update_namespace(sub, sub.namespaces[nsid], old, cfg)
                done.append(f"namespace update {sub.nqn} nsid={nsid} "
                            f"{_fields_changed(old, cfg)}")  # fmt: skip

    def _update_namespace(self, sub: Subsystem[Controller], ns: Namespace, old: NamespaceConfig,
                          new: NamespaceConfig) -> None:  # fmt: skip
        """Resize, enable/disable, ANA group and sync mode changes in place; anything else
        (backend, block size, identifiers) is a new namespace under the same NSID."""
        state = self.state
        in_place = replace(old, size=new.size, enabled=new.enabled, ana_group=new.ana_group,
                           sync=new.sync)  # fmt: skip
        if in_place != new:
            state.remove_namespace(sub.nqn, ns.nsid)
            state.add_namespace(sub.nqn, new)
            return
        if new.size != old.size:
            state.resize_namespace(sub.nqn, ns.nsid, new.size)
        if new.enabled != old.enabled:
            state.set_namespace_enabled(sub.nqn, ns.nsid, new.enabled)
        if new.ana_group != old.ana_group:
            ns.ana_group = new.ana_group
            state.namespace_group_changed(sub)
        if new.sync != old.sync:
            ns.set_sync(new.sync)  # nothing a host sees changes: no namespace notice

    async def _reconcile_ports(self, current: TargetConfig, wanted: TargetConfig,
                               done: list[str]) -> None:  # fmt: skip
        state = self.state
        current_ports = {p.id: p for p in current.ports}
        for want in wanted.ports:
            port = state.ports.get(want.id)
            if port is None:
                await self._add_port(want)
                done.append(f"port add {want.id} {want.addr}:{state.ports[want.id].bound_port} "
                            f"subsystems={list(want.subsystems)}")  # fmt: skip
                continue
            have = current_ports[want.id]
            if have != want:
                self._update_port(port, have, want, done)

    async def _add_port(self, cfg: PortConfig) -> None:
        port = Port(cfg)
        self.state.ports[cfg.id] = port
        self.state.port_stats(cfg.id)
        try:
            await self.open_listener(port)
        except OSError as err:
            del self.state.ports[cfg.id]
            raise ControlError(f"port {cfg.id}: cannot listen on {cfg.addr}:{cfg.port}: "
                               f"{err.strerror or err}") from None  # fmt: skip

    def _update_port(self, port: Port, have: PortConfig, want: PortConfig,
                     done: list[str]) -> None:  # fmt: skip
        state = self.state
        for nqn in have.subsystems:
            if nqn not in want.subsystems:
                dropped = state.unlink(port, nqn)
                done.append(f"port {port.id} unlink {nqn} controllers={dropped}")
        for nqn in want.subsystems:
            if nqn not in have.subsystems:
                done.append(f"port {port.id} link {nqn}")
        port.subsystems = list(want.subsystems)
        have_ana, want_ana = dict(have.ana_states), dict(want.ana_states)
        for group in sorted(have_ana.keys() | want_ana.keys()):
            if group not in want_ana:
                state.remove_ana_group(port.id, group)
                done.append(f"port {port.id} ana group {group} removed")
            elif have_ana.get(group) != want_ana[group]:
                state.set_ana_state(port.id, group, want_ana[group])
                done.append(f"port {port.id} ana group {group} {want_ana[group].label}")
        port.advertise = want.advertise
        port.referrals = list(want.referrals)
        port.inline_data_size = want.inline_data_size
        port.strict = want.strict
        rest = replace(want, subsystems=have.subsystems, ana_states=have.ana_states)
        if rest != have:
            done.append(f"port update {port.id} {_fields_changed(have, rest)}")


# -- configuration views --------------------------------------------------------------------------


def _namespace_config(ns: Namespace) -> NamespaceConfig:
    return replace(ns.config, size=ns.size, enabled=ns.enabled, ana_group=ns.ana_group,
                   uuid=ns.uuid, nguid=ns.nguid, eui64=ns.eui64)  # fmt: skip


def _subsystem_config(sub: Subsystem[Controller]) -> SubsystemConfig:
    return SubsystemConfig(
        nqn=sub.nqn, namespaces=tuple(_namespace_config(ns) for ns in sub.namespaces.values()),
        serial=sub.serial, model=sub.model, allow_any_host=sub.allow_any_host,
        allowed_hosts=tuple(sub.allowed_hosts), max_io_queues=sub.max_io_queues,
        queue_size=sub.queue_size, cntlid_min=sub.cntlid_min, cntlid_max=sub.cntlid_max,
        max_namespaces=sub.max_namespaces, cqt_ms=sub.cqt_ms,
    )  # fmt: skip


def _port_config(port: Port) -> PortConfig:
    return PortConfig(
        id=port.id, addr=port.addr, port=port.bound_port or port.port, advertise=port.advertise,
        subsystems=tuple(port.subsystems), ana_states=tuple(sorted(port.ana.items())),
        referrals=tuple(port.referrals), inline_data_size=port.inline_data_size,
        strict=port.strict, tls=port.tls,
    )  # fmt: skip


def _effective(wanted: TargetConfig, current: TargetConfig) -> TargetConfig:
    """``wanted`` with what it leaves to the target filled in as the target would: derived
    serials and namespace identifiers, and the bound port of a port configured on port 0."""
    bound = {p.id: p for p in current.ports}
    ports = []
    for port in wanted.ports:
        have = bound.get(port.id)
        if port.port == 0 and have is not None and have.addr == port.addr:
            port = replace(port, port=have.port)
        ports.append(replace(port, ana_states=tuple(sorted(port.ana_states))))
    subsystems = []
    for sub in wanted.subsystems:
        namespaces = []
        for ns in sub.namespaces:
            ns_uuid, nguid, eui64 = derived_ids(sub.nqn, ns.nsid)
            namespaces.append(replace(ns, uuid=ns.uuid or ns_uuid, nguid=ns.nguid or nguid,
                                      eui64=ns.eui64 or eui64))  # fmt: skip
        subsystems.append(replace(sub, serial=sub.serial or derived_serial(sub.nqn),
                                  namespaces=tuple(namespaces)))  # fmt: skip
    return replace(wanted, subsystems=tuple(subsystems), ports=tuple(ports))


def _discovery_view(config: TargetConfig) -> object:
    """What a discovery log shows of a configuration: when it differs, GENCTR moves."""
    ports = sorted((p.id, p.addr, p.port, p.advertise, p.subsystems, p.referrals, p.tls or "")
                   for p in config.ports)  # fmt: skip
    hosts = sorted((s.nqn, s.allow_any_host, tuple(sorted(s.allowed_hosts)))
                   for s in config.subsystems)  # fmt: skip
    return ports, hosts, config.discovery_nqn


def _fields_changed(old: object, new: object) -> str:
    names = [name for name in vars(old) if getattr(old, name) != getattr(new, name)]
    return " ".join(f"{name}={getattr(new, name)!r}" for name in names if name != "namespaces")


def _keep_hidden_secrets(wanted: TargetConfig, current: TargetConfig) -> TargetConfig:
    """An exported configuration shows secrets as SECRET_HIDDEN: applied, they keep the
    secret the target has (where it has none, validation refuses the placeholder)."""
    hosts = []
    for host in wanted.hosts:
        have = current.host(host.nqn)
        keep = {
            name: getattr(have, name)
            for name in ("dhchap_key", "dhchap_ctrl_key", "tls_key")
            if getattr(host, name) == SECRET_HIDDEN and have is not None
            and getattr(have, name) is not None
        }  # fmt: skip
        hosts.append(replace(host, **keep) if keep else host)
    return replace(wanted, hosts=tuple(hosts))


def _tls_fields(host: HostConfig) -> tuple[str | None, str]:
    return host.tls_key, host.tls_psk_derivation


def _host_changes(current: TargetConfig, wanted: TargetConfig) -> list[str]:
    """One line per host added, removed or re-keyed, never with a secret in it; new
    connections use the new settings, live ones keep theirs until they re-authenticate."""
    lines = []
    before = {h.nqn: h for h in current.hosts}
    after = {h.nqn: h for h in wanted.hosts}
    for nqn, host in after.items():
        old = before.get(nqn)
        settings = f"authentication {host.authentication}"
        if host.dhchap_key is not None:
            settings += f", {host.dhchap_hash}, {host.dhchap_dhgroup}"
        if host.tls_key is not None:
            settings += f", TLS PSK ({host.tls_psk_derivation})"
        if old is None:
            lines.append(f"host {nqn} added ({settings})")
        elif old != host:
            what = "DH-HMAC-CHAP" if _tls_fields(old) == _tls_fields(host) else "TLS"
            lines.append(f"host {nqn} {what} settings changed ({settings})")
    lines += [f"host {nqn} removed" for nqn in before if nqn not in after]
    return lines
