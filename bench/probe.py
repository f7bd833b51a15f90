"""What ``make bench`` measures in each process over a steady-state window, per I/O.

- CPU: ``resource.getrusage(RUSAGE_SELF)`` (user and system seconds, microsecond resolution) of
  each process, read in that process.
- Allocations: CPython's allocator calls (malloc, calloc and realloc of the raw, mem and object
  domains) counted by a tiny C wrapper (``bench/alloccount.c``, built here with the system's C
  compiler on first use; without one the figure is None), and the net growth of
  ``sys.getallocatedblocks()`` (memory kept per I/O; about 0 in a steady state).
- Syscalls: counted by the kernel (``perf stat`` on the ``raw_syscalls:sys_enter`` tracepoint
  and those of ``sendto`` and ``write``, ``recvfrom`` and ``readv`` (the host's queues use the
  latter two) and ``epoll_wait``, attached to the process and switched on and off at the
  window's edges through its control FIFO); None where perf cannot count them.

Nothing here runs in the wings' code: a child process (the target, the ceiling's server and
client) is started through ``bench/probed.py``, which installs the allocation counter and
answers snapshot requests on a pipe from a thread of its own that sleeps in ``read()`` between
them (so it costs nothing while the window runs); the bench process measures itself.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import resource
import select
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

HERE = Path(__file__).resolve().parent
BUILD = HERE.parent / "bench-results" / ".build"
#: the environment variable that hands a child its snapshot pipe ("READ_FD,WRITE_FD")
PIPE_ENV = "BENCH_PROBE_FDS"
#: the environment variable with the built allocation counter's path (empty: none)
ALLOC_ENV = "BENCH_ALLOCCOUNT"

#: Extra figures a process adds to its snapshots (the ceiling's client: its round trips).
COUNTERS: dict[str, Callable[[], float]] = {}

_alloc: ModuleType | None = None

SYSCALL_EVENTS = {
    "total": "raw_syscalls:sys_enter",
    "sendto": "syscalls:sys_enter_sendto",
    "recvfrom": "syscalls:sys_enter_recvfrom",
    # the host sends and receives on its socket's descriptor with os.write and os.readv
    "write": "syscalls:sys_enter_write",
    "readv": "syscalls:sys_enter_readv",
    "epoll_wait": "syscalls:sys_enter_epoll_wait",
}


# -- the allocation counter ------------------------------------------------------------------------


def build_alloccount() -> str:
    """Build ``alloccount.c`` (once per source and interpreter); its path, or "" without a C
    compiler or Python headers."""
    source = HERE / "alloccount.c"
    suffix = sysconfig.get_config_var("EXT_SUFFIX") or ".so"
    stamp = f"{int(source.stat().st_mtime)}-{sys.implementation.cache_tag}"
    out = BUILD / f"_alloccount-{stamp}{suffix}"
    if out.exists():
        return str(out)
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    include = sysconfig.get_paths()["include"]
    if not compiler or not (Path(include) / "Python.h").exists():
        return ""
    BUILD.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    done = subprocess.run([compiler, "-O2", "-shared", "-fPIC", f"-I{include}", str(source),
                           "-o", str(tmp)], capture_output=True, text=True)  # fmt: skip
    if done.returncode:
        print(f"bench: no allocation counts (building alloccount.c failed: "
              f"{done.stderr.strip()[:200]})", file=sys.stderr)  # fmt: skip
        return ""
    tmp.replace(out)
    return str(out)


def install_alloccount(path: str) -> bool:
    """Load the built counter and start counting (once per process)."""
    global _alloc
    if _alloc is None and path:
        spec = importlib.util.spec_from_file_location("_alloccount", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        module.install()
        _alloc = module
    return _alloc is not None


def allocations() -> int | None:
    """Allocator calls since the counter was installed (None: no counter)."""
    return None if _alloc is None else int(sum(_alloc.counts()))


# -- snapshots -------------------------------------------------------------------------------------


def snapshot() -> dict[str, Any]:
    """This process's counters now."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    snap: dict[str, Any] = {"user": usage.ru_utime, "sys": usage.ru_stime,
                            "blocks": sys.getallocatedblocks(), "allocs": allocations(),
                            "at": time.monotonic()}  # fmt: skip
    for name, read in COUNTERS.items():
        snap[name] = read()
    return snap


