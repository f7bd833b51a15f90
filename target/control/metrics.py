"""Prometheus metrics of the target, read at scrape time from the model (no hidden globals).

``target_registry(target)`` returns a fresh :class:`prometheus_client.CollectorRegistry` holding
a :class:`TargetCollector` over ``target``; the HTTP layer serves it on ``/metrics``.

Nothing here runs per command: the connections bump plain counters
(:class:`~target.state.CommandStats` per port, :class:`~target.state.ByteCounts` per subsystem,
a few integers on :class:`~target.state.TargetState`) and the collector turns a snapshot of them
into metric families when scraped.

Metrics (``port`` is the port ID, ``group`` the ANA group ID):

- ``nvmeof_target_commands_total{port,opcode,status}``: completed commands; ``opcode`` is the
  admin or I/O opcode name (``read``, ``identify``, ``fabrics``...), ``status`` ``success`` or
  the status code name (``host_path_error``, ``ana_inaccessible``...).
- ``nvmeof_target_read_bytes_total`` / ``nvmeof_target_written_bytes_total{subsystem,nsid}``.
- ``nvmeof_target_command_latency_seconds{port}``: histogram, command arrival to completion.
- ``nvmeof_target_inflight_commands{port}``, ``nvmeof_target_connections{port}``,
  ``nvmeof_target_tls_connections{port}``,
  ``nvmeof_target_controllers{subsystem,host}``.
- ``nvmeof_target_keepalive_expirations_total``, ``nvmeof_target_termreqs_sent_total``,
  ``nvmeof_target_auth_total{result}`` (DH-HMAC-CHAP transactions: success, failure),
  ``nvmeof_target_tls_handshakes_total{result}`` (TLS ports: ok, failed, timeout),
  ``nvmeof_target_faults_fired_total{action}``, ``nvmeof_target_fault_rules``.
- ``nvmeof_target_ana_state{port,group,state}`` (1 for the current state, 0 for the others),
  ``nvmeof_target_ana_state_code{port,group}`` (the ANA state value: 1 optimized,
  2 non-optimized, 3 inaccessible, 4 persistent loss, 15 change),
  ``nvmeof_target_ana_changes_total``.
- ``nvmeof_target_port_up{port}`` (1 while the operator state is ``up``),
  ``nvmeof_target_port_mode{port,mode}`` (1 for the current mode: up, reset, close,
  blackhole, refuse).
- ``nvmeof_target_reservation_conflicts_total{subsystem,nsid}``: Reservation Conflict answers
  (commands refused by a reservation and reservation commands refused), per namespace that
  serves reservations; ``nvmeof_target_reservation_registrants{subsystem,nsid}`` (registered
  hosts), ``nvmeof_target_reservation_type{subsystem,nsid}`` (the reservation's RTYPE: 1 Write
  Exclusive ... 6 Exclusive Access - All Registrants; 0 when none is held).
- ``nvmeof_target_scenario_steps_total{scenario,action}``: scenario steps (and other markers)
  reported through ``POST /events`` (:meth:`~target.control.lifecycle.Lifecycle.scenario_event`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.registry import Collector

from nvmeof.constants import DISCOVERY_NQN, AdminOpcode, AnaState, IoOpcode
from nvmeof.status import StatusCode
from target.control.actions import PORT_DOWN_MODES
from target.control.faults import ACTIONS
from target.state import IO_OPCODES, LATENCY_BOUNDS, CommandStats

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from target.connection import QueueConnection
    from target.daemon import Target
    from target.port import Port

PORT_MODES = ("up", *PORT_DOWN_MODES)
#: Bucket bounds as Prometheus spells them in ``le`` labels.
_LE = [repr(float(b)) for b in LATENCY_BOUNDS]


def opcode_name(index: int) -> str:
    """Name of a :attr:`CommandStats.ok` index: I/O opcodes from ``IO_OPCODES`` up."""
    io, opcode = divmod(index, IO_OPCODES)
    if opcode == AdminOpcode.FABRICS:
        return "fabrics"
    try:
        return (IoOpcode(opcode) if io else AdminOpcode(opcode)).name.lower()
    except ValueError:
        return f"{'io' if io else 'admin'}_{opcode:#04x}"


def status_name(code: int) -> str:
    """``success``, or the status code's name (``host_path_error``), or its hex value."""
    if code == 0:
        return "success"
    try:
        return StatusCode(code).name.lower()
    except ValueError:
        return f"{code:#05x}"


def _by_name(stats: CommandStats) -> dict[tuple[str, str], int]:
    """Command counts by (opcode name, status name). The counters are kept by index, admin and
    I/O opcodes apart, but Fabrics commands (Connect, Property Get, authentication) come on
    both kinds of queue under one name: summed here, or a scrape holds the series twice."""
    series: dict[tuple[str, str], int] = {}
    for index, count in enumerate(list(stats.ok)):
        if count:
            key = (opcode_name(index), "success")
            series[key] = series.get(key, 0) + count
    for (index, code), count in sorted(stats.errors.items()):
        key = (opcode_name(index), status_name(code))
        series[key] = series.get(key, 0) + count
    return series


