"""What the control API's clients share: addresses, errors, answer types, parsed metrics.

The clients themselves are :class:`target.control.aclient.AsyncControlClient` (written by hand)
and :class:`target.control.client.ControlClient` (generated from it by ``scripts/unasync.py``, so
the blocking and the async client cannot drift). Nothing here does I/O.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypedDict
from urllib.parse import quote

from prometheus_client.parser import text_string_to_metric_families

Endpoint = tuple[str, int]
DEFAULT_CONTROL: Endpoint = ("127.0.0.1", 9465)
DEFAULT_TIMEOUT = 10.0


class ControlSetupError(ValueError):
    """The control API (or a client of it) cannot be set up as asked: one line."""


class ControlApiError(Exception):
    """The control API refused a request (``status`` is the HTTP status, the message is the
    API's own one line) or, with ``status`` 0, could not be reached."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class ControlNotFound(ControlApiError):
    """HTTP 404: the request names a port, subsystem, namespace, host or rule that is not there."""


def parse_endpoint(text: str) -> Endpoint | None:
    """``ADDR:PORT`` (``[v6]:PORT`` for IPv6) to ``(addr, port)``; ``off`` is None."""
    if text.strip().lower() == "off":
        return None
    match = re.fullmatch(r"\[([0-9a-fA-F:.]+)\]:(\d+)|([^:\[\]\s]+):(\d+)", text.strip())
    if match is None or int(match[2] or match[4]) > 65535:
        raise ValueError(f"not ADDR:PORT (or off): {text!r}")
    return match[1] or match[3], int(match[2] or match[4])


def format_endpoint(endpoint: Endpoint) -> str:
    """``(addr, port)`` back to ``ADDR:PORT`` (brackets around an IPv6 address)."""
    host, port = endpoint
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` only accepts local connections."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def read_token(path: str) -> str:
    """The bearer token in the file ``path`` (surrounding whitespace removed)."""
    try:
        with open(path, encoding="utf-8") as handle:
            token = handle.read().strip()
    except (OSError, UnicodeDecodeError) as err:
        reason = getattr(err, "strerror", None) or str(err)
        raise ControlSetupError(f"cannot read the token file {path}: {reason}") from None
    if not token or any(c.isspace() or not c.isprintable() for c in token):
        raise ControlSetupError(f"the token file {path} must hold one token without spaces")
    return token


def base_url(endpoint: Endpoint | str) -> str:
    """``http://ADDR:PORT`` for an endpoint given as a tuple, ``ADDR:PORT`` or a URL."""
    if isinstance(endpoint, str):
        if "://" in endpoint:
            return endpoint.rstrip("/")
        parsed = parse_endpoint(endpoint)
        if parsed is None:
            raise ControlSetupError("the control API is off: there is nothing to connect to")
        endpoint = parsed
    return f"http://{format_endpoint(endpoint)}"


def segment(value: str | int) -> str:
    """One path segment (an NQN has ``:``; a host NQN may have anything): percent-encoded."""
    return quote(str(value), safe="")


def compact(**fields: Any) -> dict[str, Any]:
    """A request body without the fields left at None."""
    return {name: value for name, value in fields.items() if value is not None}


def read_config_file(path: str | os.PathLike[str]) -> tuple[str, str | None, str]:
    """(text, format, source name) of a configuration file for ``PUT /config``: ``.json`` is
    nvmetcli's format, anything else is left to the target (native TOML unless it is JSON)."""
    name = os.fspath(path)
    try:
        with open(name, encoding="utf-8-sig") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError) as err:
        reason = getattr(err, "strerror", None) or str(err)
        raise ControlSetupError(f"cannot read {name}: {reason}") from None
    fmt = "nvmetcli" if name.lower().endswith(".json") else None
    return text, fmt, os.path.basename(name)


def api_error(status: int, answer: object, reason: str) -> ControlApiError:
    """The exception for an HTTP error answer (``{"error": ...}`` when the API wrote it)."""
    message = answer.get("error") if isinstance(answer, dict) else None
    kind = ControlNotFound if status == 404 else ControlApiError
    return kind(status, str(message or f"HTTP {status} {reason}"))


# -- answers ------------------------------------------------------------------------------------


class ReferralInfo(TypedDict):
    name: str
    addr: str
    port: int
    portid: int


class PortStatus(TypedDict):
    id: int
    addr: str
    port: int
    mode: str
    listening: bool
    advertise: str
    subsystems: list[str]
    ana: dict[str, str]
    referrals: list[ReferralInfo]
    connections: int
    blackholed: int
    tls: str | None  # None, "required" or "allowed"
    tls_connections: int


class ReservationSummary(TypedDict):
    type: int  # the reservation's RTYPE, 0: none held
    registrants: int
    generation: int


class NamespaceStatus(TypedDict):
    nsid: int
    size: int
    block_size: int
    backend: str
    #: what the data survives: volatile (RAM), discarded (null), sync=flush|always|none (file)
    durability: str
    ana_group: int
    enabled: bool
    uuid: str
    reservations: ReservationSummary | None  # None: the namespace serves no reservations


class RegistrantInfo(TypedDict):
    hostid: str  # the Host ID as UUID text
    key: int
    holds: bool
    hosts: list[str]  # host NQNs of the live controllers with that Host ID


class ReservationInfo(TypedDict):
    nqn: str
    nsid: int
    generation: int
    type: int
    type_name: str  # nvme-cli's words for the type
    holder: str | None
    ptpl: bool
    can_persist: bool
    conflicts: int
    registrants: list[RegistrantInfo]


class ReservationsCleared(TypedDict):
    nqn: str
    nsid: int
    removed: int  # registrants removed
    released_type: int  # the type of the reservation released, 0: there was none
    notified: int  # controllers sent a Reservation Preempted notification
    generation: int
    changes: list[str]


class ControllerStatus(TypedDict):
    cntlid: int
    host: str
    port: int
    kato_ms: int
    queues: list[int]


class SubsystemStatus(TypedDict):
    nqn: str
    serial: str
    model: str
    allow_any_host: bool
    allowed_hosts: list[str]
    namespaces: list[NamespaceStatus]
    controllers: list[ControllerStatus]


class ChangeRecord(TypedDict):
    time: float
    what: str


class TargetStatus(TypedDict):
    ports: list[PortStatus]
    subsystems: list[SubsystemStatus]
    hosts: list[str]
    discovery_controllers: int
    connections: int
    ana_change_count: int
    faults: list[dict[str, Any]]
    faults_fired: dict[str, int]
    changes: list[ChangeRecord]


@dataclass(frozen=True)
class Sample:
    name: str
    labels: Mapping[str, str]
    value: float


class Metrics:
    """Prometheus text parsed by prometheus_client's own parser, with lookups for tests:
    ``metrics.value("nvmeof_target_commands_total", port="1")`` sums the matching samples."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.samples = [
            Sample(s.name, dict(s.labels), s.value)
            for family in text_string_to_metric_families(text)
            for s in family.samples
        ]

    def select(self, name: str, **labels: str | int) -> Iterator[Sample]:
        wanted = {key: str(value) for key, value in labels.items()}
        for sample in self.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in wanted.items()):
                yield sample

    def value(self, name: str, **labels: str | int) -> float:
        """The sum of the samples named ``name`` whose labels include ``labels`` (0 if none)."""
        return sum(sample.value for sample in self.select(name, **labels))

    def names(self) -> set[str]:
        return {sample.name for sample in self.samples}