def serve_snapshots(read_fd: int, write_fd: int) -> None:
    """Answer each line on ``read_fd`` with a JSON snapshot line on ``write_fd``, from a daemon
    thread (blocked in ``read()``, holding no GIL, between requests)."""

    def loop() -> None:
        with os.fdopen(read_fd, "rb", buffering=0) as requests, \
                os.fdopen(write_fd, "wb", buffering=0) as replies:  # fmt: skip
            while requests.readline():
                replies.write(json.dumps(snapshot()).encode() + b"\n")

    threading.Thread(target=loop, name="bench-probe", daemon=True).start()


def start_from_env() -> None:
    """In a child started by :class:`Probed`: count allocations, answer snapshots."""
    install_alloccount(os.environ.pop(ALLOC_ENV, ""))
    fds = os.environ.pop(PIPE_ENV, "")
    if fds:
        read_fd, write_fd = (int(x) for x in fds.split(","))
        serve_snapshots(read_fd, write_fd)


class Probed:
    """A child process run through ``bench/probed.py``, and the pipe to its snapshots (none
    with ``snapshots`` False: then nothing runs beside the program, as for a profile)."""

    def __init__(self, argv: Sequence[str], alloccount: str, snapshots: bool = True,
                 **popen: Any) -> None:  # fmt: skip
        env = dict(popen.pop("env", os.environ))
        env[ALLOC_ENV] = alloccount
        passed: tuple[int, ...] = ()
        if snapshots:
            child_read, self._write = os.pipe()
            self._read, child_write = os.pipe()
            env[PIPE_ENV] = f"{child_read},{child_write}"
            passed = (child_read, child_write)
        self.proc = subprocess.Popen([sys.executable, str(HERE / "probed.py"), *argv],
                                     pass_fds=passed, env=env, **popen)  # fmt: skip
        for fd in passed:
            os.close(fd)
        self._replies = os.fdopen(self._read, "rb", buffering=0) if snapshots else None
        self.pid = self.proc.pid

    def snapshot(self, timeout: float = 10.0) -> dict[str, Any]:
        if self._replies is None:
            raise RuntimeError("started without snapshots")
        os.write(self._write, b"s\n")
        ready, _, _ = select.select([self._replies], [], [], timeout)
        if not ready:
            raise TimeoutError(f"no snapshot from pid {self.pid}")
        line = self._replies.readline()
        if not line:
            raise RuntimeError(f"pid {self.pid} exited (status {self.proc.poll()})")
        snap: dict[str, Any] = json.loads(line)
        return snap

    def close(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._replies is not None:
            os.close(self._write)
            self._replies.close()


class Local:
    """The bench process itself (the host), measured like a probed child."""

    def __init__(self) -> None:
        self.pid = os.getpid()

    def snapshot(self) -> dict[str, Any]:
        return snapshot()


# -- syscalls ------------------------------------------------------------------------------------


def perf_works() -> bool:
    """Whether ``perf stat`` can count syscall tracepoints here (root, or a permissive
    ``perf_event_paranoid``, and tracefs)."""
    perf = shutil.which("perf")
    if not perf:
        return False
    try:
        done = subprocess.run([perf, "stat", "-x,", "-e", SYSCALL_EVENTS["total"], "--", "true"],
                              capture_output=True, text=True, timeout=20)  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0 and "not supported" not in done.stderr


class PerfSyscalls:
    """``perf stat -p PID`` over the syscall tracepoints, started disabled and switched on and
    off through its control FIFO (``enable``/``disable``, each acknowledged)."""

    def __init__(self, pid: int) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="bench-perf-"))
        ctl, ack, self._out = self._dir / "ctl", self._dir / "ack", self._dir / "out.csv"
        os.mkfifo(ctl)
        os.mkfifo(ack)
        events = ",".join(SYSCALL_EVENTS.values())
        self.proc = subprocess.Popen(["perf", "stat", "-x,", "-D", "-1", "--control",
                                      f"fifo:{ctl},{ack}", "-o", str(self._out), "-e", events,
                                      "-p", str(pid)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)  # fmt: skip
        # perf opens both FIFOs as it starts: the ack side first, non-blocking, then ours
        self._ack = os.open(ack, os.O_RDONLY | os.O_NONBLOCK)
        deadline = time.monotonic() + 10
        while True:
            try:
                self._ctl = os.open(ctl, os.O_WRONLY | os.O_NONBLOCK)
                break
            except OSError:  # ENXIO: perf has not opened it yet
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("perf stat did not start") from None
                time.sleep(0.01)

    def _command(self, word: bytes) -> None:
        os.write(self._ctl, word + b"\n")
        deadline = time.monotonic() + 5
        got = b""
        while b"ack" not in got:
            ready, _, _ = select.select([self._ack], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                raise TimeoutError(f"perf stat did not acknowledge {word.decode()}")
            got += os.read(self._ack, 64)

    def enable(self) -> None:
        self._command(b"enable")

    def disable(self) -> None:
        self._command(b"disable")

    def result(self) -> dict[str, int]:
        """Stop perf; the counts of the enabled spans by name of :data:`SYSCALL_EVENTS`."""
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(timeout=10)
        os.close(self._ctl)
        os.close(self._ack)
        by_event = {event: name for name, event in SYSCALL_EVENTS.items()}
        counts = parse_perf_csv(self._out.read_text(), by_event)
        shutil.rmtree(self._dir, ignore_errors=True)
        return counts


def parse_perf_csv(text: str, names: dict[str, str]) -> dict[str, int]:
    """``perf stat -x,`` output (``count,unit,event,...`` lines) -> {name: count}; an event
    perf did not count is left out."""
    counts = {}
    for line in text.splitlines():
        fields = line.split(",")
        if len(fields) >= 3 and fields[2] in names and fields[0].isdigit():
            counts[names[fields[2]]] = int(fields[0])
    return counts


# -- the window ------------------------------------------------------------------------------------


@dataclass
class Side:
    """One process measured over a window."""

    name: str
    process: Probed | Local
    perf: PerfSyscalls | None = None
    start: dict[str, Any] = field(default_factory=dict)
    end: dict[str, Any] = field(default_factory=dict)


def per_io(side: Side, ios: int, syscalls: dict[str, int] | None) -> dict[str, float | None]:
    """A side's figures over its window, divided by the I/Os (round trips) completed in it."""
    a, b = side.start, side.end
    n = max(ios, 1)

    def delta(key: str) -> float | None:
        return None if a.get(key) is None or b.get(key) is None else b[key] - a[key]

    user, system = delta("user") or 0.0, delta("sys") or 0.0
    allocs, blocks = delta("allocs"), delta("blocks")
    out: dict[str, float | None] = {
        "cpu_us": (user + system) * 1e6 / n, "user_us": user * 1e6 / n, "sys_us": system * 1e6 / n,
        "allocs": None if allocs is None else allocs / n,
        "kept_blocks": None if blocks is None else blocks / n,
    }  # fmt: skip
    for name in SYSCALL_EVENTS:
        out[f"syscalls_{name}" if name != "total" else "syscalls"] = (
            None if syscalls is None or name not in syscalls else syscalls[name] / n
        )
    return out


class Window:
    """Snapshots of every side at the start and end of a steady-state window.

    ``ios(snapshots)`` says how many I/Os have completed so far (from the sides' snapshots or
    from outside). The syscall counters run only between :meth:`open` and :meth:`close`.
    """

    def __init__(self, sides: list[Side], ios: Callable[[dict[str, dict[str, Any]]], int]) -> None:
        self.sides = sides
        self.ios = ios
        self.started = self.ended = 0.0
        self.ios_start = self.ios_end = 0

    def open(self) -> None:
        for side in self.sides:
            if side.perf is not None:
                side.perf.enable()
        for side in self.sides:
            side.start = side.process.snapshot()
        self.started = time.monotonic()
        self.ios_start = self.ios({s.name: s.start for s in self.sides})

    def close(self) -> None:
        for side in self.sides:
            side.end = side.process.snapshot()
        self.ended = time.monotonic()
        self.ios_end = self.ios({s.name: s.end for s in self.sides})
        for side in self.sides:
            if side.perf is not None:
                side.perf.disable()

    def figures(self) -> dict[str, Any]:
        """IOPS over the window and each side's per-I/O figures (stops the perf counters)."""
        ios = self.ios_end - self.ios_start
        elapsed = self.ended - self.started
        out: dict[str, Any] = {"window_s": round(elapsed, 3), "window_ios": ios,
                               "iops": ios / elapsed if elapsed > 0 else 0.0}  # fmt: skip
        for side in self.sides:
            syscalls = side.perf.result() if side.perf is not None else None
            out[side.name] = per_io(side, ios, syscalls)
        return out


def stop_perf(sides: list[Side]) -> None:
    """Stop any perf still running (after an error)."""
    for side in sides:
        if side.perf is not None and side.perf.proc.poll() is None:
            with contextlib.suppress(Exception):
                side.perf.result()
