"""A fixed-size latency histogram (log2 major buckets, 16 linear sub-buckets each).

Recording is a few integer operations and one list increment: no allocation per I/O.
Percentiles are accurate to 1/16 of their power-of-two range, like fio's.
"""

from __future__ import annotations

_SUB = 16
_MAJOR = 48
_LAST = _MAJOR * _SUB - 1


class LatencyHistogram:
    """Latencies in nanoseconds."""

    __slots__ = ("count", "counts", "max_ns", "min_ns", "total_ns")

    def __init__(self) -> None:
        self.counts = [0] * (_MAJOR * _SUB)
        self.count = 0
        self.total_ns = 0
        self.min_ns = 0
        self.max_ns = 0

    def record(self, ns: int) -> None:
        if ns < 0:
            ns = 0
        if self.count == 0 or ns < self.min_ns:
            self.min_ns = ns
        if ns > self.max_ns:
            self.max_ns = ns
        self.count += 1
        self.total_ns += ns
        if ns < _SUB:  # _index(ns), inlined: this runs for every I/O
            index = ns
        else:
            major = ns.bit_length() - 4  # >= 1 here
            index = major * _SUB + (ns >> (major - 1)) - _SUB
            if index > _LAST:
                index = _LAST
        self.counts[index] += 1

    def merge(self, other: LatencyHistogram) -> None:
        if not other.count:
            return
        if not self.count or other.min_ns < self.min_ns:
            self.min_ns = other.min_ns
        self.max_ns = max(self.max_ns, other.max_ns)
        self.count += other.count
        self.total_ns += other.total_ns
        for i, n in enumerate(other.counts):
            if n:
                self.counts[i] += n

    @property
    def mean_ns(self) -> float:
        return self.total_ns / self.count if self.count else 0.0

    def percentile(self, pct: float) -> int:
        """The upper bound of the bucket holding the ``pct`` percentile (0 when empty)."""
        if not self.count:
            return 0
        rank = max(1, round(self.count * pct / 100))
        seen = 0
        for index, n in enumerate(self.counts):
            seen += n
            if seen >= rank:
                return min(_upper(index), self.max_ns)
        return self.max_ns


def _index(ns: int) -> int:
    if ns < _SUB:
        return ns
    major = ns.bit_length() - 4  # >= 1 here
    minor = (ns >> (major - 1)) - _SUB if major > 0 else ns
    index = major * _SUB + minor
    return min(index, _MAJOR * _SUB - 1)


def _upper(index: int) -> int:
    major, minor = divmod(index, _SUB)
    if major == 0:
        return minor
    return ((_SUB + minor + 1) << (major - 1)) - 1
