"""Interop fixtures: nvmeof-target on the host, the real Linux kernel (../shared/linuxvm) as peer.

* ``linuxvm`` (session): the ``run`` script of ../shared/linuxvm (override: ``LINUXVM_RUN``),
  after one ``build --quiet``; skips with the reason when the VM cannot be built or QEMU is
  missing.
* ``nvmeof_target`` (session): ``nvmeof-target serve --advertise 10.0.2.2 --log-level info`` as
  a subprocess, up once its three "listening" lines are logged (15 s bound); SIGTERM, bounded
  wait, SIGKILL at teardown. By default the embedded demo on 127.0.0.1:4420/4421/8009 (skips
  when one of them is in use); ``NVMEOF_INTEROP_PORTS=free`` serves the same demo on
  OS-chosen free ports instead, for hosts where something else owns 4420.
* ``interop_figures``: records lines (fio IOPS/bandwidth, VM run times) that
  ``pytest_terminal_summary`` prints as an "interop figures" section.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from interop_harness import (
    BUILD_TIMEOUT,
    DEMO_PORTS,
    FIGURES,
    LISTENING,
    REPO_ROOT,
    TARGET_START_TIMEOUT,
    TARGET_STOP_TIMEOUT,
    LinuxVM,
    TargetProcess,
    free_ports_config,
    linuxvm_run_path,
    port_busy,
    stop_target,
    tail,
    target_argv,
)


@pytest.fixture(scope="session")
def linuxvm() -> LinuxVM:
    """The linuxvm runner, built once; skips (with the reason) where it cannot work."""
    run_path = linuxvm_run_path()
    if not run_path.is_file() or not os.access(run_path, os.X_OK):
        pytest.skip(f"linuxvm not available: no executable {run_path} (set LINUXVM_RUN)")
    build = run_path.parent / "build"
    if build.is_file():
        try:
            result = subprocess.run(
                [str(build), "--quiet"],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                errors="replace",
                timeout=BUILD_TIMEOUT,
            )
        except subprocess.TimeoutExpired:
            pytest.skip(f"linuxvm: {build} --quiet did not finish within {BUILD_TIMEOUT} s")
        if result.returncode != 0:
            output = tail(result.stdout + result.stderr, 15)
            pytest.skip(f"linuxvm: {build} --quiet failed (rc {result.returncode}):\n{output}")
    qemu = os.environ.get("LINUXVM_QEMU", "qemu-system-x86_64")
    if shutil.which(qemu) is None:
        pytest.skip(f"linuxvm: {qemu} is not installed (Debian: apt-get install qemu-system-x86)")
    return LinuxVM(run_path)


@pytest.fixture(scope="session")
def nvmeof_target(
    tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config
) -> Iterator[TargetProcess]:
    """``nvmeof-target serve --advertise 10.0.2.2 --log-level info``, stopped at teardown."""
    workdir = tmp_path_factory.mktemp("nvmeof-target")
    mode = os.environ.get("NVMEOF_INTEROP_PORTS", "default")
    if mode == "free":
        config: Path | None = free_ports_config(workdir / "target.toml")
    elif mode == "default":
        config = None
        busy = [port for port in DEMO_PORTS if port_busy(port)]
        if busy:
            pytest.skip(
                f"127.0.0.1 port(s) {', '.join(map(str, busy))} in use (another target?): the"
                " interop tests serve the embedded demo on 4420, 4421 and 8009; free them or set"
                " NVMEOF_INTEROP_PORTS=free"
            )
    else:
        raise pytest.UsageError(f"NVMEOF_INTEROP_PORTS must be 'default' or 'free', not {mode!r}")

    log_path = workdir / "target.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            target_argv(config),
            cwd=REPO_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    target = TargetProcess(proc, log_path)
    try:
        deadline = time.monotonic() + TARGET_START_TIMEOUT
        while True:
            text = target.log_text()
            target.listening = {
                int(m.group(1)): (m.group(2), int(m.group(3)), m.group(4))
                for m in LISTENING.finditer(text)
            }
            if len(target.listening) >= 3:
                break
            if proc.poll() is not None:
                if "Address already in use" in text:
                    pytest.skip(
                        f"nvmeof-target could not listen (address in use):\n{tail(text, 5)}"
                    )
                pytest.fail(f"nvmeof-target exited with status {proc.returncode}:\n{tail(text)}")
            if time.monotonic() > deadline:
                pytest.fail(
                    f"nvmeof-target: no 3 'listening' lines within {TARGET_START_TIMEOUT} s:\n"
                    f"{tail(text)}"
                )
            time.sleep(0.05)
        ids = sorted(target.listening)
        target.io_ports = tuple(
            target.listening[i][1] for i in ids if target.listening[i][2] != "-"
        )
        target.discovery_port = next(
            target.listening[i][1] for i in ids if target.listening[i][2] == "-"
        )
        yield target
    finally:
        status = stop_target(proc)
        notes = pytestconfig.stash.setdefault(FIGURES, [])
        if status is None:
            notes.append(
                f"nvmeof-target did not stop within {TARGET_STOP_TIMEOUT} s of SIGTERM: killed"
            )
        elif status != 0:
            notes.append(f"nvmeof-target exited with status {status} after SIGTERM")
        problems = target.problems()
        notes.append(
            f"target log: {log_path} ({len(problems)} error/warning line(s))"
            + "".join(f"\n    {line}" for line in problems[:20])
        )


# ---------------------------------------------------------------------------------------------
# figures


@pytest.fixture
def interop_figures(pytestconfig: pytest.Config) -> Callable[[str], None]:
    """``record(line)``: a line for the "interop figures" section of the terminal summary."""
    figures = pytestconfig.stash.setdefault(FIGURES, [])
    return figures.append


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    figures = config.stash.get(FIGURES, [])
    if figures:
        terminalreporter.section("interop figures")
        for line in figures:
            terminalreporter.write_line(line)
