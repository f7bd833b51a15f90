"""Helpers for the interop tests (imported by conftest.py and the tests; not a test module).

* :class:`LinuxVM` runs a guest script with ../shared/linuxvm's ``run`` and returns a
  :class:`GuestRun`: a guest script prints its steps between ``=== BEGIN <step>`` /
  ``=== END <step> rc=<n>`` markers and ``INFO key=value ...`` lines, parsed into
  :class:`Step` objects and dicts.
* :class:`TargetProcess` is a running ``nvmeof-target serve`` with its log file.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import shlex
import signal
import socket
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.lowlevel

REPO_ROOT = Path(__file__).resolve().parents[2]
GUEST_DIR = Path(__file__).resolve().parent / "guest"
DEMO_NQN = "nqn.2026-11.io.nvmeof-emu:demo"
DEMO_PORTS = (4420, 4421, 8009)  # ANA group 1 optimized, non-optimized; discovery only
GUEST_HOST_IP = "10.0.2.2"  # the host's 127.0.0.1 as the guest sees it (QEMU user networking)

BUILD_TIMEOUT = 900  # s: a cold build downloads ~110 MB of .debs (and may apt-get install QEMU)
TARGET_START_TIMEOUT = 15.0  # s until the three "listening" lines
TARGET_STOP_TIMEOUT = 10.0  # s after SIGTERM before SIGKILL

FIGURES = pytest.StashKey[list[str]]()

LISTENING = re.compile(r'msg="listening port=(\d+) addr=([^ ]+):(\d+) subsystems=([^ "]+)"')
_PROBLEM = re.compile(r"\blevel=(error|warning)\b")


# ---------------------------------------------------------------------------------------------
# linuxvm


#: A line of fio's output that reports a verify failure.
FIO_VERIFY_FAILURE = re.compile(
    r"verify.*(fail|bad|mismatch)|bad magic|bad header|crc32c.*(fail|mismatch)", re.IGNORECASE
)


def discovery_entries(text: str) -> list[dict[str, str]]:
    """nvme-cli's discovery log text: one dict per ``=====Discovery Log Entry N======``."""
    entries: list[dict[str, str]] = []
    for line in text.splitlines():
        if line.startswith("=====Discovery Log Entry"):
            entries.append({})
        elif entries and ":" in line:
            key, _, value = line.partition(":")
            entries[-1][key.strip()] = value.strip()
    return entries


def tls_interchange_key(hmac_id: int = 1, secret: bytes | None = None) -> str:
    """A TLS PSK in the interchange format, as ``nvme gen-tls-key --hmac=N`` writes it:
    ``NVMeTLSkey-1:0N:`` + base64(configured PSK + its CRC-32, little-endian) + ``:``; 32
    random bytes for hmac 1 (SHA-256), 48 for hmac 2 (SHA-384). Made here, independently of
    the product's own key code."""
    key = secret if secret is not None else os.urandom(32 if hmac_id == 1 else 48)
    blob = key + struct.pack("<I", zlib.crc32(key))
    return f"NVMeTLSkey-1:{hmac_id:02d}:{base64.b64encode(blob).decode()}:"


def linuxvm_run_path() -> Path:
    """``$LINUXVM_RUN``, else ``<repo>/../shared/linuxvm/run``."""
    override = os.environ.get("LINUXVM_RUN")
    return Path(override) if override else REPO_ROOT.parent / "shared" / "linuxvm" / "run"


def tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


@dataclass
class Step:
    """One ``=== BEGIN``/``=== END`` block of a guest script; ``rc`` None: no END marker."""

    name: str
    rc: int | None
    output: str

    def json(self) -> Any:
        """The output parsed as JSON (text before the first ``{`` is ignored)."""
        start = self.output.find("{")
        if start < 0:
            raise AssertionError(f"step {self.name}: no JSON in output:\n{self.output}")
        return json.loads(self.output[start:])


