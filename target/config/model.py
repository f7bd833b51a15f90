"""Target configuration model: subsystems, namespaces, ports (paths) and their ANA states.

These frozen dataclasses are what the daemon is built from. Files in the native TOML format and
in nvmetcli's JSON format are read into them by :mod:`target.config.files`; the embedded demo
default is :func:`default_config`.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field, replace
from typing import Any

from nvmeof.constants import DISCOVERY_PORT, AnaState

DEMO_NQN = "nqn.2026-11.io.nvmeof-emu:demo"
BACKENDS = ("ram", "file", "null")
#: When the file backend makes writes durable (docs/DURABILITY.md): ``flush`` (a Flush or a FUA
#: write syncs, as nvmet's buffered file backend), ``always`` (every write is synced before it
#: completes) or ``none`` (nothing is ever synced: unsafe, for speed tests).
SYNC_MODES = ("flush", "always", "none")
BLOCK_SIZES = (512, 4096)
#: nvmet's names for the DH-HMAC-CHAP hash functions and DH groups (configfs dhchap_hash and
#: dhchap_dhgroup; the first of each is nvmet's default for a new host).
DHCHAP_HASHES = ("hmac(sha256)", "hmac(sha384)", "hmac(sha512)")
DHCHAP_DHGROUPS = ("null", "ffdhe2048", "ffdhe3072", "ffdhe4096", "ffdhe6144", "ffdhe8192")
#: What an export writes in place of a secret unless asked to show them; applied live, it keeps
#: the secret the target has; in a file read at start it is an error.
SECRET_HIDDEN = "(hidden)"
#: A port's TLS setting (nvmet addr_tsas = tls1.3 with addr_treq required / not required).
TLS_MODES = ("required", "allowed")
#: How a host derived its TLS PSK from the interchange key (docs/TLS.md).
TLS_PSK_DERIVATIONS = ("compat", "rfc8446")


class ConfigError(ValueError):
    """A configuration problem; the message is one line naming the offending field."""


@dataclass(frozen=True)
class NamespaceConfig:
    """One namespace of a subsystem.

    Attributes:
        nsid: namespace ID (1-based).
        size: capacity in bytes (a multiple of ``block_size``).
        block_size: LBA data size, 512 or 4096.
        backend: ``ram`` (default), ``file`` (sparse file at ``path``) or ``null``.
        path: the backing file for the ``file`` backend.
        uuid / nguid / eui64: identifiers; derived from the subsystem NQN and NSID when omitted,
            so they are stable across restarts and identical on every path.
        ana_group: the ANA group the namespace belongs to.
        enabled: a disabled namespace is configured but not visible to hosts.
        reservations: serve the reservation commands (nvmet's ``resv_enable``); when off they
            are Invalid Opcode, as on a kernel without reservations (6.12 and older).
        sync: the file backend's durability, one of :data:`SYNC_MODES` (the others are not
            durable at all: RAM is lost when the target stops, null discards).
    """

    nsid: int
    size: int = 64 << 20
    block_size: int = 512
    backend: str = "ram"
    path: str | None = None
    uuid: bytes | None = None
    nguid: bytes | None = None
    eui64: bytes | None = None
    ana_group: int = 1
    enabled: bool = True
    reservations: bool = True
    sync: str = "flush"


@dataclass(frozen=True)
class SubsystemConfig:
    """An NVM subsystem: what hosts connect to by NQN."""

    nqn: str
    namespaces: tuple[NamespaceConfig, ...] = ()
    serial: str | None = None
    model: str = "nvmeof-emu"
    allow_any_host: bool = True
    allowed_hosts: tuple[str, ...] = ()
    max_io_queues: int = 128  # nvmet: attr_qid_max defaults to 128 (NVMET_NR_QUEUES)
    queue_size: int = 1024  # nvmet: CAP.MQES 1023 (NVMET_QUEUE_SIZE)
    cntlid_min: int = 1  # nvmet: attr_cntlid_min / attr_cntlid_max (NVME_CNTLID_MIN..MAX)
    cntlid_max: int = 0xFFEF
    #: The highest NSID (SPDK's max_namespaces); Identify Controller reports it as NN and MNAN.
    max_namespaces: int = 1024
    #: Command Quiesce Time (TP4129, NVMe 2.1), in Identify Controller: how long after it
    #: learns of a lost connection a controller may still be executing that connection's
    #: commands. 0: not reported (nvmet's default).
    cqt_ms: int = 0


@dataclass(frozen=True)
class ReferralConfig:
    """Another discovery service advertised in the discovery log (nvmetcli ``referrals``)."""

    name: str
    addr: str
    port: int = DISCOVERY_PORT
    portid: int = 0


@dataclass(frozen=True)
class PortConfig:
    """A TCP listener (one path). Every port also serves the discovery NQN, like nvmet.

    Attributes:
        id: port ID (PORTID in the discovery log).
        addr / port: the address to bind.
        advertise: address written into discovery log entries instead of ``addr`` (NAT, a VM
            guest reaching the host as 10.0.2.2); None means ``addr``.
        subsystems: NQNs exposed on this port (empty: a discovery-only port).
        ana_states: ANA group ID -> state on this port; groups not listed are optimized.
        referrals: other discovery services listed in this port's discovery log.
        inline_data_size: in-capsule data accepted on I/O queues (sets IOCCSZ).
        strict: refuse what the specification forbids even where the Linux target accepts it
            (a conformance checker for hosts); off, refuse exactly what nvmet refuses
            (docs/TOLERANCE.md).
        tls: None (plain TCP only), ``required`` (TLS 1.3 with a PSK, TP 8011; a plaintext
            ICReq is closed, as nvmet) or ``allowed`` (TLS or plaintext, told apart by the
            first byte as nvmet_tcp_try_peek_pdu does). The discovery log says it in TREQ and
            TSAS.
    """

    id: int
    addr: str = "127.0.0.1"
    port: int = 4420
    advertise: str | None = None
    subsystems: tuple[str, ...] = ()
    ana_states: tuple[tuple[int, AnaState], ...] = ()
    referrals: tuple[ReferralConfig, ...] = ()
    inline_data_size: int = 8192
    strict: bool = False
    tls: str | None = None


@dataclass(frozen=True)
class HostConfig:
    """A host the target knows (nvmet's configfs ``hosts/<nqn>``) and how it authenticates.

    Attributes:
        nqn: the host NQN.
        dhchap_key: its DH-HMAC-CHAP secret (``DHHC-1:..``); set, the host must authenticate.
        dhchap_ctrl_key: the controller's secret: set, the target proves itself too
            (bidirectional authentication).
        dhchap_hash / dhchap_dhgroup: what the target offers that host, nvmet's names.
        tls_key: the host's configured TLS PSK, ``NVMeTLSkey-1:..`` (``nvme gen-tls-key``): a
            TLS port accepts the host's PSK identities for it (docs/TLS.md).
        tls_psk_derivation: how the host turns that key into the TLS PSK: ``compat`` (what
            nvme-cli 2.13 / libnvme 1.13, Debian 13, file in the kernel keyring) or
            ``rfc8446`` (later libnvme).
    Secrets stay out of ``repr`` (logs, tracebacks).
    """

    nqn: str
    dhchap_key: str | None = field(default=None, repr=False)
    dhchap_ctrl_key: str | None = field(default=None, repr=False)
    dhchap_hash: str = DHCHAP_HASHES[0]
    dhchap_dhgroup: str = DHCHAP_DHGROUPS[0]
    tls_key: str | None = field(default=None, repr=False)
    tls_psk_derivation: str = TLS_PSK_DERIVATIONS[0]

    @property
    def authentication(self) -> str:
        """``none``, ``host`` (the host proves itself) or ``bidirectional``."""
        if self.dhchap_key is None:
            return "none"
        return "bidirectional" if self.dhchap_ctrl_key is not None else "host"


def _host(entry: HostConfig | str) -> HostConfig:
    return entry if isinstance(entry, HostConfig) else HostConfig(nqn=entry)


@dataclass(frozen=True)
class TargetConfig:
    """Everything the daemon serves.

    ``hosts`` may be given as NQN strings (no authentication): they become :class:`HostConfig`.
    """

    subsystems: tuple[SubsystemConfig, ...] = ()
    ports: tuple[PortConfig, ...] = ()
    hosts: tuple[HostConfig, ...] = field(default=())
    #: Fault rules active from the start: keyword arguments of
    #: :class:`target.control.faults.FaultRule`.
    faults: tuple[dict[str, Any], ...] = ()
    #: A unique discovery NQN (TP 8013; nvmet's configfs ``discovery_nqn``): hosts may connect
    #: to it as well as to the well-known one, and it names the discovery subsystem in Identify
    #: and in the discovery log's "current discovery subsystem" entry. None: the well-known NQN.
    discovery_nqn: str | None = None

    def __post_init__(self) -> None:
        hosts: tuple[HostConfig | str, ...] = self.hosts
        if any(isinstance(h, str) for h in hosts):
            object.__setattr__(self, "hosts", tuple(_host(h) for h in hosts))

    @property
    def host_nqns(self) -> tuple[str, ...]:
        return tuple(h.nqn for h in self.hosts)

    def host(self, nqn: str) -> HostConfig | None:
        return next((h for h in self.hosts if h.nqn == nqn), None)


def default_config() -> TargetConfig:
    """The embedded demo: one subsystem with two RAM namespaces, two I/O ports (ANA group 1
    optimized on 4420 and non-optimized on 4421) and discovery on 8009."""
    subsystem = SubsystemConfig(
        nqn=DEMO_NQN,
        namespaces=(
            NamespaceConfig(nsid=1, size=256 << 20, block_size=512),
            NamespaceConfig(nsid=2, size=256 << 20, block_size=4096),
        ),
    )
    return TargetConfig(
        subsystems=(subsystem,),
        ports=(
            PortConfig(id=1, port=4420, subsystems=(DEMO_NQN,),
                       ana_states=((1, AnaState.OPTIMIZED),)),
            PortConfig(id=2, port=4421, subsystems=(DEMO_NQN,),
                       ana_states=((1, AnaState.NON_OPTIMIZED),)),
            PortConfig(id=3, port=DISCOVERY_PORT),
        ),
    )  # fmt: skip


def with_free_ports(config: TargetConfig) -> TargetConfig:
    """The same configuration with every port on port 0 (any free port): for tests and for
    embedding a target next to others. The bound ports are in ``Target.ports[id].bound_port``."""
    return replace(config, ports=tuple(replace(port, port=0) for port in config.ports))


def derived_serial(nqn: str) -> str:
    """A stable 20-character serial number for a subsystem without one."""
    return hashlib.sha256(nqn.encode()).hexdigest()[:20]


def derived_ids(nqn: str, nsid: int) -> tuple[bytes, bytes, bytes]:
    """Stable (uuid, nguid, eui64) for a namespace, unique per (subsystem, NSID)."""
    digest = hashlib.sha256(f"{nqn}/{nsid}".encode()).digest()
    ns_uuid = uuid.UUID(bytes=digest[:16], version=4).bytes
    return ns_uuid, digest[16:32], digest[:8]
