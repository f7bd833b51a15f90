"""Prometheus metrics of the target, read at scrape time from the model (no hidden globals).

``target_registry(target)`` returns a fresh :class:`prometheus_client.CollectorRegistry` holding
a collector over ``target``; the HTTP layer serves it on ``/metrics``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from target.daemon import Target


class TargetCollector(Collector):
    """Snapshots of ports, connections and ANA states at scrape time."""

    def __init__(self, target: Target) -> None:
        self.target = target

    def collect(self) -> Iterator[Metric]:
        target = self.target
        connections = GaugeMetricFamily(
            "nvmeof_target_connections", "Open TCP connections (queues) per port", labels=["port"]
        )
        ana = GaugeMetricFamily(
            "nvmeof_target_ana_state",
            "ANA state of each (port, group): 1 for the current state",
            labels=["port", "group", "state"],
        )
        for port in target.ports.values():
            count = sum(1 for c in target.connections if c.port is port)
            connections.add_metric([str(port.id)], count)
            for group, state in sorted(port.ana.items()):
                ana.add_metric([str(port.id), str(group), state.label], 1)
        yield connections
        yield ana


def target_registry(target: Target) -> CollectorRegistry:
    """A new registry with the target's collector (pass it to the HTTP layer or to tests)."""
    registry = CollectorRegistry(auto_describe=True)
    registry.register(TargetCollector(target))
    return registry
