"""The kernel host against a unique discovery NQN (TP 8013), with its own target.

The target serves subsystem DEMO_NQN on one port and discovery only on another, with a unique
discovery NQN configured: ``nvme discover`` works with the well-known NQN and with the unique
one, lists the discovery subsystem itself first (as nvmet does), and a persistent discovery
controller connects to the unique NQN, reads the log and goes away.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from interop_harness import (
    DEMO_NQN,
    GUEST_DIR,
    LISTENING,
    REPO_ROOT,
    TARGET_START_TIMEOUT,
    LinuxVM,
    TargetProcess,
    discovery_entries,
    stop_target,
    tail,
    target_argv,
)

pytestmark = pytest.mark.interop

CQT_MS = 1234  # shows in nvme-cli 2.13's id-ctrl (Debian 13); 2.3 does not print the field
UNIQUE = "nqn.2014-08.org.nvmexpress.discovery:uuid:5b0f5f4e-7f7c-4a49-9d2e-1a5c9c6b2f10"


@pytest.fixture(scope="module")
def unique_target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TargetProcess]:
    workdir = tmp_path_factory.mktemp("unique-discovery")
    config = workdir / "target.toml"
    config.write_text(
        f'discovery_nqn = "{UNIQUE}"\n'
        f'[[subsystem]]\nnqn = "{DEMO_NQN}"\ncqt_ms = {CQT_MS}\n'
        '  [[subsystem.namespace]]\n  nsid = 1\n  size = "64MiB"\n'
        f'[[port]]\nid = 1\naddr = "127.0.0.1"\nport = 0\nsubsystems = ["{DEMO_NQN}"]\n'
        '[[port]]\nid = 2\naddr = "127.0.0.1"\nport = 0\n',
        encoding="utf-8",
    )
    log_path = workdir / "target.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(target_argv(config), cwd=REPO_ROOT, stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    target = TargetProcess(proc, log_path)
    try:
        deadline = time.monotonic() + TARGET_START_TIMEOUT
        while len(LISTENING.findall(target.log_text())) < 2:
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"nvmeof-target did not start:\n{tail(target.log_text())}")
            time.sleep(0.05)
        for m in LISTENING.finditer(target.log_text()):
            target.listening[int(m.group(1))] = (m.group(2), int(m.group(3)), m.group(4))
        target.discovery_port = target.listening[2][1]
        target.io_ports = (target.listening[1][1],)
        yield target
    finally:
        stop_target(proc)


def test_kernel_discovers_through_the_unique_and_the_well_known_nqn(
    linuxvm: LinuxVM, unique_target: TargetProcess
) -> None:
    script: Path = GUEST_DIR / "discovery_nqn.sh"
    run = linuxvm.run("discovery-nqn", script, {
        "DISC_PORT": str(unique_target.discovery_port), "UNIQUE": UNIQUE,
        "IO_PORT": str(unique_target.io_ports[0]), "NQN": DEMO_NQN,
    }, timeout=240, target=unique_target)  # fmt: skip
    for name in ("discover-well-known", "discover-unique"):
        step = run.step(name)
        assert step.rc == 0, f"{name}:\n{step.output}\n{run.context()}"
        entries = discovery_entries(step.output)
        assert entries[0].get("subtype") == "current discovery subsystem", step.output
        assert entries[0].get("subnqn") == UNIQUE, step.output
        assert [e.get("subnqn") for e in entries[1:]] == [DEMO_NQN], step.output
        assert entries[1].get("trsvcid") == str(unique_target.io_ports[0]), step.output
    assert run.step("persistent").rc == 0, run.context()
    devices = run.infos("subsysnqn")
    assert any(d["subsysnqn"] == UNIQUE for d in devices), run.context()
    through = run.step("discover-through-persistent")
    assert through.rc == 0, run.context()
    assert [e.get("subnqn") for e in discovery_entries(through.output)] == [UNIQUE, DEMO_NQN]
    assert run.step("disconnect-persistent").rc == 0, run.context()
    id_ctrl = run.step("id-ctrl")
    assert id_ctrl.rc == 0, run.context()
    cqt = [line for line in id_ctrl.output.splitlines() if line.split(":")[0].strip() == "cqt"]
    if os.environ.get("LINUXVM_RELEASE", "bookworm") != "bookworm":  # nvme-cli 2.13
        assert cqt and cqt[0].split(":")[1].strip() == str(CQT_MS), id_ctrl.output
    assert not unique_target.problems(run.target_log), run.target_log
