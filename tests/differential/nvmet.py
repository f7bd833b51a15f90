"""The two targets under comparison: nvmet in a linuxvm guest, ours in this process."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import trio

from target.config import NamespaceConfig, PortConfig, SubsystemConfig, TargetConfig
from target.daemon import Target
from tests.differential.cases import NQN

REPO = Path(__file__).resolve().parents[2]
READY_TIMEOUT = 180.0
BOOT_ATTEMPTS = 3
#: nvmet-tcp's default in-capsule data size (NVMET_TCP_DEF_INLINE_DATA_SIZE, 4 pages).
NVMET_INLINE = 16384


def linuxvm_run() -> Path:
    override = os.environ.get("LINUXVM_RUN")
    return Path(override) if override else REPO.parent / "shared" / "linuxvm" / "run"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class NvmetGuest:
    """``linuxvm run examples/nvmet-target.sh`` in its own process group, up until closed."""

    def __init__(self, release: str = "bookworm", timeout: int = 3600) -> None:
        self.release = release
        self.timeout = timeout
        self.port = free_port()
        self.stop_port = free_port()
        self.kernel = "?"
        self.proc: subprocess.Popen[str] | None = None
        self.console = Path("/nonexistent")
        self.output: list[str] = []

    def __enter__(self) -> NvmetGuest:
        for attempt in range(BOOT_ATTEMPTS):  # a TCG boot fails now and then: boot again
            try:
                return self._boot()
            except RuntimeError:
                if attempt == BOOT_ATTEMPTS - 1:
                    raise
                self.output.clear()
        raise AssertionError("unreachable")

    def _boot(self) -> NvmetGuest:
        run = linuxvm_run()
        script = run.parent / "examples" / "nvmet-target.sh"
        self.console = Path(tempfile.mkdtemp(prefix="nvmet-guest-")) / "console.log"
        argv = [str(run), "-t", str(self.timeout + 60), "-p", f"{self.port}:4420",
                "--console-log", str(self.console),
                "-p", f"{self.stop_port}:9999", "-e", f"TIMEOUT={self.timeout}",
                "-c", "uname -r; sh /root/nvmet-target.sh", "-a", str(script)]  # fmt: skip
        env = {**os.environ, "LINUXVM_RELEASE": self.release}
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, errors="replace",
                                     env=env, start_new_session=True)  # fmt: skip
        deadline = time.monotonic() + READY_TIMEOUT
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line)
            if line[:1].isdigit() and "." in line and self.kernel == "?":
                self.kernel = f"Linux {line.strip()}"
            if line.startswith("NVMET-READY"):
                return self
            if time.monotonic() > deadline:
                break
        self.close()
        raise RuntimeError("nvmet guest did not come up:\n" + "".join(self.output[-30:]))

    def close(self) -> None:
        """Ask the guest to stop (its stop port), then SIGTERM ``run`` (which stops QEMU), then
        SIGKILL the process group: an nvmet with commands it never answered may not tear down."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        with contextlib.suppress(OSError):
            socket.create_connection(("127.0.0.1", self.stop_port), timeout=5).close()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
        finally:
            if proc.stdout is not None:
                proc.stdout.close()

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:  # fmt: skip
        self.close()


def our_config(*, strict: bool = False) -> TargetConfig:
    """The shape examples/nvmet-target.sh gives nvmet, on a free port."""
    sub = SubsystemConfig(nqn=NQN, namespaces=(NamespaceConfig(nsid=1, size=256 << 20, reservations=False),),
                          model="linuxvm", max_io_queues=128, queue_size=1024)  # fmt: skip
    extra: dict[str, Any] = {"strict": True} if strict else {}
    port = PortConfig(id=1, port=0, subsystems=(NQN,), inline_data_size=NVMET_INLINE, **extra)
    return TargetConfig(subsystems=(sub,), ports=(port,))


async def serve_ours(*, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    """Our target on a free port; reports ``(host, port)``."""
    logger = logging.getLogger("nvmeof")
    level = logger.level
    logger.setLevel(logging.CRITICAL)  # thousands of refused commands: keep the output readable
    target = Target(our_config())
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(target.serve)
            task_status.started(("127.0.0.1", target.ports[1].bound_port))
            try:
                await trio.sleep_forever()
            finally:
                target.stop()
    finally:
        logger.setLevel(level)
