"""Prometheus metrics of the initiator, read at scrape time from a :class:`~initiator.host.Host`.

``initiator_registry(host)`` returns a fresh registry with an :class:`InitiatorCollector`;
``serve_metrics(registry, addr, port)`` serves any registry on ``/metrics`` with a tiny HTTP/1.1
responder on a Trio listener (one request per connection, bounded reads, then close), so the
initiator does not depend on the target's ASGI stack. ``nvmeof bench --metrics ADDR:PORT``
uses both.

Nothing here runs per I/O: the multipath head and its paths keep plain counters
(:class:`~initiator.multipath.PathStats`, :class:`~initiator.multipath.HeadStats`, the
latency buckets) and the collector snapshots them when scraped.

Metrics (``path`` is the controller's ``addr:port``):

- per path ``{path,subsystem,nsid}``: ``nvmeof_initiator_path_ios_total``,
  ``_path_bytes_total``, ``_path_errors_total``, ``_path_failovers_total`` (commands that left
  the path on an error), ``_path_retries_total``, ``_path_lost_total`` (times the path stopped
  being usable; the head's sum is ``_path_losses_total``), ``_path_inflight``,
  ``_path_state{...,state}`` (1 for the controller's state: new, live, connecting, deleted),
  ``_path_ana_state{...,state}`` (1 for the path's ANA state), ``_path_ana_state_code``,
  ``_path_io_latency_seconds`` (histogram: sent on the path to completed);
- per namespace head ``{subsystem,nsid}``, named like the kernel's multipath ``diag/``
  counters: ``nvmeof_initiator_failovers_total``, ``_requeued_total``, ``_retries_total``,
  ``_no_path_queued_total``, ``_failed_total``, ``_quiesce_held_total``,
  ``_path_losses_total``, ``_queued_commands`` (parked right now),
  ``nvmeof_initiator_failover_seconds`` (histogram, recovery: a path lost, from when I/O on it
  stopped, to the first successful completion of a command sent after the loss was detected)
  and ``nvmeof_initiator_detection_seconds`` (histogram: a lost path's last good completion to
  the host marking it unusable);
- per controller ``{path,subsystem}``: ``nvmeof_initiator_reconnects_total``,
  ``nvmeof_initiator_controller_state{...,state}``,
  ``nvmeof_initiator_auth_total{...,result}`` (DH-HMAC-CHAP queue authentications,
  ``result`` success or failure; reconnects authenticate again),
  ``nvmeof_initiator_tls_handshakes_total{...,result}`` (TLS handshakes of its queues,
  ``result`` ok or failed; every queue of every association does one).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

import trio
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.registry import Collector

from initiator.session import SessionState
from nvmeof.constants import AnaState

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from initiator.host import Host
    from initiator.multipath import Buckets, MultipathHead, Path

PATH_LABELS = ["path", "subsystem", "nsid"]
HEAD_LABELS = ["subsystem", "nsid"]
#: (metric name without ``nvmeof_initiator_``, HeadStats attribute, help)
_HEAD_COUNTERS = (
    ("failovers", "failovers", "Failover events: a path error sending commands elsewhere"),
    ("requeued", "requeued", "Commands put on the requeue list"),
    ("retries", "retries", "Same-path retries"),
    ("no_path_queued", "no_path_queued", "Commands parked because no path was usable"),
    ("failed", "failed", "Commands failed because no path was available"),
    ("path_losses", "path_losses", "Times a usable path stopped being usable"),
    (
        "quiesce_held",
        "quiesce_held",
        "Commands held until their lost controller's command quiesce time ran out (TP4129)",
    ),
)
_PATH_COUNTERS = (
    ("path_ios", "ios", "I/Os completed on the path"),
    ("path_bytes", "bytes", "Bytes moved by I/Os completed on the path"),
    ("path_errors", "errors", "I/Os completed on the path with an error status"),
    ("path_failovers", "failovers", "Commands that left the path because of an error"),
    ("path_retries", "retries", "Same-path retries on the path"),
    # not "path_losses": that is the head's counter (a second family of one name is invalid
    # exposition text, and a sum over the name would count every loss twice)
    ("path_lost", "losses", "Times the path stopped being usable"),
)


def histogram_buckets(buckets: Buckets) -> list[tuple[str, float]]:
    """Cumulative ``(le, count)`` pairs of a :class:`~initiator.multipath.Buckets`."""
    out: list[tuple[str, float]] = []
    total = 0
    les = [repr(float(b)) for b in buckets.bounds]
    for le, count in zip([*les, "+Inf"], list(buckets.counts), strict=True):
        total += count
        out.append((le, total))
    return out


class InitiatorCollector(Collector):
    """Paths, namespace heads and controllers of a host, snapshotted at scrape time."""

    def __init__(self, host: Host) -> None:
        self.host = host

    def collect(self) -> Iterator[Metric]:
        heads = sorted(self.host.heads.values(), key=lambda h: (h.subnqn, h.nsid))
        yield from self._paths(heads)
        yield from self._heads(heads)
        yield from self._controllers()

    def _paths(self, heads: list[MultipathHead]) -> Iterator[Metric]:
        def name(what: str) -> str:
            return f"nvmeof_initiator_{what}"

        counters = {
            attr: CounterMetricFamily(name(metric), doc, labels=PATH_LABELS)
            for metric, attr, doc in _PATH_COUNTERS
        }
        inflight = GaugeMetricFamily(name("path_inflight"), "Commands in flight on the path",
                                     labels=PATH_LABELS)  # fmt: skip
        state = GaugeMetricFamily(
            name("path_state"), "Controller state of the path: 1 for the current state",
            labels=[*PATH_LABELS, "state"],
        )  # fmt: skip
        ana = GaugeMetricFamily(
            name("path_ana_state"), "ANA state of the path: 1 for the current state",
            labels=[*PATH_LABELS, "state"],
        )  # fmt: skip
        ana_code = GaugeMetricFamily(
            name("path_ana_state_code"),
            "ANA state of the path as its value (1 optimized, 2 non-optimized, 3 inaccessible, "
            "4 persistent loss, 15 change)",
            labels=PATH_LABELS,
        )  # fmt: skip
        latency = HistogramMetricFamily(
            name("path_io_latency_seconds"), "I/O latency on the path: sent to completed",
            labels=PATH_LABELS,
        )  # fmt: skip
        for head in heads:
            seen: set[str] = set()
            for path in list(head.paths):
                if path.label in seen:  # the same path connected twice: report the first, as
                    continue  # the controller metrics do (one series per label set)
                seen.add(path.label)
                labels = _path_labels(head, path)
                stats = path.stats
                for attr, family in counters.items():
                    family.add_metric(labels, getattr(stats, attr))
                inflight.add_metric(labels, path.inflight)
                current = path.session.state
                for each in SessionState:
                    state.add_metric([*labels, each.value], 1 if each is current else 0)
                for ana_state in AnaState:
                    ana.add_metric([*labels, ana_state.label],
                                   1 if ana_state is path.ana_state else 0)  # fmt: skip
                ana_code.add_metric(labels, int(path.ana_state))
                latency.add_metric(labels, histogram_buckets(stats.latency), stats.latency.sum)
        yield from counters.values()
        yield from (inflight, state, ana, ana_code, latency)

    def _heads(self, heads: list[MultipathHead]) -> Iterator[Metric]:
        families = [
            (attr, CounterMetricFamily(f"nvmeof_initiator_{metric}", doc, labels=HEAD_LABELS))
            for metric, attr, doc in _HEAD_COUNTERS
        ]
        queued = GaugeMetricFamily(
            "nvmeof_initiator_queued_commands",
            "Commands parked on the namespace's requeue list right now", labels=HEAD_LABELS,
        )  # fmt: skip
        failover = HistogramMetricFamily(
            "nvmeof_initiator_failover_seconds",
            "Recovery time: a path lost (I/O on it stopped) to the first successful completion "
            "of a command sent after the loss was detected", labels=HEAD_LABELS,
        )  # fmt: skip
        detection = HistogramMetricFamily(
            "nvmeof_initiator_detection_seconds",
            "Detection time: a lost path's last good completion to the host marking it "
            "unusable (losses with I/O in flight)", labels=HEAD_LABELS,
        )  # fmt: skip
        for head in heads:
            labels = [head.subnqn, str(head.nsid)]
            for attr, family in families:
                family.add_metric(labels, getattr(head.stats, attr))
            queued.add_metric(labels, head.queued)
            hist = head.failover_latency
            failover.add_metric(labels, histogram_buckets(hist), hist.sum)
            hist = head.detection_latency
            detection.add_metric(labels, histogram_buckets(hist), hist.sum)
        yield from (family for _, family in families)
        yield queued
        yield failover
        yield detection

    def _controllers(self) -> Iterator[Metric]:
        reconnects = CounterMetricFamily(
            "nvmeof_initiator_reconnects", "Reconnect attempts of the controller",
            labels=["path", "subsystem"],
        )  # fmt: skip
        state = GaugeMetricFamily(
            "nvmeof_initiator_controller_state", "Controller state: 1 for the current state",
            labels=["path", "subsystem", "state"],
        )  # fmt: skip
        reconnected = CounterMetricFamily(
            "nvmeof_initiator_reconnected", "Reconnects that brought the controller back",
            labels=["path", "subsystem"],
        )  # fmt: skip
        auth = CounterMetricFamily(
            "nvmeof_initiator_auth",
            "DH-HMAC-CHAP queue authentications of the controller, by result",
            labels=["path", "subsystem", "result"],
        )  # fmt: skip
        tls = CounterMetricFamily(
            "nvmeof_initiator_tls_handshakes",
            "TLS handshakes of the controller's queues, by result",
            labels=["path", "subsystem", "result"],
        )  # fmt: skip
        seen: set[tuple[str, str]] = set()
        for session in list(self.host.sessions):
            key = (session.label, session.subnqn)
            if key in seen:  # the same path connected twice: report the first
                continue
            seen.add(key)
            reconnects.add_metric(list(key), session.reconnects)
            reconnected.add_metric(list(key), session.reconnected)
            auth.add_metric([*key, "success"], session.auth.successes)
            auth.add_metric([*key, "failure"], session.auth.failures)
            tls.add_metric([*key, "ok"], session.tls.ok)
            tls.add_metric([*key, "failed"], session.tls.failed)
            for each in SessionState:
                state.add_metric([*key, each.value], 1 if each is session.state else 0)
        yield reconnects
        yield reconnected
        yield auth
        yield tls
        yield state


def _path_labels(head: MultipathHead, path: Path) -> list[str]:
    return [path.label, head.subnqn, str(head.nsid)]


def initiator_registry(host: Host) -> CollectorRegistry:
    """A new registry with the host's collector (serve it, or read it in tests)."""
    registry = CollectorRegistry(auto_describe=True)
    registry.register(InitiatorCollector(host))
    return registry


