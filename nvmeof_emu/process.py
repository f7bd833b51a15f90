"""A real ``nvmeof-target serve`` daemon in a subprocess, for tests in any framework.

    with TargetProcess({"subsystem": [...], "port": [...]}) as target:
        addr, port = target.ports[1]
        with target.path_down(1, mode="reset"):
            ...
        assert target.metrics().value("nvmeof_target_commands_total") > 0

The daemon runs the same ``target`` package this process imports (``sys.executable -m
target``), with ports configured as 0 on free ports (``free_ports``), the control API and
metrics listener on ``127.0.0.1:0``, ``--log-level debug`` into ``target.log`` and, with
``pcap``, a pcapng capture per connection in ``pcap/``, all in ``workdir``. It learns the bound
ports from ``--ready-file`` (:mod:`target.ready`), never from its log. :meth:`stop` sends
SIGTERM to the PID it started (never anything by name), SIGKILL after ``stop_timeout``, and
raises :class:`~nvmeof_emu.checks.TargetFailed` when the daemon crashed, had to be killed,
or logged an internal error (the rule in :mod:`nvmeof_emu.checks`).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from types import TracebackType
from typing import Any

import target as target_package
from nvmeof_emu.checks import (
    TargetFailed,
    ana_state_on,
    describe_exit,
    fault_fields,
    internal_errors,
    io_ports,
)
from nvmeof_emu.config import ConfigSource, as_target_config, config_toml, with_ports
from target.config import TargetConfig, with_free_ports
from target.control.aclient import AsyncControlClient
from target.control.client import ControlClient
from target.control.clientbase import ControlNotFound, Endpoint, Metrics, format_endpoint
from target.ready import ReadyInfo, read_ready_file

LOOPBACK_ANY: Endpoint = ("127.0.0.1", 0)
#: Lines of the daemon's log quoted in a failure message.
LOG_TAIL_LINES = 30


class TargetProcess:
    """An emulated NVMe/TCP target in a subprocess; :meth:`start` it or use ``with``.

    ``config``: a native TOML document as a dict, a TOML or nvmetcli JSON path, a
    :class:`~target.config.TargetConfig`, or None for the demo (two I/O ports, discovery).
    ``workdir``: where the configuration, ready file, log and capture go (a new temporary
    directory when None, removed by ``with`` after a clean run). ``command``: how to run the
    daemon (default ``[sys.executable, "-m", "target"]``; e.g. ``["nvmeof-target"]``).
    """

    def __init__(
        self,
        config: ConfigSource = None,
        *,
        workdir: str | os.PathLike[str] | None = None,
        free_ports: bool = True,
        pcap: bool = True,
        log_level: str = "debug",
        startup_timeout: float = 20.0,
        stop_timeout: float = 10.0,
        command: Sequence[str] | None = None,
    ) -> None:
        base = as_target_config(config)
        self.config: TargetConfig = with_free_ports(base) if free_ports else base
        self._own_workdir = workdir is None
        self.workdir = Path(tempfile.mkdtemp(prefix="nvmeof-emu-") if workdir is None else workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.workdir / "target.log"
        self.pcap_dir: Path | None = self.workdir / "pcap" if pcap else None
        self.config_path = self.workdir / "target.toml"
        self.ready_path = self.workdir / "ready.json"
        self.log_level = log_level
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.command = list(command or [sys.executable, "-m", "target"])
        self._control: Endpoint = LOOPBACK_ANY
        self._metrics: Endpoint = LOOPBACK_ANY
        self._process: subprocess.Popen[bytes] | None = None
        self._ready: ReadyInfo | None = None
        self._client: ControlClient | None = None
        self._log_offset = 0  # where the current run's log starts (problems are per run)

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> TargetProcess:
        """Start the daemon and wait until everything listens (TargetFailed if it cannot)."""
        if self._process is not None:
            raise RuntimeError("the target is already running")
        self.config_path.write_text(config_toml(self.config), encoding="utf-8")
        self.ready_path.unlink(missing_ok=True)
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as log:
            self._process = subprocess.Popen(
                [*self.command, *self._serve_arguments()],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=self._environment(),
            )  # fmt: skip
        try:
            self._ready = self._wait_until_ready(self._process)
        except BaseException:
            self._kill()
            raise
        assert self._ready.control is not None
        # Later starts reuse these: a restart keeps the test's addresses valid.
        self._control = self._ready.control
        self._metrics = self._ready.metrics or LOOPBACK_ANY
        self.config = with_ports(self.config, {pid: ep[1] for pid, ep in self.ports.items()})
        self._client = ControlClient(self._control)
        return self

    def stop(self) -> None:
        """SIGTERM the daemon (SIGKILL after ``stop_timeout``); raise TargetFailed if it had
        crashed, did not stop in time, or logged an internal error. Stopping twice is a no-op."""
        process, self._process = self._process, None
        if process is None:
            return
        if self._client is not None:
            self._client.close()
            self._client = None
        problems = []
        returncode = process.poll()
        if returncode is not None:
            problems.append(f"it exited on its own with {describe_exit(returncode)}")
        else:
            process.send_signal(signal.SIGTERM)  # Popen signals its own PID, if still running
            try:
                returncode = process.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                problems.append(f"it did not stop within {self.stop_timeout:g}s of SIGTERM "
                                "and was killed")  # fmt: skip
            else:
                if returncode not in (0, -signal.SIGTERM):
                    problems.append(f"it exited with {describe_exit(returncode)}, not from our "
                                    "SIGTERM")  # fmt: skip
        errors = self.internal_errors()
        if errors:
            problems.append(f"it logged {len(errors)} internal error(s):\n" + "\n".join(errors))
        if problems:
            raise TargetFailed(self._failure(process.pid, problems))

    def restart(self) -> None:
        """Stop (with the checks of :meth:`stop`) and start again with the same configuration
        on the same ports, control and metrics endpoints; file-backed namespaces keep their
        data, live changes made through the control API are gone."""
        self.stop()
        self.start()

    def power_cycle(self) -> None:
        """SIGKILL the daemon (none of its shutdown runs: a power loss) and start it again with
        the same configuration, ports and files: what survives is what the target had made
        durable, e.g. reservations with PTPL on a file namespace."""
        self.kill()
        self._process = None
        if self._client is not None:
            self._client.close()
            self._client = None
        self.start()

    def kill(self) -> None:
        """SIGKILL the daemon now (a crash, as far as :meth:`stop` is concerned)."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()

    def __enter__(self) -> TargetProcess:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        try:
            self.stop()
        except TargetFailed as failed:
            if error is None:
                raise
            error.add_note(str(failed))  # keep the test's own error first
            return
        if error is None and self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    # -- what a test reads ---------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int:
        return self._started().pid

    @property
    def ready(self) -> ReadyInfo:
        if self._ready is None:
            raise RuntimeError("the target has not been started")
        return self._ready

    @property
    def ports(self) -> dict[int, Endpoint]:
        """Port ID -> (addr, bound TCP port), as the daemon started."""
        return dict(self.ready.ports)

    @property
    def port_subsystems(self) -> dict[int, tuple[str, ...]]:
        return dict(self.ready.port_subsystems)

    @property
    def discovery(self) -> Endpoint:
        """The discovery-only port, else the first port (every port answers discovery)."""
        return self.ready.discovery or self.ready.ports[min(self.ready.ports)]

    @property
    def nqns(self) -> list[str]:
        """The subsystem NQNs of the configuration, in its order."""
        return [sub.nqn for sub in self.config.subsystems]

    @property
    def control(self) -> Endpoint:
        assert self.ready.control is not None
        return self.ready.control

    @property
    def client(self) -> ControlClient:
        """A blocking client of the daemon's control API (closed by :meth:`stop`)."""
        self._started()
        assert self._client is not None
        return self._client

    def async_client(self) -> AsyncControlClient:
        """A new async client of the control API, for Trio tests (``async with``)."""
        return AsyncControlClient(self.control)

    def metrics(self) -> Metrics:
        """The daemon's metrics, parsed: ``target.metrics().value(name, **labels)``."""
        return self.client.metrics()

    @property
    def log(self) -> str:
        """Everything the daemon logged (every run, restarts included)."""
        if not self.log_path.exists():
            return ""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def internal_errors(self) -> list[str]:
        """The current run's log lines that show an internal error (:mod:`nvmeof_emu.checks`)."""
        if not self.log_path.exists():
            return []
        with open(self.log_path, "rb") as handle:
            handle.seek(self._log_offset)
            return internal_errors(handle.read().decode("utf-8", errors="replace"))

    def captures(self) -> list[Path]:
        """The pcapng files written so far (one per connection)."""
        return sorted(self.pcap_dir.glob("*.pcapng")) if self.pcap_dir else []

    # -- context managers that undo themselves --------------------------------------------------

    @contextmanager
    def path_down(self, port_id: int, mode: str = "reset") -> Iterator[int]:
        """Take a path down for the block (reset, close, blackhole, refuse), then up again;
        yields how many connections were affected."""
        affected = self.client.port_down(port_id, mode)
        try:
            yield affected
        finally:
            self.client.port_up(port_id)

    @contextmanager
    def fault(
        self, action: str = "status", *, opcode: int | str | None = None, **fields: Any
    ) -> Iterator[dict[str, Any]]:
        """A fault rule for the block (``opcode`` may be ``"read"``, ``"write"``, ``"flush"``);
        yields the rule as the target describes it, with its id and counters at the start."""
        rule = self.client.fault_add(action, **fault_fields(opcode, fields))
        try:
            yield rule
        finally:
            with suppress(ControlNotFound):  # the test cleared it itself
                self.client.fault_remove(int(rule["id"]))

    @contextmanager
    def ana(self, port: int, group: int, state: str, **options: Any) -> Iterator[None]:
        """An ANA group's state on a port for the block; the previous state afterwards
        (``options``: ``via_change_ms``)."""
        previous = ana_state_on(self.client.status(), port, group)
        self.client.set_ana(port, group, state, **options)
        try:
            yield
        finally:
            if previous is None:
                self.client.ana_group_remove(port, group)
            else:
                self.client.set_ana(port, group, previous)

    @contextmanager
    def subsystem(
        self,
        nqn: str,
        *,
        namespaces: Sequence[Mapping[str, Any]] = ({"nsid": 1, "size": "16M"},),
        ports: Sequence[int] | None = None,
        **attributes: Any,
    ) -> Iterator[str]:
        """A subsystem for the block, on ``ports`` (default: every port exposing a subsystem);
        yields its NQN."""
        where = io_ports(self.port_subsystems) if ports is None else ports
        self.client.subsystem_add(nqn, namespaces=namespaces, ports=where, **attributes)
        try:
            yield nqn
        finally:
            with suppress(ControlNotFound):
                self.client.subsystem_remove(nqn)

    # -- inside ----------------------------------------------------------------------------------

    def _started(self) -> subprocess.Popen[bytes]:
        if self._process is None:
            raise RuntimeError("the target is not running (start() it first)")
        return self._process

    def _serve_arguments(self) -> list[str]:
        arguments = ["serve", "--config", str(self.config_path), "--log-level", self.log_level,
                     "--control", format_endpoint(self._control),
                     "--metrics", format_endpoint(self._metrics),
                     "--ready-file", str(self.ready_path)]  # fmt: skip
        if self.pcap_dir is not None:
            arguments += ["--pcap", str(self.pcap_dir)]
        return arguments

    def _environment(self) -> dict[str, str]:
        # The daemon imports the very target package this process imported (a source tree
        # ahead of an installed copy stays ahead).
        env = dict(os.environ)
        where = str(Path(target_package.__file__ or ".").resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (where, env.get("PYTHONPATH")) if p)
        return env

    def _wait_until_ready(self, process: subprocess.Popen[bytes]) -> ReadyInfo:
        deadline = time.monotonic() + self.startup_timeout
        while not self.ready_path.exists():
            returncode = process.poll()
            if returncode is not None:
                raise TargetFailed(self._failure(
                    process.pid, [f"it exited with {describe_exit(returncode)} while starting"]))  # fmt: skip
            if time.monotonic() > deadline:
                raise TargetFailed(self._failure(
                    process.pid, [f"no ready file after {self.startup_timeout:g}s"]))  # fmt: skip
            time.sleep(0.02)
        ready = read_ready_file(self.ready_path)
        if ready.pid != process.pid:
            raise TargetFailed(f"the ready file names PID {ready.pid}, not {process.pid}")
        return ready

    def _kill(self) -> None:
        self.kill()
        self._process = None

    def _failure(self, pid: int, problems: list[str]) -> str:
        tail = self.log.splitlines()[-LOG_TAIL_LINES:]
        lines = [f"nvmeof-target (pid {pid}) failed: " + "; ".join(problems),
                 f"log: {self.log_path}"]  # fmt: skip
        if self.pcap_dir is not None:
            lines.append(f"capture: {self.pcap_dir}")
        lines += ["last log lines:", *(f"  {line}" for line in tail)]
        return "\n".join(lines)
