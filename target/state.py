"""The target's model: subsystems, ports, ANA change counts, the discovery log generation.

Pure bookkeeping plus the operator actions that change it (ANA state, namespaces); each action
notifies the affected controllers through asynchronous events. No sockets here.
"""

from __future__ import annotations

import logging
from bisect import bisect_right
from dataclasses import replace

from logfmt.aggregate import Aggregator
from nvmeof.aen import ANA_CHANGE, DISCOVERY_CHANGE, NS_CHANGED
from nvmeof.constants import (
    DISCOVERY_NQN,
    OAES_ANA_CHANGE,
    OAES_DISCOVERY_CHANGE,
    OAES_NS_ATTR,
    AddressFamily,
    AnaState,
    DiscoverySubtype,
    SecureChannel,
    TcpSecurityType,
    TransportType,
)
from nvmeof.wire.logpages import AnaGroupDescriptor, DiscoveryEntry
from target.config import HostConfig, NamespaceConfig, SubsystemConfig, TargetConfig
from target.control.faults import FaultRule, FaultSet
from target.controller import Controller
from target.port import Port
from target.subsystem import Namespace, Subsystem

log = logging.getLogger("nvmeof.target")

#: ANAGRPMAX / NANAGRPID reported in Identify Controller.
MAX_ANA_GROUPS = 128
#: TREQ: secure channel not required (2); SQ flow control disable supported (bit 2) is not
#: advertised, so nvme connect-all does not ask for it.
DISCOVERY_TREQ = SecureChannel.NOT_REQUIRED
#: A TLS port's TREQ and TSAS (SECTYPE TLS 1.3 in byte 0), as nvmet reports a port with
#: addr_tsas = tls1.3 (nvmet_port_init_tsas_tcp).
_TLS_TREQ = {"required": SecureChannel.REQUIRED, "allowed": SecureChannel.NOT_REQUIRED}
_TLS_TSAS = bytes([TcpSecurityType.TLS13])


#: Upper bounds (seconds) of the command latency histogram buckets (``+Inf`` is implied).
LATENCY_BOUNDS = (25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3,
                  0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)  # fmt: skip
#: Index offset of I/O queue opcodes in :attr:`CommandStats.ok` (admin opcodes start at 0).
IO_OPCODES = 0x100


class CommandStats:
    """Command counters of one port, bumped by its connections as commands complete.

    Plain lists and ints (one index per command, no allocation): :mod:`target.control.metrics` reads
    them at scrape time. ``ok`` counts successes by ``IO_OPCODES * io_queue + opcode``;
    ``errors`` counts failures by (that index, status code); ``latency`` holds the bucket
    counts for :data:`LATENCY_BOUNDS` plus one for ``+Inf``.
    """

    __slots__ = ("errors", "latency", "latency_sum", "ok")

    def __init__(self) -> None:
        self.ok = [0] * (2 * IO_OPCODES)
        self.errors: dict[tuple[int, int], int] = {}
        self.latency = [0] * (len(LATENCY_BOUNDS) + 1)
        self.latency_sum = 0.0

    def observe(self, elapsed: float, count: int = 1) -> None:
        """``count`` commands that took ``elapsed`` seconds."""
        self.latency[bisect_right(LATENCY_BOUNDS, elapsed)] += count
        self.latency_sum += elapsed * count

    def count_error(self, index: int, status: int) -> None:
        key = (index, (status >> 1) & 0x7FF)
        self.errors[key] = self.errors.get(key, 0) + 1


class ByteCounts:
    """Bytes read and written by successful commands, per NSID of one subsystem."""

    __slots__ = ("read", "written")

    def __init__(self) -> None:
        self.read: dict[int, int] = {}
        self.written: dict[int, int] = {}


