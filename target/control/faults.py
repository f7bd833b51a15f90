"""Fault rules: what to break, when, and how (matching only; the connection applies them).

A rule matches commands by port, subsystem, namespace, opcode, host and queue kind, then fires
with a probability, on every Nth match, and at most ``count`` times. The first rule that fires
decides the command's fate. Actions:

- ``delay``: serve the command, send its response ``delay_ms`` later.
- ``status``: do not serve it; complete it with ``status`` (kernel encoding, e.g. 0x370 host
  path error, 0x303 ANA transition, 0x082 namespace not ready, 0x281 unrecovered read error).
- ``drop``: serve it and never answer (the host's I/O timeout or keep-alive must notice).
- ``corrupt-hdgst`` / ``corrupt-ddgst``: answer with a wrong header or data digest (only where
  that digest was negotiated; the rule then fires without effect otherwise).
- ``close``: close the connection after ``after`` matching commands (a TCP reset).
- ``stall``: stop reading (``direction = "rx"``) or sending (``"tx"``) on the connection for
  ``duration_ms``.
- ``ghost-write``: hold a write for ``delay_ms``, then execute it on the media even if its
  connection died meanwhile — the stale copy a host's retry on another path can be
  overwritten by, if it does not wait (Command Quiesce Time).
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from typing import Any

from nvmeof.status import StatusCode

ACTIONS = ("delay", "status", "drop", "corrupt-hdgst", "corrupt-ddgst", "close", "stall",
           "ghost-write")  # fmt: skip
QUEUE_KINDS = ("any", "admin", "io")


@dataclass
class FaultRule:
    """One fault rule; ``None`` matchers match anything."""

    action: str
    port: int | None = None
    subsystem: str | None = None
    nsid: int | None = None
    opcode: int | None = None
    #: For Fabrics commands (opcode 0x7F): the command type, e.g. 0x05 Authentication Send,
    #: 0x06 Authentication Receive, 0x01 Connect; a rule with one matches Fabrics commands only.
    fctype: int | None = None
    host: str | None = None
    queue: str = "io"
    probability: float = 1.0
    every: int = 1
    count: int | None = None
    delay_ms: int = 0
    status: int = StatusCode.HOST_PATH_ERROR
    dnr: bool = False
    after: int = 1
    direction: str = "rx"
    duration_ms: int = 1000
    id: int = 0
    matched: int = 0
    fired: int = 0

    def __post_init__(self) -> None:
        problem = self.problem()
        if problem:
            raise ValueError(problem)

    def problem(self) -> str | None:
        if self.action not in ACTIONS:
            return f"unknown fault action {self.action!r} (one of {', '.join(ACTIONS)})"
        if self.queue not in QUEUE_KINDS:
            return f"queue must be one of {', '.join(QUEUE_KINDS)}"
        if not 0.0 <= self.probability <= 1.0:
            return "probability must be between 0 and 1"
        if self.every < 1 or self.after < 1 or (self.count is not None and self.count < 0):
            return "every and after must be >= 1, count >= 0"
        if self.delay_ms < 0 or self.duration_ms < 0:
            return "delays must be >= 0"
        if self.direction not in ("rx", "tx"):
            return "direction must be rx or tx"
        if not 0 <= self.status <= 0x7FF:
            return "status is a code (SCT << 8) | SC, 0..0x7ff"
        return None

    def describe(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class FaultSet:
    """The active rules of a target, with a seeded random source (reproducible runs)."""

    seed: int = 0
    rules: list[FaultRule] = field(default_factory=list)
    _next_id: int = 1

    def __post_init__(self) -> None:
        self._random = random.Random(self.seed)

    def add(self, rule: FaultRule) -> FaultRule:
        rule.id = self._next_id
        self._next_id += 1
        self.rules.append(rule)
        return rule

    def remove(self, rule_id: int) -> bool:
        before = len(self.rules)
        self.rules = [r for r in self.rules if r.id != rule_id]
        return len(self.rules) != before

    def clear(self) -> int:
        count = len(self.rules)
        self.rules.clear()
        return count

    def match(self, *, port: int, subsystem: str, nsid: int, opcode: int, host: str,
              qid: int, fctype: int | None = None) -> FaultRule | None:  # fmt: skip
        """The rule that fires for this command, if any (counters are updated)."""
        for rule in self.rules:
            if rule.count is not None and rule.fired >= rule.count:
                continue
            if (rule.port is not None and rule.port != port) or (
                rule.subsystem is not None and rule.subsystem != subsystem
            ):
                continue
            if (rule.nsid is not None and rule.nsid != nsid) or (
                rule.opcode is not None and rule.opcode != opcode
            ):
                continue
            if rule.host is not None and rule.host != host:
                continue
            if rule.fctype is not None and rule.fctype != fctype:
                continue
            if (rule.queue == "admin" and qid != 0) or (rule.queue == "io" and qid == 0):
                continue
            rule.matched += 1
            if rule.action == "close":
                if rule.matched < rule.after:
                    continue
            elif rule.matched % rule.every:
                continue
            if rule.probability < 1.0 and self._random.random() >= rule.probability:
                continue
            rule.fired += 1
            return rule
        return None
