"""Fault scenarios: a TOML timeline of operator actions, parsed and expanded (no sockets, no
clock: only :func:`load_scenario` reads its file).

A scenario file (documented in ``docs/SCENARIOS.md``, example ``deploy/scenario.example.toml``)::

    name = "flap"          # optional (default: the file's stem)
    seed = 7               # optional (default 0): seeds the jitter; the runner may override it

    [[step]]
    at = "500ms"           # offset from the start: seconds, or "5s", "250ms", "1.5s", "2m"
    action = "port-down"
    port = 1
    mode = "reset"         # reset | close | blackhole | refuse
    duration = "300ms"     # optional: the reverse step (port-up) that much later
    repeat = 3             # optional: occurrences (default 1) ...
    every = "1s"           # ... this far apart
    jitter = "50ms"        # optional: a random offset in [0, jitter] added to each occurrence

:func:`parse_scenario` builds a validated :class:`Scenario`; every problem is one
:class:`~target.config.ConfigError` line naming the field in the file's own key names
(``scenario.toml: step[2].mode: must be one of reset, close, blackhole, refuse, got 'rst'``).
:meth:`Scenario.schedule` expands repeats, jitter and automatic reverse steps into a time-ordered
list of :class:`Occurrence`; for one seed it is always the same list. Running it against a
target is :mod:`target.control.scenario_run`'s job.
"""

from __future__ import annotations

import random
import re
import tomllib
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nvmeof.constants import AnaState
from target.config import BACKENDS, BLOCK_SIZES, ConfigError
from target.config.files import NAMESPACE_KEYS, SUBSYSTEM_KEYS, native_namespace, native_subsystem
from target.config.validate import (
    FAULT_KEYS,
    MAX_NSID,
    Table,
    config_error,
    fault_rule_kwargs,
)
from target.control.actions import PORT_DOWN_MODES

#: Every step action, and the keys each takes besides :data:`COMMON_KEYS`.
ACTION_KEYS: dict[str, frozenset[str]] = {
    "port-down": frozenset({"port", "mode", "duration"}),
    "port-up": frozenset({"port"}),
    "ana": frozenset({"port", "group", "state", "via_change_ms", "duration", "restore"}),
    "fault-add": frozenset({"fault", "name", "duration"}),
    "fault-remove": frozenset({"name"}),
    "fault-clear": frozenset(),
    "ns-add": frozenset({"nqn", *NAMESPACE_KEYS}),
    "ns-remove": frozenset({"nqn", "nsid"}),
    "ns-resize": frozenset({"nqn", "nsid", "size"}),
    "subsystem-add": frozenset({"ports", *SUBSYSTEM_KEYS}),
    "subsystem-remove": frozenset({"nqn"}),
    "resv-clear": frozenset({"nqn", "nsid"}),
    "restart": frozenset(),
    "wait": frozenset(),
    "mark": frozenset(),
}
ACTIONS = tuple(ACTION_KEYS)
#: Keys every step may have.
COMMON_KEYS = frozenset({"at", "action", "label", "repeat", "every", "jitter"})
#: What undoes a step with a ``duration``.
UNDO_ACTIONS = {"port-down": "port-up", "ana": "ana", "fault-add": "fault-remove"}
TOP_KEYS = frozenset({"name", "seed", "description", "step"})
#: Longest offset, interval or duration accepted (a day): catches "5000m" meant as ms.
MAX_SECONDS = 86400.0
MAX_REPEAT = 10000

_DURATION_RE = re.compile(r"\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*(ms|s|m|h)\s*", re.IGNORECASE)
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_ANA_LABELS = tuple(state.label for state in AnaState)