@dataclass
class GuestRun:
    """A finished ``linuxvm run``: exit status, output, parsed steps and INFO lines."""

    name: str
    argv: list[str]
    rc: int
    stdout: str
    stderr: str
    duration: float
    target_log: str = ""  # what the target logged while this VM ran
    steps: dict[str, Step] = field(default_factory=dict)
    info: list[dict[str, str]] = field(default_factory=list)

    @classmethod
    def parse(cls, run: GuestRun) -> GuestRun:
        current: str | None = None
        lines: list[str] = []
        for line in run.stdout.splitlines():
            if current is None:
                if line.startswith("=== BEGIN "):
                    current, lines = line[len("=== BEGIN ") :].strip(), []
                elif line.startswith("INFO "):
                    run.info.append(dict(_kv(tok) for tok in line.split()[1:] if "=" in tok))
                continue
            # (the marker may follow output that did not end with a newline)
            end = re.search(r"=== END (\S+) rc=(\d+)$", line)
            if end and end.group(1) == current:
                if line[: end.start()]:
                    lines.append(line[: end.start()])
                run.steps[current] = Step(current, int(end.group(2)), "\n".join(lines))
                current = None
            else:
                lines.append(line)
        if current is not None:  # the VM died inside a step
            run.steps[current] = Step(current, None, "\n".join(lines))
        return run

    def step(self, name: str) -> Step:
        if name not in self.steps:
            raise AssertionError(
                f"{self.name}: the guest did not run step {name!r}\n{self.context()}"
            )
        return self.steps[name]

    def infos(self, key: str) -> list[dict[str, str]]:
        """INFO lines that have ``key``."""
        return [i for i in self.info if key in i]

    def context(self) -> str:
        """What to show when an assertion about this run fails."""
        parts = [
            f"--- VM run {self.name!r}: rc={self.rc}, {self.duration:.1f} s: {shlex.join(self.argv)}"
        ]
        if self.rc not in (0, 1):
            parts.append(f"(124: VM timeout, 125: the VM failed)\n--- stderr\n{tail(self.stderr)}")
        failed = [s.name for s in self.steps.values() if s.rc != 0 and s.name != "dmesg-nvme"]
        if failed:
            parts.append(f"--- failed guest steps: {', '.join(failed)}")
        if "dmesg-tail" in self.steps:
            parts.append(f"--- guest dmesg (tail)\n{self.steps['dmesg-tail'].output}")
        elif "dmesg-nvme" in self.steps:
            parts.append(f"--- guest dmesg (nvme)\n{self.steps['dmesg-nvme'].output}")
        else:
            parts.append(f"--- guest output (tail)\n{tail(self.stdout)}")
        parts.append(f"--- target log during the run (tail)\n{tail(self.target_log, 30)}")
        return "\n".join(parts)


def _kv(token: str) -> tuple[str, str]:
    key, _, value = token.partition("=")
    return key, value


@dataclass
class LinuxVM:
    """The linuxvm ``run`` command."""

    run_path: Path

    def run(
        self,
        name: str,
        script: Path,
        env: Mapping[str, str] | None = None,
        *,
        timeout: int = 300,
        target: TargetProcess | None = None,
    ) -> GuestRun:
        """Boot a VM running ``script`` (``-t timeout``), wait for it, parse its output.

        With ``target``, the target's log lines written meanwhile are kept in ``target_log``.
        """
        argv = [str(self.run_path), "-t", str(timeout)]
        for key, value in (env or {}).items():
            argv += ["-e", f"{key}={value}"]
        argv.append(str(script))
        log_start = target.log_size() if target else 0
        started = time.monotonic()
        # Own session, so a stuck run can be stopped with everything it started. On SIGTERM
        # `run` kills QEMU itself (QEMU also runs under `timeout -t`, so it cannot outlive it).
        proc = subprocess.Popen(
            argv,
            cwd=REPO_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
            start_new_session=True,
        )
        try:
            stdout, stderr = proc.communicate(timeout=timeout + 60)
        except subprocess.TimeoutExpired:
            _stop_group(proc, grace=15.0)
            stdout, stderr = proc.communicate(timeout=30)
            stderr += f"\n(interop: killed `run` after {timeout + 60} s)"
        finally:
            if proc.poll() is None:
                _stop_group(proc, grace=5.0)
                proc.communicate(timeout=30)
        run = GuestRun(name, argv, proc.returncode, stdout, stderr, time.monotonic() - started)
        if target is not None:
            run.target_log = target.log_text(log_start)
        return GuestRun.parse(run)


def _stop_group(proc: subprocess.Popen[Any], grace: float) -> None:
    """SIGTERM the process, then SIGKILL its whole process group after ``grace`` seconds."""
    try:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    except ProcessLookupError:
        pass


