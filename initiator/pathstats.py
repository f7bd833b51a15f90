"""Per-path and per-head counters of the multipath layer, and the histogram they use.

Split from :mod:`initiator.multipath` (which re-exports them): what the metrics, the bench and
the CLI read.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass, field

#: Upper bounds (seconds) of the per-path I/O latency histogram (``+Inf`` implied).
LATENCY_BOUNDS = (25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3,
                  0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)  # fmt: skip
#: Upper bounds (seconds) of the failover time histogram (path error to I/O flowing again).
FAILOVER_BOUNDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                   120.0)  # fmt: skip


@dataclass(slots=True)
class Buckets:
    """Histogram counters over fixed bounds: an observation is one bisect and one increment.
    ``counts`` has one bucket per bound plus ``+Inf``; the metrics make them cumulative."""

    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    sum: float = 0.0
    largest: float = 0.0  # by observe() only (the per-I/O latency path inlines its own count)

    def __post_init__(self) -> None:
        if not self.counts:
            self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, value: float) -> None:
        self.counts[bisect_right(self.bounds, value)] += 1
        self.sum += value
        self.largest = max(self.largest, value)

    @property
    def count(self) -> int:
        return sum(self.counts)


def _latency_buckets() -> Buckets:
    return Buckets(LATENCY_BOUNDS)


@dataclass
class PathStats:
    """Per-path counters (what ``nvmeof bench`` and the metrics show)."""

    ios: int = 0
    bytes: int = 0
    errors: int = 0
    failovers: int = 0  # commands that left this path because of an error
    retries: int = 0
    losses: int = 0  # times the path stopped being usable
    latency: Buckets = field(default_factory=_latency_buckets)  # completions, from sending


@dataclass
class HeadStats:
    """Head counters, named like the kernel's multipath diagnostics."""

    failovers: int = 0  # failover events (a path error sending commands elsewhere)
    requeued: int = 0  # commands put on the requeue list
    retries: int = 0  # same-path retries
    no_path_queued: int = 0  # commands parked because no path was usable
    failed: int = 0  # commands failed because no path was available
    quiesce_held: int = 0  # commands held until their lost controller's quiesce deadline
    path_losses: int = 0  # a usable path stopped being usable (with or without I/O on it)