def histogram_buckets(counts: Iterable[int], le: list[str]) -> list[tuple[str, float]]:
    """Cumulative ``(le, count)`` pairs from per-bucket counts (the last bucket is +Inf)."""
    buckets: list[tuple[str, float]] = []
    total = 0
    for bound, count in zip([*le, "+Inf"], counts, strict=True):
        total += count
        buckets.append((bound, total))
    return buckets


class TargetCollector(Collector):
    """Snapshots of ports, connections, controllers, counters and ANA states at scrape time."""

    def __init__(self, target: Target) -> None:
        self.target = target

    def collect(self) -> Iterator[Metric]:
        target = self.target
        ports = sorted(target.state.ports.values(), key=lambda p: p.id)
        connections = list(target.connections)
        yield from self._commands(ports)
        yield from self._bytes()
        yield from self._queues(ports, connections)
        yield from self._controllers()
        yield from self._events()
        yield from self._ana(ports)
        yield from self._ports(ports)
        yield from self._reservations()
        yield self._scenario_steps()

    def _commands(self, ports: list[Port]) -> Iterator[Metric]:
        commands = CounterMetricFamily(
            "nvmeof_target_commands", "Commands completed, by opcode and status",
            labels=["port", "opcode", "status"],
        )  # fmt: skip
        latency = HistogramMetricFamily(
            "nvmeof_target_command_latency_seconds",
            "Command latency: arrival of the command to its completion", labels=["port"],
        )  # fmt: skip
        stats_by_port = self.target.state.command_stats
        for port in ports:
            label = str(port.id)
            stats = stats_by_port.get(port.id) or CommandStats()
            for (opcode, status), count in _by_name(stats).items():
                commands.add_metric([label, opcode, status], count)
            latency.add_metric([label], histogram_buckets(list(stats.latency), _LE),
                               stats.latency_sum)  # fmt: skip
        yield commands
        yield latency

    def _bytes(self) -> Iterator[Metric]:
        state = self.target.state
        read = CounterMetricFamily(
            "nvmeof_target_read_bytes", "Bytes read by successful Read commands",
            labels=["subsystem", "nsid"],
        )  # fmt: skip
        written = CounterMetricFamily(
            "nvmeof_target_written_bytes", "Bytes written by successful Write commands",
            labels=["subsystem", "nsid"],
        )  # fmt: skip
        for nqn, sub in list(state.subsystems.items()):
            counts = state.byte_counts.get(nqn)
            done_read = dict(counts.read) if counts else {}
            done_written = dict(counts.written) if counts else {}
            for nsid in sorted({*sub.namespaces, *done_read, *done_written}):
                labels = [nqn, str(nsid)]
                read.add_metric(labels, done_read.get(nsid, 0))
                written.add_metric(labels, done_written.get(nsid, 0))
        yield read
        yield written

    def _queues(self, ports: list[Port], connections: list[QueueConnection]) -> Iterator[Metric]:
        conns = GaugeMetricFamily(
            "nvmeof_target_connections", "Open TCP connections (queues) per port", labels=["port"]
        )
        secured = GaugeMetricFamily(
            "nvmeof_target_tls_connections", "Open connections (queues) over TLS per port",
            labels=["port"],
        )  # fmt: skip
        inflight = GaugeMetricFamily(
            "nvmeof_target_inflight_commands",
            "Commands received and not yet completed (outstanding AERs excluded)",
            labels=["port"],
        )  # fmt: skip
        for port in ports:
            mine = [c for c in connections if c.port is port]
            conns.add_metric([str(port.id)], len(mine))
            secured.add_metric([str(port.id)], sum(c.tls_identity is not None for c in mine))
            inflight.add_metric([str(port.id)], sum(c.inflight for c in mine))
        yield conns
        yield secured
        yield inflight

    def _controllers(self) -> Iterator[Metric]:
        state = self.target.state
        family = GaugeMetricFamily(
            "nvmeof_target_controllers", "Live controllers per subsystem and host",
            labels=["subsystem", "host"],
        )  # fmt: skip
        counts: dict[tuple[str, str], int] = {}
        for ctrl in list(state.discovery_controllers.values()):
            key = (DISCOVERY_NQN, ctrl.hostnqn)
            counts[key] = counts.get(key, 0) + 1
        for nqn, sub in list(state.subsystems.items()):
            for ctrl in list(sub.controllers.values()):
                key = (nqn, ctrl.hostnqn)
                counts[key] = counts.get(key, 0) + 1
        for (nqn, host), count in sorted(counts.items()):
            family.add_metric([nqn, host], count)
        yield family

    def _events(self) -> Iterator[Metric]:
        state = self.target.state
        yield CounterMetricFamily(
            "nvmeof_target_keepalive_expirations",
            "Controllers removed because their keep-alive timer expired",
            value=state.keepalive_expirations,
        )  # fmt: skip
        yield CounterMetricFamily(
            "nvmeof_target_termreqs_sent", "C2HTermReq PDUs sent on fatal transport errors",
            value=state.termreqs_sent,
        )  # fmt: skip
        auth = CounterMetricFamily(
            "nvmeof_target_auth", "DH-HMAC-CHAP transactions of queues, by result",
            labels=["result"],
        )  # fmt: skip
        for result in ("success", "failure"):
            auth.add_metric([result], state.auth_results.get(result, 0))
        yield auth
        tls = CounterMetricFamily(
            "nvmeof_target_tls_handshakes", "TLS handshakes on TLS ports, by result",
            labels=["result"],
        )  # fmt: skip
        for result in ("ok", "failed", "timeout"):
            tls.add_metric([result], state.tls_results.get(result, 0))
        yield tls
        fired = CounterMetricFamily(
            "nvmeof_target_faults_fired", "Injected faults that fired, by action",
            labels=["action"],
        )  # fmt: skip
        counts = dict(state.faults_fired)
        for action in sorted({*ACTIONS, *counts}):
            fired.add_metric([action], counts.get(action, 0))
        yield fired
        yield GaugeMetricFamily(
            "nvmeof_target_fault_rules", "Active fault injection rules",
            value=len(state.faults.rules),
        )  # fmt: skip

    def _ana(self, ports: list[Port]) -> Iterator[Metric]:
        state = self.target.state
        ana = GaugeMetricFamily(
            "nvmeof_target_ana_state",
            "ANA state of each (port, group): 1 for the current state, 0 for the others",
            labels=["port", "group", "state"],
        )  # fmt: skip
        code = GaugeMetricFamily(
            "nvmeof_target_ana_state_code",
            "ANA state of each (port, group) as its value (1 optimized, 2 non-optimized, "
            "3 inaccessible, 4 persistent loss, 15 change)",
            labels=["port", "group"],
        )  # fmt: skip
        for port in ports:
            groups = set(port.ana)
            for nqn in port.subsystems:
                sub = state.subsystems.get(nqn)
                if sub is not None:
                    groups.update(ns.ana_group for ns in list(sub.namespaces.values()))
            for group in sorted(groups):
                current = port.ana_state(group)
                labels = [str(port.id), str(group)]
                code.add_metric(labels, int(current))
                for each in AnaState:
                    ana.add_metric([*labels, each.label], 1 if each is current else 0)
        yield ana
        yield code
        yield CounterMetricFamily(
            "nvmeof_target_ana_changes", "ANA state changes (the ANA change count)",
            value=state.ana_chgcnt,
        )  # fmt: skip

    def _ports(self, ports: list[Port]) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "nvmeof_target_port_up", "1 while the port serves (operator state up)",
            labels=["port"],
        )  # fmt: skip
        mode = GaugeMetricFamily(
            "nvmeof_target_port_mode",
            "Operator state of each port: 1 for the current mode, 0 for the others",
            labels=["port", "mode"],
        )  # fmt: skip
        for port in ports:
            label = str(port.id)
            up.add_metric([label], 1 if port.mode == "up" and port.enabled else 0)
            for each in sorted({*PORT_MODES, port.mode}, key=_mode_order):
                mode.add_metric([label, each], 1 if each == port.mode else 0)
        yield up
        yield mode

    def _reservations(self) -> Iterator[Metric]:
        conflicts = CounterMetricFamily(
            "nvmeof_target_reservation_conflicts",
            "Reservation Conflict answers: commands a reservation refused, reservation "
            "commands refused", labels=["subsystem", "nsid"],
        )  # fmt: skip
        registrants = GaugeMetricFamily(
            "nvmeof_target_reservation_registrants", "Hosts registered with the namespace",
            labels=["subsystem", "nsid"],
        )  # fmt: skip
        rtype = GaugeMetricFamily(
            "nvmeof_target_reservation_type",
            "The reservation's type (RTYPE 1..6: WE, EA, WE-RO, EA-RO, WE-AR, EA-AR), 0 when "
            "none is held", labels=["subsystem", "nsid"],
        )  # fmt: skip
        for nqn, sub in list(self.target.state.subsystems.items()):
            for nsid, ns in sorted(sub.namespaces.items(), key=lambda item: item[0]):
                resv = ns.reservations
                if resv is None:
                    continue
                labels = [nqn, str(nsid)]
                conflicts.add_metric(labels, resv.conflicts)
                registrants.add_metric(labels, len(resv.registrants))
                rtype.add_metric(labels, resv.rtype)
        yield conflicts
        yield registrants
        yield rtype

    def _scenario_steps(self) -> Metric:
        family = CounterMetricFamily(
            "nvmeof_target_scenario_steps", "Scenario steps reported to the target, by action",
            labels=["scenario", "action"],
        )  # fmt: skip
        for (scenario, action), count in sorted(self.target.scenario_steps.items()):
            family.add_metric([scenario, action], count)
        return family


def _mode_order(mode: str) -> tuple[int, str]:
    return (PORT_MODES.index(mode) if mode in PORT_MODES else len(PORT_MODES), mode)


def target_registry(target: Target) -> CollectorRegistry:
    """A new registry with the target's collector (pass it to the HTTP layer or to tests)."""
    registry = CollectorRegistry(auto_describe=True)
    registry.register(TargetCollector(target))
    return registry
