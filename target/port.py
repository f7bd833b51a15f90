"""Ports: TCP listeners (paths) and the ANA state of each ANA group on each of them."""

from __future__ import annotations

from nvmeof.constants import AnaState
from target.config import PortConfig, ReferralConfig


class Port:
    """One listener. ANA state belongs to (port, group); namespaces only name a group.

    Attributes:
        bound_port: the TCP port actually bound (differs from the configured one for port 0).
    """

    def __init__(self, cfg: PortConfig) -> None:
        self.id = cfg.id
        self.addr = cfg.addr
        self.port = cfg.port
        self.bound_port = cfg.port
        self.advertise = cfg.advertise
        self.subsystems: list[str] = list(cfg.subsystems)
        self.referrals: list[ReferralConfig] = list(cfg.referrals)
        self.inline_data_size = cfg.inline_data_size
        self.strict = cfg.strict
        #: None, "required" or "allowed" (PortConfig.tls).
        self.tls = cfg.tls
        self.ana: dict[int, AnaState] = dict(cfg.ana_states)
        self.ana_chgcnt: dict[int, int] = {}
        self.enabled = True
        #: Operator state: "up", or how it was taken down (reset, close, blackhole, refuse).
        self.mode = "up"

    def ana_state(self, group: int) -> AnaState:
        return self.ana.get(group, AnaState.OPTIMIZED)

    @property
    def advertised_addr(self) -> str:
        return self.advertise or self.addr

    def exposes(self, nqn: str) -> bool:
        return nqn in self.subsystems

    def __repr__(self) -> str:
        return f"Port({self.id}, {self.addr}:{self.bound_port})"