# ---------------------------------------------------------------------------------------------
# the target


@dataclass
class TargetProcess:
    """A running ``nvmeof-target serve``; its stdout+stderr go to ``log_path``."""

    proc: subprocess.Popen[bytes]
    log_path: Path
    io_ports: tuple[int, ...] = ()  # bound TCP ports serving the subsystem, by port id
    discovery_port: int = 0  # the discovery-only port
    listening: dict[int, tuple[str, int, str]] = field(default_factory=dict)

    def log_size(self) -> int:
        return self.log_path.stat().st_size

    def log_text(self, start: int = 0) -> str:
        with self.log_path.open("rb") as log:
            log.seek(start)
            return log.read().decode("utf-8", "replace")

    def problems(self, text: str | None = None) -> list[str]:
        """Log lines at level error or warning (of ``text``, default the whole log)."""
        lines = (self.log_text() if text is None else text).splitlines()
        return [line for line in lines if _PROBLEM.search(line)]


def target_argv(config: Path | None) -> list[str]:
    script = Path(sys.executable).with_name("nvmeof-target")
    argv = [str(script)] if script.is_file() else [sys.executable, "-m", "target"]
    argv.append("serve")
    if config is not None:
        argv += ["--config", str(config)]
    # No control API or metrics listener: two targets of one run must not fight over 9465/9464.
    return [*argv, "--advertise", GUEST_HOST_IP, "--log-level", "info", "--control", "off",
            "--metrics", "off"]  # fmt: skip


def port_busy(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the target does
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def free_ports_config(path: Path) -> Path:
    """The embedded demo, but every port 0 (the OS picks free ones)."""
    ns = "\n".join(
        f'  [[subsystem.namespace]]\n  nsid = {nsid}\n  size = "256MiB"\n  block_size = {bs}\n'
        for nsid, bs in ((1, 512), (2, 4096))
    )
    ports = "\n".join(
        f'[[port]]\nid = {pid}\naddr = "127.0.0.1"\nport = 0\nsubsystems = {subs}\n{ana}'
        for pid, subs, ana in (
            (1, f'["{DEMO_NQN}"]', 'ana = { 1 = "optimized" }\n'),
            (2, f'["{DEMO_NQN}"]', 'ana = { 1 = "non-optimized" }\n'),
            (3, "[]", ""),
        )
    )
    path.write_text(f'[[subsystem]]\nnqn = "{DEMO_NQN}"\n{ns}\n{ports}', encoding="utf-8")
    return path


def stop_target(proc: subprocess.Popen[bytes]) -> int | None:
    """SIGTERM, bounded wait, SIGKILL if needed. Returns the exit status (None: killed)."""
    if proc.poll() is not None:
        return proc.returncode
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=TARGET_STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)
        return None


