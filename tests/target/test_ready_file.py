"""``nvmeof-target serve --ready-file``: a real daemon tells its harness where it listens."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from target.ready import ReadyInfo, parse_ready_document, read_ready_file

CONFIG = """\
[[subsystem]]
nqn = "nqn.2026-12.io.test:ready"
  [[subsystem.namespace]]
  nsid = 1
  size = "1M"
[[port]]
id = 1
port = 0
subsystems = ["nqn.2026-12.io.test:ready"]
[[port]]
id = 7
port = 0
"""


def serve(tmp_path: Path, *extra: str) -> subprocess.Popen[bytes]:
    config = tmp_path / "target.toml"
    config.write_text(CONFIG)
    command = [sys.executable, "-m", "target", "serve", "--config", str(config),
               "--control", "127.0.0.1:0", "--metrics", "127.0.0.1:0", *extra]  # fmt: skip
    return subprocess.Popen(command, stderr=subprocess.PIPE, cwd=Path(__file__).parents[2])


def wait_for(path: Path, daemon: subprocess.Popen[bytes], limit: float = 15.0) -> ReadyInfo:
    deadline = time.monotonic() + limit
    while not path.exists():
        assert daemon.poll() is None, "the daemon exited before it was ready"
        assert time.monotonic() < deadline, "no ready file in time"
        time.sleep(0.02)
    return read_ready_file(path)


def test_ready_file_names_every_bound_port_and_the_daemon_stops_cleanly(tmp_path: Path) -> None:
    ready_path = tmp_path / "ready.json"
    daemon = serve(tmp_path, "--ready-file", str(ready_path))
    try:
        ready = wait_for(ready_path, daemon)
        assert ready.pid == daemon.pid
        assert set(ready.ports) == {1, 7} and ready.port_subsystems[7] == ()
        assert ready.discovery == ready.ports[7]
        assert ready.subsystems == ("nqn.2026-12.io.test:ready",)
        assert ready.control is not None and ready.metrics is not None and ready.pcap_dir is None
        for endpoint in [*ready.ports.values(), ready.control, ready.metrics]:
            assert endpoint[1] != 0
            socket.create_connection(endpoint, timeout=5).close()  # listening already
        # Written by rename: no temporary file is left next to it.
        assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".ready")] == []
    finally:
        daemon.send_signal(signal.SIGTERM)
        _, err = daemon.communicate(timeout=10)
    assert daemon.returncode == 0, err.decode()


def test_unwritable_ready_file_is_one_line_and_status_1(tmp_path: Path) -> None:
    daemon = serve(tmp_path, "--ready-file", str(tmp_path / "missing" / "ready.json"))
    _, err = daemon.communicate(timeout=15)
    assert daemon.returncode == 1
    assert err.decode().splitlines()[-1].startswith("nvmeof-target: cannot write the ready file")


def test_a_document_of_another_format_or_shape_is_refused() -> None:
    with pytest.raises(ValueError, match="format 1"):
        parse_ready_document(json.loads('{"format": 99}'))
    with pytest.raises(ValueError, match="malformed ready file: KeyError"):
        parse_ready_document({"format": 1, "pid": 1})