def parse_duration(value: object) -> float:
    """Seconds from a number (seconds) or a string ``"250ms"``, ``"5s"``, ``"1.5s"``, ``"2m"``,
    ``"1h"``. Raises ValueError (a message without the field name) for anything else."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str):
        match = _DURATION_RE.fullmatch(value)
        if match is None:
            raise ValueError(f"not a duration: {value!r} (use seconds, or e.g. '250ms', '5s')")
        seconds = float(match[1]) * _UNIT_SECONDS[match[2].lower()]
    else:
        shown = "true" if value is True else "false" if value is False else type(value).__name__
        raise ValueError(f"must be a duration (seconds, or a string like '250ms'), got {shown}")
    if not 0.0 <= seconds <= MAX_SECONDS:
        raise ValueError(f"must be between 0 and {MAX_SECONDS:g} seconds, got {seconds:g}")
    return seconds


@dataclass(frozen=True)
class Step:
    """One ``[[step]]`` of the file.

    ``params`` are the action's arguments, checked, ready for the control API (JSON values as
    the file gave them: a size may still be ``"64M"``, which the API takes).
    """

    number: int  # position in the file, 0-based: "step[2]" in messages
    at: float
    action: str
    params: Mapping[str, Any] = field(default_factory=dict)
    label: str = ""
    repeat: int = 1
    every: float = 0.0
    jitter: float = 0.0
    duration: float | None = None

    def describe(self) -> str:
        """``port-down port=1 mode=reset`` (the label, for wait and mark)."""
        if self.action in ("wait", "mark"):
            return f"{self.action} {self.label}".rstrip()
        return " ".join([self.action, *_describe_params(self.action, self.params)])


@dataclass(frozen=True)
class Occurrence:
    """One thing to do at ``time`` seconds from the start: repetition ``index`` of ``step``,
    or (``undo``) its automatic reverse ``step.duration`` later."""

    time: float
    step: Step
    index: int = 0
    undo: bool = False

    @property
    def action(self) -> str:
        return UNDO_ACTIONS[self.step.action] if self.undo else self.step.action

    @property
    def params(self) -> dict[str, Any]:
        """The arguments of what is done (the reverse step's for an undo)."""
        params = dict(self.step.params)
        if not self.undo:
            return params
        if self.step.action == "port-down":
            return {"port": params["port"]}
        if self.step.action == "ana":
            return {"port": params["port"], "group": params["group"], "state": params["restore"]}
        return {"name": params.get("name")}  # fault-add: the runner removes what it added

    @property
    def key(self) -> tuple[int, int]:
        """Which occurrence of which step (an undo shares it with what it undoes)."""
        return self.step.number, self.index

    def describe(self) -> str:
        if not self.undo:
            return self.step.describe()
        if self.step.action == "fault-add":
            return f"fault-remove (end of step[{self.step.number}])"
        reverse = " ".join([self.action, *_describe_params(self.action, self.params)])
        return f"{reverse} (end of step[{self.step.number}])"


@dataclass(frozen=True)
class Scenario:
    """A validated scenario: its steps in file order."""

    name: str
    seed: int = 0
    steps: tuple[Step, ...] = ()
    description: str = ""

    def schedule(self, seed: int | None = None) -> list[Occurrence]:
        """Every occurrence, ordered by time; ties keep the file's order (then repetition,
        then a reverse step after what it reverses). The jitter of each step comes from its
        own ``random.Random`` seeded with (seed, step number), so the same seed always gives
        the same schedule and editing one step does not move the others."""
        seed = self.seed if seed is None else seed
        occurrences: list[Occurrence] = []
        for step in self.steps:
            rng = random.Random(f"{seed}/{step.number}")
            for index in range(step.repeat):
                offset = rng.uniform(0.0, step.jitter) if step.jitter else 0.0
                when = round(step.at + index * step.every + offset, 6)
                occurrences.append(Occurrence(when, step, index))
                if step.duration is not None:
                    undo_at = round(when + step.duration, 6)
                    occurrences.append(Occurrence(undo_at, step, index, undo=True))
        return sorted(occurrences, key=lambda o: (o.time, o.step.number, o.index, o.undo))

    def length(self, seed: int | None = None) -> float:
        """Seconds from the start to the last occurrence."""
        return max((o.time for o in self.schedule(seed)), default=0.0)


def format_schedule(schedule: list[Occurrence]) -> list[str]:
    """One line per occurrence: ``+0.500s  step[0]#1  port-down port=1 mode=reset``."""
    return [f"+{o.time:.3f}s  step[{o.step.number}]#{o.index}  {o.describe()}" for o in schedule]


# -- parsing ------------------------------------------------------------------------------------


def load_scenario(path: str | Path) -> Scenario:
    """Read and parse a scenario file; ConfigError (one line, naming the file) on any problem."""
    source = str(path)
    try:
        text = Path(source).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise config_error(source, "", f"cannot read: {reason}") from None
    return parse_scenario(text, source, default_name=Path(source).stem)


def parse_scenario(text: str, source: str = "scenario", *, default_name: str = "") -> Scenario:
    """Parse the TOML text of a scenario (``source`` names it in error messages)."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise config_error(source, "", f"invalid TOML: {exc}") from None
    return build_scenario(document, source, default_name=default_name)


def build_scenario(data: Mapping[str, Any], source: str, *, default_name: str = "") -> Scenario:
    """A Scenario from a parsed document (TOML, or the same shape as JSON)."""
    top = Table(data, source, "", TOP_KEYS)
    name = top.text("name")
    if name is not None and (not name.strip() or not name.isprintable()):
        raise top.error("name", f"must be a non-empty printable string, got {name!r}")
    seed = top.integer("seed")
    tables = top.tables("step")
    if not tables:
        raise top.error("step", "a scenario needs at least one [[step]]")
    steps = tuple(_step(number, t) for number, t in enumerate(tables))
    names = {s.params["name"] for s in steps if s.action == "fault-add" and "name" in s.params}
    for step, table in zip(steps, tables, strict=True):
        if step.action == "fault-remove" and step.params["name"] not in names:
            raise table.error("name", f"no fault-add step is named {step.params['name']!r}")
    return Scenario(name=name or default_name or "scenario", seed=seed or 0, steps=steps,
                    description=top.text("description") or "")  # fmt: skip


def _step(number: int, t: Table) -> Step:
    action = t.require_text("action")
    if action not in ACTION_KEYS:
        raise t.error("action", f"must be one of {', '.join(ACTIONS)}, got {action!r}")
    allowed = COMMON_KEYS | ACTION_KEYS[action]
    for key in t.data:
        if key not in allowed:
            takes = ", ".join(sorted(ACTION_KEYS[action])) or "no keys of its own"
            raise t.error(key, f"unknown key for {action} (it takes {takes})")
    at = _duration(t, "at")
    if at is None:
        raise t.error("at", "missing")
    repeat = t.integer("repeat")
    if repeat is not None and not 1 <= repeat <= MAX_REPEAT:
        raise t.error("repeat", f"must be 1..{MAX_REPEAT}, got {repeat}")
    repeat = repeat or 1
    every = _duration(t, "every")
    if repeat > 1 and not every:
        raise t.error("every", "missing: a step with repeat > 1 needs an interval > 0")
    if repeat == 1 and every is not None:
        raise t.error("every", "only means something with repeat > 1")
    jitter = _duration(t, "jitter") or 0.0
    duration = _duration(t, "duration")
    if duration is not None and repeat > 1 and every is not None and every <= duration + jitter:
        raise t.error("every", f"must exceed duration + jitter ({duration + jitter:g}s) so that "
                               "occurrences do not overlap")  # fmt: skip
    label = t.text("label") or ""
    return Step(number=number, at=at, action=action, params=_params(action, t), label=label,
                repeat=repeat, every=every or 0.0, jitter=jitter, duration=duration)  # fmt: skip


def _duration(t: Table, key: str) -> float | None:
    if key not in t.data:
        return None
    try:
        return parse_duration(t.data[key])
    except ValueError as exc:
        raise t.error(key, str(exc)) from None


def _params(action: str, t: Table) -> dict[str, Any]:
    """The action's arguments, each checked with the configuration file's own readers."""
    if action in ("port-down", "port-up"):
        params: dict[str, Any] = {"port": _port_id(t)}
        if action == "port-down":
            params["mode"] = _choice(t, "mode", PORT_DOWN_MODES, "reset")
        return params
    if action == "ana":
        return _ana(t)
    if action == "fault-add":
        fault = t.table("fault", FAULT_KEYS)
        if fault is None:
            raise t.error("fault", "missing: the rule, e.g. fault = { action = \"delay\", "
                                   "delay_ms = 50 }")  # fmt: skip
        params = {"fault": fault_rule_kwargs(fault)}
        return _put_name(t, params)
    if action == "fault-remove":
        return {"name": _name(t, required=True)}
    if action in ("ns-add", "ns-remove", "ns-resize"):
        return _namespace(action, t)
    if action == "subsystem-add":
        return _subsystem(t)
    if action == "subsystem-remove":
        return {"nqn": t.require_text("nqn")}
    if action == "resv-clear":
        nsid = t.require_integer("nsid")
        if not 1 <= nsid <= MAX_NSID:
            raise t.error("nsid", f"must be 1..{MAX_NSID}, got {nsid}")
        return {"nqn": t.require_text("nqn"), "nsid": nsid}
    return {}


def _port_id(t: Table) -> int:
    port = t.require_integer("port")
    if not 0 <= port <= 0xFFFF:
        raise t.error("port", f"must be a port ID 0..65535, got {port}")
    return port


def _choice(t: Table, key: str, choices: Collection[str], default: str) -> str:
    value = t.text(key)
    if value is None:
        return default
    if value not in choices:
        raise t.error(key, f"must be one of {', '.join(choices)}, got {value!r}")
    return value


def _ana(t: Table) -> dict[str, Any]:
    group = t.require_integer("group")
    if not 1 <= group <= 128:
        raise t.error("group", f"must be an ANA group 1..128, got {group}")
    params: dict[str, Any] = {"port": _port_id(t), "group": group}
    if "state" not in t.data:
        raise t.error("state", f"missing (one of {', '.join(_ANA_LABELS)})")
    params["state"] = _choice(t, "state", _ANA_LABELS, "")
    via = t.integer("via_change_ms")
    if via is not None:
        if not 0 <= via <= int(MAX_SECONDS * 1000):
            raise t.error("via_change_ms", f"must be 0..{int(MAX_SECONDS * 1000)}, got {via}")
        params["via_change_ms"] = via
    restore = _choice(t, "restore", _ANA_LABELS, "optimized")
    if "restore" in t.data and "duration" not in t.data:
        raise t.error("restore", "only means something with duration")
    params["restore"] = restore
    return params


def _name(t: Table, *, required: bool) -> str | None:
    name = t.require_text("name") if required else t.text("name")
    if name is not None and (not name or not name.isprintable()):
        raise t.error("name", f"must be a non-empty printable string, got {name!r}")
    return name


def _put_name(t: Table, params: dict[str, Any]) -> dict[str, Any]:
    name = _name(t, required=False)
    if name is not None:
        params["name"] = name
    return params


def _namespace(action: str, t: Table) -> dict[str, Any]:
    nqn = t.require_text("nqn")
    fields = {key: value for key, value in t.data.items() if key not in COMMON_KEYS}
    fields.pop("nqn")
    if "nsid" not in fields:
        raise t.error("nsid", "missing")
    if action == "ns-resize" and "size" not in fields:
        raise t.error("size", "missing")
    # The same reader and checks as [[subsystem.namespace]] in a configuration file.
    ns_table = Table(fields, t.source, t.path, NAMESPACE_KEYS)
    ns = native_namespace(ns_table)
    if not 1 <= ns.nsid <= MAX_NSID:
        raise t.error("nsid", f"must be 1..{MAX_NSID}, got {ns.nsid}")
    if ns.size <= 0:
        raise t.error("size", f"must be positive, got {ns.size}")
    if action == "ns-add":
        if ns.block_size not in BLOCK_SIZES:
            allowed = " or ".join(map(str, BLOCK_SIZES))
            raise t.error("block_size", f"must be {allowed}, got {ns.block_size}")
        if ns.size % ns.block_size:
            raise t.error("size", f"{ns.size} is not a multiple of block_size {ns.block_size}")
        if ns.backend not in BACKENDS:
            raise t.error("backend", f"must be one of {', '.join(BACKENDS)}, got {ns.backend!r}")
    return {"nqn": nqn, **fields}


def _subsystem(t: Table) -> dict[str, Any]:
    fields = {key: value for key, value in t.data.items() if key not in COMMON_KEYS}
    ports = fields.pop("ports", [])
    if not isinstance(ports, list) or not all(
        isinstance(p, int) and not isinstance(p, bool) and 0 <= p <= 0xFFFF for p in ports
    ):
        raise t.error("ports", "must be an array of port IDs")
    # The same reader as [[subsystem]] in a configuration file (namespaces under "namespace").
    native_subsystem(Table(fields, t.source, t.path, SUBSYSTEM_KEYS))
    return {**fields, "ports": ports}


def _describe_params(action: str, params: Mapping[str, Any]) -> list[str]:
    if action == "fault-add":
        fault = dict(params["fault"])
        words = [f"{fault.pop('action')}"]
        words += [f"{key}={value}" for key, value in fault.items()]
        if "name" in params:
            words.append(f"name={params['name']}")
        return words
    if action == "subsystem-add":
        namespaces = params.get("namespace", [])
        return [str(params["nqn"]), f"namespaces={len(namespaces)}",
                f"ports={list(params['ports'])}"]  # fmt: skip
    skip = {"restore"} if action == "ana" else set()
    return [f"{key}={value}" for key, value in params.items() if key not in skip]


__all__ = [
    "ACTIONS",
    "ConfigError",
    "Occurrence",
    "Scenario",
    "Step",
    "build_scenario",
    "format_schedule",
    "load_scenario",
    "parse_duration",
    "parse_scenario",
]