@dataclass
class StreamingVM:
    """``linuxvm run SCRIPT`` as a Trio subprocess, its output read as it comes: lines starting
    with ``CHAOS-``, ``LIVE-``, ``RESV-`` or ``CRASH-`` are markers a test can wait for (:meth:`wait_marker`)."""

    argv: list[str]
    log_path: Path
    name: str = "chaos"
    lines: list[str] = field(default_factory=list)
    stderr: list[str] = field(default_factory=list)
    markers: dict[str, tuple[float, str]] = field(default_factory=dict)  # name -> (time, line)
    rc: int | None = None
    started: float = 0.0
    finished: float = 0.0
    exited: trio.Event = field(default_factory=trio.Event)
    echo: bool = True
    _quiet: int = 0  # lines of the fio JSON block not echoed

    async def run(self) -> None:
        self.started = trio.current_time()
        proc = await trio.lowlevel.open_process(
            self.argv,
            cwd=REPO_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,  # so a stuck run can be killed with everything it started
        )
        try:
            with self.log_path.open("w", encoding="utf-8") as log:
                async with trio.open_nursery() as nursery:
                    assert proc.stderr is not None
                    nursery.start_soon(self._pump, proc.stderr, self.stderr, None)
                    assert proc.stdout is not None
                    await self._pump(proc.stdout, self.lines, log)
                    self.rc = await proc.wait()
        finally:
            with trio.CancelScope(shield=True):
                await stop_process(proc)
                if self.rc is None:
                    self.rc = proc.returncode
            self.finished = trio.current_time()
            self.exited.set()

    async def _pump(self, stream: Any, into: list[str], log: Any) -> None:
        buffer = b""
        async for chunk in stream:
            buffer += chunk
            *complete, buffer = buffer.split(b"\n")
            for raw in complete:
                self._line(raw.decode("utf-8", "replace").rstrip("\r"), into, log)
        if buffer:
            self._line(buffer.decode("utf-8", "replace"), into, log)

    def _line(self, line: str, into: list[str], log: Any) -> None:
        into.append(line)
        if log is not None:
            log.write(line + "\n")
            log.flush()
            if line.startswith(("CHAOS-", "LIVE-", "RESV-", "CRASH-")):
                self.markers[line.split()[0]] = (trio.current_time(), line)
        if not self.echo:
            return
        if log is None:
            print(f"  run| {line}", flush=True)
            return
        # PATHS lines and the fio JSON are summarised after the run (all of it is in the log)
        if line == "=== BEGIN fio-json":
            self._quiet = 1
        elif self._quiet and line.startswith("=== END fio-json"):
            print(f"  guest| ({self._quiet - 1} lines of fio JSON: {self.log_path})", flush=True)
            self._quiet = 0
        elif self._quiet:
            self._quiet += 1
            return
        if not line.startswith("PATHS "):
            print(f"  guest| {line}", flush=True)

    async def wait_marker(self, name: str, limit: float) -> tuple[float, str]:
        """Wait for a marker line; fails if the VM exits first or it takes too long."""
        with trio.move_on_after(limit):
            while name not in self.markers:
                if self.exited.is_set():
                    pytest.fail(f"the VM exited (rc {self.rc}) before {name}:\n{self.context()}")
                await trio.sleep(0.1)
            return self.markers[name]
        pytest.fail(f"no {name} from the guest within {limit:g} s:\n{self.context()}")

    def result(self) -> GuestRun:
        run = GuestRun(self.name, self.argv, self.rc if self.rc is not None else -1,
                       "\n".join(self.lines), "\n".join(self.stderr),
                       self.finished - self.started)  # fmt: skip
        return GuestRun.parse(run)

    def context(self) -> str:
        return (f"--- guest output (tail)\n{tail(chr(10).join(self.lines), 40)}\n"
                f"--- run stderr (tail)\n{tail(chr(10).join(self.stderr), 15)}")  # fmt: skip


async def stop_process(proc: trio.Process) -> None:
    """SIGTERM `run` (it stops QEMU itself), then SIGKILL its whole session; bounded."""
    if proc.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    with trio.move_on_after(20):
        await proc.wait()
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    with trio.move_on_after(10):
        await proc.wait()


# A Keep Alive the host failed itself while deleting the controller: `nvme disconnect` stops the
# admin queue (nvme_tcp_teardown_admin_queue) and a keep-alive work item that runs in that window
# is refused before it is dispatched: nvme_tcp_queue_rq -> nvme_fail_nonready_command ->
# nvme_host_path_error, BLK_STS_TRANSPORT (4), logged by nvme_keep_alive_end_io (with an RTT of
# about 2^32 ms, as the request never started). The command never reaches the wire, so no target
# can cause or prevent it; Linux 6.12 was seen doing it once in CI. Only that status, and only
# after the same controller's "Removing ctrl" line, is the host's own teardown.
KEEPALIVE_FAILED = re.compile(r"(nvme\d+): failed nvme_keep_alive_end_io error=(\d+)")
REMOVING = re.compile(r"(nvme\d+): Removing ctrl: NQN")
BLK_STS_TRANSPORT = 4


def kernel_trouble(
    kernel_log: str, trouble_pattern: re.Pattern[str]
) -> tuple[list[str], list[str]]:
    """The trouble lines of a guest's nvme kernel log, and those that are the host's teardown."""
    removed: set[str] = set()
    trouble, teardown = [], []
    for line in kernel_log.splitlines():
        if removing := REMOVING.search(line):
            removed.add(removing[1])
        if not trouble_pattern.search(line):
            continue
        failed = KEEPALIVE_FAILED.search(line)
        if failed and failed[1] in removed and int(failed[2]) == BLK_STS_TRANSPORT:
            teardown.append(line)
        else:
            trouble.append(line)
    return trouble, teardown