class TargetState:
    """Everything a target serves, independent of how bytes move."""

    def __init__(self, config: TargetConfig) -> None:
        self.config = config
        self.subsystems: dict[str, Subsystem[Controller]] = {
            s.nqn: Subsystem(s) for s in config.subsystems
        }
        self.ports: dict[int, Port] = {p.id: Port(p) for p in config.ports}
        #: nvmetcli's ``hosts``: the hosts known to the target (allowed hosts need not be), with
        #: their DH-HMAC-CHAP settings; a Connect looks its host up here.
        self.hosts: tuple[HostConfig, ...] = config.hosts
        self.ana_chgcnt = 0
        self.discovery_genctr = 0
        #: The discovery subsystem's NQN: the unique one if configured (TP 8013).
        self.unique_discovery_nqn = config.discovery_nqn
        self.discovery_nqn = config.discovery_nqn or DISCOVERY_NQN
        self.discovery_controllers: dict[int, Controller] = {}
        self._next_disc_cntlid = 1
        self.faults = FaultSet()
        self.faults_fired: dict[str, int] = {}
        self.fault_log = Aggregator(log)
        # Counters read by target.control.metrics at scrape time.
        self.command_stats: dict[int, CommandStats] = {pid: CommandStats() for pid in self.ports}
        self.byte_counts: dict[str, ByteCounts] = {nqn: ByteCounts() for nqn in self.subsystems}
        self.keepalive_expirations = 0
        #: Authentication transactions by outcome ("success", "failure"), for metrics.
        self.auth_results: dict[str, int] = {}
        #: TLS handshakes on TLS ports by result (ok, failed, timeout): target.tls.
        self.tls_results: dict[str, int] = {}
        self.termreqs_sent = 0

    # -- lookups -----------------------------------------------------------------------------

    def host_config(self, nqn: str) -> HostConfig | None:
        return next((h for h in self.hosts if h.nqn == nqn), None)

    def controllers(self) -> list[Controller]:
        ctrls = list(self.discovery_controllers.values())
        for sub in self.subsystems.values():
            ctrls.extend(sub.controllers.values())
        return ctrls

    def port_stats(self, port_id: int) -> CommandStats:
        return self.command_stats.setdefault(port_id, CommandStats())

    def subsystem_bytes(self, nqn: str) -> ByteCounts:
        return self.byte_counts.setdefault(nqn, ByteCounts())

    def allocate_discovery_cntlid(self) -> int:
        while self._next_disc_cntlid in self.discovery_controllers:
            self._next_disc_cntlid = self._next_disc_cntlid % 0xFFEF + 1
        cntlid = self._next_disc_cntlid
        self._next_disc_cntlid = cntlid % 0xFFEF + 1
        return cntlid

    def ana_groups(self, subsystem: Subsystem[Controller], port: Port) -> list[AnaGroupDescriptor]:
        """ANA log descriptors for a controller of ``subsystem`` connected through ``port``."""
        groups: dict[int, list[int]] = {grp: [] for grp in port.ana}
        for nsid in subsystem.active_nsids():
            groups.setdefault(subsystem.namespaces[nsid].ana_group, []).append(nsid)
        return [
            AnaGroupDescriptor(
                grpid=grp, state=int(port.ana_state(grp)),
                chgcnt=port.ana_chgcnt.get(grp, 0), nsids=tuple(nsids),
            )
            for grp, nsids in sorted(groups.items())
        ]  # fmt: skip

    def discovery_entries(
        self, hostnqn: str, via: Port, local_addr: str = ""
    ) -> list[DiscoveryEntry]:
        """One entry per (subsystem, port) the host may use, then ``via``'s referrals.

        A port bound to a wildcard address without an advertised one is listed with
        ``local_addr``, the address the host reached us on (as nvmet does).
        """
        # TP 8013, as nvmet: the first entry describes the discovery subsystem itself on the
        # port the host came through.
        current = _entry(via, self.discovery_nqn, local_addr)
        entries = [replace(current, subtype=DiscoverySubtype.CURRENT_DISCOVERY)]
        for port in sorted(self.ports.values(), key=lambda p: p.id):
            if not port.enabled:
                continue
            for nqn in port.subsystems:
                sub = self.subsystems.get(nqn)
                if sub is None or not sub.host_allowed(hostnqn):
                    continue
                entries.append(_entry(port, nqn, local_addr))
        for ref in via.referrals:
            entries.append(
                DiscoveryEntry(
                    trtype=TransportType.TCP, adrfam=_adrfam(ref.addr),
                    subtype=DiscoverySubtype.REFERRAL, treq=DISCOVERY_TREQ, portid=ref.portid,
                    cntlid=0xFFFF, asqsz=32, eflags=0, trsvcid=str(ref.port),
                    subnqn=DISCOVERY_NQN, traddr=ref.addr,
                )
            )  # fmt: skip
        return entries

    # -- operator actions --------------------------------------------------------------------

    def set_ana_state(self, port_id: int, group: int, state: AnaState) -> list[Controller]:
        """Change the ANA state of ``group`` on a port; returns the controllers notified."""
        port = self.ports[port_id]
        if not 1 <= group <= MAX_ANA_GROUPS:
            raise ValueError(f"ANA group {group} outside 1..{MAX_ANA_GROUPS}")
        port.ana[group] = state
        notified = self._ana_changed(port, group)
        log.info("ana change port=%s group=%s state=%s chgcnt=%s controllers=%s",
                 port_id, group, state.label, self.ana_chgcnt, len(notified))  # fmt: skip
        return notified

    def set_unique_discovery_nqn(self, nqn: str | None) -> None:
        self.unique_discovery_nqn = nqn
        self.discovery_nqn = nqn or DISCOVERY_NQN

    def add_subsystem(self, cfg: SubsystemConfig) -> Subsystem[Controller]:
        sub: Subsystem[Controller] = Subsystem(cfg)
        self.subsystems[cfg.nqn] = sub
        self.subsystem_bytes(cfg.nqn)
        log.info("subsystem added nqn=%s namespaces=%s", cfg.nqn, len(sub.namespaces))
        return sub

    def remove_subsystem(self, nqn: str) -> int:
        """Drop a subsystem and its controllers (nvmet_subsys_del_ctrls); returns how many."""
        sub = self.subsystems.pop(nqn)
        ctrls = list(sub.controllers.values())
        for ctrl in ctrls:
            ctrl.close("subsystem removed")
        for port in self.ports.values():
            if nqn in port.subsystems:
                port.subsystems.remove(nqn)
        sub.close()
        log.info("subsystem removed nqn=%s controllers=%s", nqn, len(ctrls))
        return len(ctrls)

    def unlink(self, port: Port, nqn: str) -> int:
        """Stop exposing a subsystem on a port and drop its controllers there
        (nvmet_port_subsys_drop_link -> nvmet_port_del_ctrls); returns how many."""
        if nqn in port.subsystems:
            port.subsystems.remove(nqn)
        sub = self.subsystems.get(nqn)
        ctrls = [c for c in sub.controllers.values() if c.port is port] if sub else []
        for ctrl in ctrls:
            ctrl.close(f"subsystem unlinked from port {port.id}")
        return len(ctrls)

    def remove_ana_group(self, port_id: int, group: int) -> list[Controller]:
        """Forget a group's state on a port (it reads as optimized again) and tell hosts."""
        port = self.ports[port_id]
        port.ana.pop(group, None)
        return self._ana_changed(port)

    def namespace_group_changed(self, sub: Subsystem[Controller]) -> None:
        """A namespace moved to another ANA group (nvmet_ns_ana_grpid_store): ANA change."""
        self.ana_chgcnt += 1
        for ctrl in sub.controllers.values():
            ctrl.post_event(ANA_CHANGE, OAES_ANA_CHANGE)

    def _ana_changed(self, port: Port, group: int | None = None) -> list[Controller]:
        self.ana_chgcnt += 1
        if group is not None:
            port.ana_chgcnt[group] = self.ana_chgcnt
        notified = [c for c in self.controllers() if c.port is port and not c.discovery]
        for ctrl in notified:
            ctrl.post_event(ANA_CHANGE, OAES_ANA_CHANGE)
        return notified

    def add_namespace(self, nqn: str, cfg: NamespaceConfig) -> Namespace:
        sub = self.subsystems[nqn]
        if not 1 <= cfg.nsid <= sub.max_namespaces:
            raise ValueError(f"NSID {cfg.nsid} outside 1..{sub.max_namespaces} (Identify NN)")
        if cfg.nsid in sub.namespaces:
            raise ValueError(f"NSID {cfg.nsid} already exists in {nqn}")
        ns = Namespace(nqn, cfg)
        sub.namespaces[cfg.nsid] = ns
        self._namespace_changed(sub, cfg.nsid)
        return ns

    def remove_namespace(self, nqn: str, nsid: int) -> None:
        sub = self.subsystems[nqn]
        ns = sub.namespaces.pop(nsid)
        ns.backend.close()
        self._namespace_changed(sub, nsid)

    def set_namespace_enabled(self, nqn: str, nsid: int, enabled: bool) -> None:
        sub = self.subsystems[nqn]
        sub.namespaces[nsid].enabled = enabled
        self._namespace_changed(sub, nsid)

    def resize_namespace(self, nqn: str, nsid: int, size: int) -> None:
        sub = self.subsystems[nqn]
        sub.namespaces[nsid].resize(size)
        self._namespace_changed(sub, nsid)

    def clear_reservations(self, nqn: str, nsid: int) -> list[Controller]:
        """The operator's clear of a namespace's registrations and reservation (as a
        Release with the clear action from no registrant): every registrant's controllers get
        a Reservation Preempted notification (its mask allowing), PTPL state is saved. Returns
        the controllers notified. KeyError for an unknown subsystem or namespace, ValueError
        when the namespace does not serve reservations."""
        sub = self.subsystems[nqn]
        ns = sub.namespaces[nsid]
        resv = ns.reservations
        if resv is None:
            raise ValueError(f"namespace {nsid} of {nqn} does not serve reservations")
        registrants, rtype = len(resv.registrants), resv.rtype
        notices = resv.clear()
        notified: list[Controller] = []
        for notice in notices:
            for ctrl in list(sub.controllers.values()):
                if ctrl.hostid == notice.hostid:
                    ctrl.notify_reservation(notice.type, nsid)
                    notified.append(ctrl)
        ns.persist_reservations()
        log.info("reservations cleared subsystem=%s nsid=%s registrants=%s rtype=%s "
                 "generation=%s notified=%s", nqn, nsid, registrants, rtype, resv.generation,
                 len(notified))  # fmt: skip
        return notified

    def _namespace_changed(self, sub: Subsystem[Controller], nsid: int) -> None:
        for ctrl in sub.controllers.values():
            ctrl.note_changed_ns(nsid)
            ctrl.post_event(NS_CHANGED, OAES_NS_ATTR)
        log.info("namespace change subsystem=%s nsid=%s", sub.nqn, nsid)

    def discovery_changed(self) -> None:
        """The discovery log changed (ports, subsystems, hosts): bump GENCTR and tell hosts."""
        self.discovery_genctr += 1
        for ctrl in self.discovery_controllers.values():
            ctrl.post_event(DISCOVERY_CHANGE, OAES_DISCOVERY_CHANGE)

    def fault_fired(self, rule: FaultRule, where: str) -> None:
        self.faults_fired[rule.action] = self.faults_fired.get(rule.action, 0) + 1
        # A rule may fire on every command: one line per rule per second, with the count.
        self.fault_log.note(f"fault fired rule={rule.id} action={rule.action}", where)

    def close(self) -> None:
        self.fault_log.flush()
        for ctrl in self.controllers():
            ctrl.close("target shutting down")
        for sub in self.subsystems.values():
            sub.close()


def _adrfam(addr: str) -> int:
    return AddressFamily.IPV6 if ":" in addr else AddressFamily.IPV4


_WILDCARDS = ("", "0.0.0.0", "::")


def _entry(port: Port, nqn: str, local_addr: str) -> DiscoveryEntry:
    addr = port.advertised_addr
    if addr in _WILDCARDS and local_addr:
        addr = local_addr
    return DiscoveryEntry(
        trtype=TransportType.TCP, adrfam=_adrfam(addr), subtype=DiscoverySubtype.NVME,
        treq=_TLS_TREQ[port.tls] if port.tls else DISCOVERY_TREQ, portid=port.id, cntlid=0xFFFF,
        asqsz=32, eflags=0, trsvcid=str(port.bound_port), subnqn=nqn, traddr=addr,
        tsas=_TLS_TSAS if port.tls else bytes(256),
    )  # fmt: skip
