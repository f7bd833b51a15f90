"""``nvmeof bench`` processes watched from outside (bench/manyhosts.py).

Each host runs with ``--json`` (its fio-style report at the end) and ``--metrics`` on a port
of its own: its I/O count so far is read from its Prometheus listener every second or two (the sum of
``nvmeof_initiator_path_ios_total`` over its paths; a scrape costs the host about 2 ms of CPU
here, 15 KB of text). From these series :func:`common_window` finds the time when every host was in its
measured run at once, so the hosts' I/O rates compare like with like: the hosts start one after
another, and one that starts its run early has the target more to itself until the others
arrive.
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import time
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parent.parent
P99 = "99.000000"  # the key of the 99th percentile in the bench's JSON
IOS_METRIC = "nvmeof_initiator_path_ios_total{"

Series = list[tuple[float, int]]  # (time.monotonic(), I/Os completed so far)


class HostProcess:
    """One ``nvmeof bench``, its report and its stderr in files of their own (16 pipes would
    need reading while they run), and the series of its I/O counts."""

    def __init__(self, argv: list[str], workdir: Path, index: int, metrics_port: int) -> None:
        self.index = index
        self.stdout: IO[bytes] = open(workdir / f"host{index}.json", "w+b")  # noqa: SIM115
        self.stderr: IO[bytes] = open(workdir / f"host{index}.err", "w+b")  # noqa: SIM115
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=self.stdout,
                                     stderr=self.stderr)  # fmt: skip
        self.exited_at: float | None = None
        self.series: Series = []
        self.metrics_port = metrics_port

    def poll(self) -> bool:
        """Whether it has exited (noting when it was first seen so)."""
        if self.proc.poll() is None:
            return False
        if self.exited_at is None:
            self.exited_at = time.monotonic()
        return True

    def scrape(self) -> None:
        """Add its I/O count now to :attr:`series` (nothing before its metrics listener is up
        or once it has exited)."""
        if self.proc.poll() is not None:
            return
        before = time.monotonic()
        connection = http.client.HTTPConnection("127.0.0.1", self.metrics_port, timeout=1)
        try:
            connection.request("GET", "/metrics")
            body = connection.getresponse().read().decode()
        except (OSError, http.client.HTTPException):
            return  # not listening yet, or ending
        finally:
            connection.close()
        ios = sum(int(float(line.rsplit(" ", 1)[1])) for line in body.splitlines()
                  if line.startswith(IOS_METRIC))  # fmt: skip
        self.series.append(((before + time.monotonic()) / 2, ios))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def result(self) -> dict[str, Any]:
        """Its figures from the fio-style JSON (or why there are none); closes the files."""
        self.stdout.seek(0)
        self.stderr.seek(0)
        text, err = self.stdout.read().decode(), self.stderr.read().decode()
        self.stdout.close()
        self.stderr.close()
        out: dict[str, Any] = {"host": self.index, "exit": self.proc.returncode}
        try:
            report = json.loads(text)
            job = report["jobs"][0]
        except (ValueError, KeyError, IndexError):
            return {**out, "problem": (err.strip() or text.strip() or "no report")[-500:]}
        read, write = job["read"], job["write"]
        elapsed = job["elapsed"]
        ios = read["total_ios"] + write["total_ios"]
        return {**out, "ios": ios, "reads": read["total_ios"], "writes": write["total_ios"],
                "iops": ios / elapsed if elapsed else 0.0, "elapsed_s": elapsed,
                "read_p99_us": read["lat_ns"]["percentile"][P99] / 1000,
                "write_p99_us": write["lat_ns"]["percentile"][P99] / 1000,
                "io_errors": job["io_errors"], "verify_errors": job["verify_errors"],
                "verified": job["job options"]["verify"] == "1",
                "reconnects": sum(p["reconnects"] for p in report["paths"]),
                "first_error": job["first_error"]}  # fmt: skip


def common_window(series: list[Series], precondition: int,
                  warmup: float) -> tuple[float, float] | None:  # fmt: skip
    """(start, end) of the time every host was in its measured run, ``warmup`` seconds after
    the last one began it; None if there was no such time.

    A host is in its run once it has completed more than ``precondition`` I/Os (the verify
    pass that writes every block first), and still in it at the last sample after which its
    count grew again.
    """
    starts, ends = [], []
    for points in series:
        running = [at for at, ios in points if ios > precondition]
        if not running:
            return None
        final = max(ios for _, ios in points)
        before_final = [at for at, ios in points if ios < final]
        if not before_final:
            return None
        starts.append(running[0])
        ends.append(before_final[-1])
    start, end = max(starts) + warmup, min(ends)
    return (start, end) if end > start else None


def window_rate(points: Series, start: float, end: float) -> float | None:
    """I/Os per second between the first sample at or after ``start`` and the last one at or
    before ``end``."""
    inside = [(at, ios) for at, ios in points if start <= at <= end]
    if len(inside) < 2 or inside[-1][0] <= inside[0][0]:
        return None
    (t0, n0), (t1, n1) = inside[0], inside[-1]
    return (n1 - n0) / (t1 - t0)