# -- /metrics over HTTP --------------------------------------------------------------------------

#: Request head size limit; anything longer is answered 431 and closed.
MAX_REQUEST_HEAD = 8192
#: Time a client gets to send its request and read the answer.
REQUEST_TIMEOUT = 10.0
#: Scrapes served at once; more connections are answered 503.
MAX_CLIENTS = 8
#: A client that went away.
_GONE = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)


async def serve_metrics(
    registry: CollectorRegistry, host: str, port: int, *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:  # fmt: skip
    """Serve ``registry`` as Prometheus text on ``http://host:port/metrics`` until cancelled.

    ``task_status.started`` reports the bound TCP port (``port`` 0 picks a free one).
    """
    listeners = await trio.open_tcp_listeners(port, host=host)
    limiter = trio.CapacityLimiter(MAX_CLIENTS)

    async def handle(stream: trio.SocketStream) -> None:
        try:
            limiter.acquire_nowait()
        except trio.WouldBlock:
            await _answer_quietly(stream, 503, b"too many scrapes\n")
            return
        try:
            await _serve_one(stream, registry)
        finally:
            limiter.release()

    task_status.started(listeners[0].socket.getsockname()[1])
    await trio.serve_listeners(handle, listeners)


async def _serve_one(stream: trio.SocketStream, registry: CollectorRegistry) -> None:
    with trio.move_on_after(REQUEST_TIMEOUT), contextlib.suppress(*_GONE):
        head = await _read_head(stream)
        if head is None:
            await _answer(stream, 431, b"request head too large\n")
        elif head:  # else: closed before sending a request
            method, target = _request_line(head)
            if not method:
                await _answer(stream, 400, b"bad request line\n")
            elif method not in ("GET", "HEAD"):
                await _answer(stream, 405, b"only GET\n", extra=b"Allow: GET, HEAD\r\n")
            elif target.split("?", 1)[0] != "/metrics":
                await _answer(stream, 404, b"see /metrics\n")
            else:
                body = generate_latest(registry)
                await _answer(stream, 200, body, content_type=CONTENT_TYPE_LATEST.encode(),
                              head_only=method == "HEAD")  # fmt: skip
    await _close(stream)


async def _read_head(stream: trio.SocketStream) -> bytes | None:
    """The request line and headers (b"" if closed before any; None if too long)."""
    data = bytearray()
    while b"\r\n\r\n" not in data and b"\n\n" not in data:
        if len(data) > MAX_REQUEST_HEAD:
            return None
        chunk = await stream.receive_some(4096)
        if not chunk:
            return bytes(data) if b"\n" in data else b""
        data += chunk
    return bytes(data)


def _request_line(head: bytes) -> tuple[str, str]:
    line = head.split(b"\n", 1)[0].strip().decode("latin-1")
    parts = line.split()
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        return "", ""
    return parts[0], parts[1]


_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 431: "Request Header "
            "Fields Too Large", 503: "Service Unavailable"}  # fmt: skip


async def _answer(stream: trio.SocketStream, status: int, body: bytes, *,
                  content_type: bytes = b"text/plain; charset=utf-8", extra: bytes = b"",
                  head_only: bool = False) -> None:  # fmt: skip
    header = (f"HTTP/1.1 {status} {_REASONS[status]}\r\n".encode() + b"Content-Type: " +
              content_type + f"\r\nContent-Length: {len(body)}\r\n".encode() + extra +
              b"Connection: close\r\n\r\n")  # fmt: skip
    await stream.send_all(header if head_only else header + body)


async def _answer_quietly(stream: trio.SocketStream, status: int, body: bytes) -> None:
    with trio.move_on_after(1), contextlib.suppress(*_GONE):
        await _answer(stream, status, body)
    await _close(stream)


async def _close(stream: trio.SocketStream) -> None:
    """Lingering close: end our side, discard what the client still sends (so the kernel does
    not answer it with a reset that could destroy our answer), then close."""
    with trio.move_on_after(1), contextlib.suppress(*_GONE):
        await stream.send_eof()
        for _ in range(16):
            if not await stream.receive_some(4096):
                break
    with trio.CancelScope(shield=True), trio.move_on_after(1):
        await stream.aclose()
