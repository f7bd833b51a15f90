"""The ready file of ``nvmeof-target serve --ready-file FILE``: where a started daemon listens.

A test harness (``nvmeof_emu.TargetProcess``, a shell script, another language's test suite)
starts the daemon with ports configured as 0 and must learn which ports were bound without
parsing logs or racing a port scan. Once every listener is bound (the target's ports, the
control API, the metrics listener) and the daemon handles SIGTERM, it writes a JSON document
to FILE, atomically (a temporary file in the same directory, then a rename), so a reader either
sees no file or the whole document::

    {
      "format": 1,
      "pid": 4242,
      "ports": {"1": {"addr": "127.0.0.1", "port": 40123, "subsystems": ["nqn...:demo"]},
                "3": {"addr": "127.0.0.1", "port": 40125, "subsystems": []}},
      "discovery": {"id": 3, "addr": "127.0.0.1", "port": 40125},
      "control": {"addr": "127.0.0.1", "port": 40127},
      "metrics": {"addr": "127.0.0.1", "port": 40129},
      "subsystems": ["nqn...:demo"],
      "pcap_dir": "/tmp/capture"
    }

``discovery`` is the discovery-only port (no subsystems) with the lowest ID, null when there is
none (every port also answers the discovery NQN, like nvmet). ``control`` / ``metrics`` are null
when turned off; ``pcap_dir`` is null without ``--pcap``. The file describes the daemon as it
started: ports added later through the control API are in ``GET /status``.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from target.control.clientbase import Endpoint
from target.control.httpapi import ControlEndpoints
from target.daemon import Target

READY_FORMAT = 1


class ReadyFileError(Exception):
    """The ready file cannot be written (one line; the daemon exits with status 1)."""


def _endpoint_json(endpoint: Endpoint | None) -> dict[str, Any] | None:
    return None if endpoint is None else {"addr": endpoint[0], "port": endpoint[1]}


def ready_document(target: Target, endpoints: ControlEndpoints | None) -> dict[str, Any]:
    """What a serving ``target`` (and its control listeners, if any) tells its harness."""
    ports = sorted(target.ports.values(), key=lambda port: port.id)
    discovery = next((port for port in ports if not port.subsystems), None)
    return {
        "format": READY_FORMAT,
        "pid": os.getpid(),
        "ports": {
            str(port.id): {"addr": port.addr, "port": port.bound_port,
                           "subsystems": list(port.subsystems)}
            for port in ports
        },
        "discovery": None if discovery is None else {
            "id": discovery.id, "addr": discovery.addr, "port": discovery.bound_port},
        "control": _endpoint_json(endpoints.control if endpoints else None),
        "metrics": _endpoint_json(endpoints.metrics if endpoints else None),
        "subsystems": sorted(target.state.subsystems),
        "pcap_dir": None if target.pcap_dir is None else str(target.pcap_dir),
    }  # fmt: skip


def write_ready_file(path: str | os.PathLike[str], document: dict[str, Any]) -> None:
    """Write ``document`` to ``path`` atomically: a reader sees nothing or all of it."""
    final = Path(path)
    fd, temporary = tempfile.mkstemp(prefix=f".{final.name}.", dir=final.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(document, out, indent=2)
            out.write("\n")
        os.replace(temporary, final)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


@dataclass(frozen=True)
class ReadyInfo:
    """A ready file, read back (:func:`read_ready_file`)."""

    pid: int
    ports: dict[int, Endpoint]
    port_subsystems: dict[int, tuple[str, ...]]
    discovery: Endpoint | None
    control: Endpoint | None
    metrics: Endpoint | None
    subsystems: tuple[str, ...]
    pcap_dir: str | None


def _endpoint(value: Any) -> Endpoint | None:
    return None if value is None else (str(value["addr"]), int(value["port"]))


def parse_ready_document(document: dict[str, Any]) -> ReadyInfo:
    """The :class:`ReadyInfo` of a decoded ready document (ValueError if it is not one)."""
    if document.get("format") != READY_FORMAT:
        raise ValueError(f"not a ready file of format {READY_FORMAT}: {document.get('format')!r}")
    try:
        ports = {int(key): (str(v["addr"]), int(v["port"])) for key, v in document["ports"].items()}
        return ReadyInfo(
            pid=int(document["pid"]),
            ports=ports,
            port_subsystems={int(key): tuple(v["subsystems"])
                             for key, v in document["ports"].items()},
            discovery=_endpoint(document["discovery"]),
            control=_endpoint(document["control"]),
            metrics=_endpoint(document["metrics"]),
            subsystems=tuple(document["subsystems"]),
            pcap_dir=document["pcap_dir"],
        )  # fmt: skip
    except (KeyError, TypeError, AttributeError) as err:
        raise ValueError(f"malformed ready file: {type(err).__name__} {err}") from None


def read_ready_file(path: str | os.PathLike[str]) -> ReadyInfo:
    """Read and check a ready file (OSError if absent, ValueError if malformed)."""
    with open(path, encoding="utf-8") as handle:
        return parse_ready_document(json.load(handle))
