"""Checks for target configuration data, each problem reported as one ConfigError line.

Two layers, both producing messages of the form ``<source>: <field path>: <problem>``:

* :class:`Table` reads a parsed TOML or JSON mapping with type checks while tracking the field
  path in the file's own key names (``subsystem[0].namespace[1].size``); the loaders in
  :mod:`target.config.files` are built on it, together with :func:`parse_size` and
  :func:`parse_hex_id`.
* :func:`validate` cross-checks a built :class:`~target.config.TargetConfig` (ranges, syntax,
  uniqueness, references); its paths use the dataclass field names
  (``subsystems[0].namespaces[1].block_size``).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Collection, Mapping
from fractions import Fraction
from typing import Any

from nvmeof.constants import CNTLID_MAX, DISCOVERY_NQN, NQN_MAX_LEN
from target.config.keynames import file_path
from target.config.model import (
    BACKENDS,
    BLOCK_SIZES,
    DHCHAP_DHGROUPS,
    DHCHAP_HASHES,
    SECRET_HIDDEN,
    SYNC_MODES,
    TLS_MODES,
    TLS_PSK_DERIVATIONS,
    ConfigError,
    NamespaceConfig,
    TargetConfig,
)
from target.config.secrets import dhchap_secret_problem, tls_key_problem
from target.control.faults import ACTIONS, QUEUE_KINDS

MAX_NSID = 0xFFFFFFFE
MAX_ANA_GROUP = 128
MAX_IO_QUEUES = 128
MIN_QUEUE_SIZE, MAX_QUEUE_SIZE = 2, 1024
MAX_INLINE_DATA_SIZE = 1 << 20
MAX_PORT_ID = 0xFFFF
SERIAL_MAX_LEN, MODEL_MAX_LEN = 20, 40
ID_LENGTHS = {"uuid": 16, "nguid": 16, "eui64": 8}
#: The keys of a fault rule (``[[fault]]`` in TOML, the body of ``POST /faults``).
FAULT_KEYS = ("action", "port", "subsystem", "nsid", "opcode", "fctype", "host", "queue",
              "probability",
              "every", "count", "delay_ms", "status", "dnr", "after", "direction",
              "duration_ms")  # fmt: skip

_SIZE_RE = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([kmgtpe]?)(i?b)?\s*", re.IGNORECASE)
_INT_RE = re.compile(r"\s*(?:0x[0-9a-f]+|[0-9]+)\s*", re.IGNORECASE)


def config_error(source: str, path: str, message: str) -> ConfigError:
    """A ConfigError ``source: path: message``, with line breaks and controls escaped."""
    text = f"{source}: {path}: {message}" if path else f"{source}: {message}"
    return ConfigError("".join(c if c.isprintable() else ascii(c)[1:-1] for c in text))


def describe(value: object) -> str:
    """A short description of a parsed value for 'got ...' in messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | str):
        text = repr(value)
        return text if len(text) <= 60 else text[:57] + "..."
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, list | tuple):
        return "an array"
    return type(value).__name__


def parse_size(value: object) -> int:
    """Bytes from an int or a string such as ``"256MiB"``, ``"1G"``, ``"4 KiB"``, ``"512B"``.

    Units K, M, G, T, P, E are binary (powers of 1024) with an optional ``B`` or ``iB``
    suffix; a fractional number is allowed when the result is a whole number of bytes.
    Raises ValueError for anything else.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if not isinstance(value, str):
        raise ValueError(
            f"must be a size (bytes, or a string like '256MiB'), got {describe(value)}"
        )
    match = _SIZE_RE.fullmatch(value)
    if match is None or (match[3] and match[3].lower() == "ib" and not match[2]):
        raise ValueError(
            f"not a size: {value!r} (use bytes or a number with K/M/G/T, e.g. '256MiB')"
        )
    number = Fraction(match[1]) * 1024 ** " KMGTPE".index(match[2].upper() or " ")
    if number.denominator != 1:
        raise ValueError(f"not a whole number of bytes: {value!r}")
    return int(number)


def parse_hex_id(text: str, length: int) -> bytes:
    """``length`` bytes from hex digits; ``-``, ``:`` and spaces between digits are ignored."""
    digits = re.sub(r"[-:\s]", "", text)
    if not re.fullmatch(r"[0-9a-fA-F]*", digits):
        raise ValueError(f"not hexadecimal: {text!r}")
    if len(digits) != 2 * length:
        raise ValueError(f"must be {2 * length} hex digits ({length} bytes), got {len(digits)}")
    return bytes.fromhex(digits)


class Table:
    """A mapping from a parsed document, read key by key with type checks.

    ``known`` lists the keys allowed (others are an error); None allows any key. The getters
    return None for an absent key and raise ConfigError naming ``path.key`` for a wrong type.
    """

    def __init__(
        self, data: object, source: str, path: str, known: Collection[str] | None = None
    ) -> None:
        self.source = source
        self.path = path
        if not isinstance(data, Mapping):
            raise config_error(source, path, f"must be a table, got {describe(data)}")
        for key in data:
            if not isinstance(key, str):
                raise config_error(source, path, f"keys must be strings, got {describe(key)}")
            if known is not None and key not in known:
                raise self.error(key, "unknown key")
        self.data: Mapping[str, object] = data

    def sub(self, key: str) -> str:
        """The path of ``key`` in this table."""
        return f"{self.path}.{key}" if self.path else key

    def error(self, key: str | None, message: str) -> ConfigError:
        """A ConfigError about ``key`` (or the table itself when None)."""
        return config_error(self.source, self.sub(key) if key else self.path, message)

    def raw(self, key: str) -> object:
        """The value of ``key`` unchecked (None if absent)."""
        return self.data.get(key)

    def text(self, key: str) -> str | None:
        value = self.data.get(key)
        if value is None and key not in self.data:
            return None
        if not isinstance(value, str):
            raise self.error(key, f"must be a string, got {describe(value)}")
        return value

    def require_text(self, key: str) -> str:
        value = self.text(key)
        if value is None:
            raise self.error(key, "missing")
        return value

    def integer(self, key: str, *, strings: bool = False) -> int | None:
        """An int; with ``strings`` also a decimal or ``0x`` string (nvmetcli attributes)."""
        if key not in self.data:
            return None
        value = self.data[key]
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if strings and isinstance(value, str) and _INT_RE.fullmatch(value):
            return int(value.strip(), 0 if value.strip().lower().startswith("0x") else 10)
        raise self.error(key, f"must be an integer, got {describe(value)}")

    def require_integer(self, key: str, *, strings: bool = False) -> int:
        value = self.integer(key, strings=strings)
        if value is None:
            raise self.error(key, "missing")
        return value

    def boolean(self, key: str, *, loose: bool = False) -> bool | None:
        """A bool; with ``loose`` also 0/1 and the strings the kernel's kstrtobool accepts."""
        if key not in self.data:
            return None
        value = self.data[key]
        if isinstance(value, bool):
            return value
        if loose and isinstance(value, int | str):
            word = str(value).strip().lower()
            if word in ("1", "y", "yes", "on", "true"):
                return True
            if word in ("0", "n", "no", "off", "false"):
                return False
        raise self.error(key, f"must be a boolean, got {describe(value)}")

    def number(self, key: str) -> float | None:
        """An int or a float (as a float)."""
        if key not in self.data:
            return None
        value = self.data[key]
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise self.error(key, f"must be a number, got {describe(value)}")

    def size(self, key: str) -> int | None:
        if key not in self.data:
            return None
        try:
            return parse_size(self.data[key])
        except ValueError as exc:
            raise self.error(key, str(exc)) from None

    def hex_id(self, key: str, length: int) -> bytes | None:
        text = self.text(key)
        if text is None:
            return None
        try:
            return parse_hex_id(text, length)
        except ValueError as exc:
            raise self.error(key, str(exc)) from None

    def texts(self, key: str) -> tuple[str, ...] | None:
        """An array of strings."""
        if key not in self.data:
            return None
        value = self.data[key]
        if not isinstance(value, list | tuple):
            raise self.error(key, f"must be an array of strings, got {describe(value)}")
        for index, item in enumerate(value):
            if not isinstance(item, str):
                raise self.error(f"{key}[{index}]", f"must be a string, got {describe(item)}")
        return tuple(value)

    def table(self, key: str, known: Collection[str] | None = None) -> Table | None:
        if key not in self.data:
            return None
        return Table(self.data[key], self.source, self.sub(key), known)

    def tables(self, key: str, known: Collection[str] | None = None) -> list[Table]:
        """An array of tables (``[[key]]`` in TOML); absent is empty."""
        if key not in self.data:
            return []
        value = self.data[key]
        if not isinstance(value, list | tuple):
            raise self.error(key, f"must be an array of tables, got {describe(value)}")
        return [
            Table(item, self.source, f"{self.sub(key)}[{index}]", known)
            for index, item in enumerate(value)
        ]


def nqn_problem(nqn: str) -> str | None:
    """Why ``nqn`` cannot name a subsystem or host, or None.

    The ``nqn.`` prefix is not required: nvmet takes any configfs name as a subsystem NQN
    (nvmet_subsys_make refuses only the discovery NQN) and nvmetcli's own examples use
    ``testnqn``; what reaches the wire must be printable ASCII within NVMF_NQN_SIZE.
    """
    if not nqn.isascii() or not nqn.isprintable() or " " in nqn:
        return f"NQN must be printable ASCII without spaces: {nqn!r}"
    if len(nqn) > NQN_MAX_LEN:
        return f"NQN is {len(nqn)} bytes, longer than {NQN_MAX_LEN}"
    return None


def ip_problem(addr: str) -> str | None:
    """Why ``addr`` is not an IPv4/IPv6 address literal, or None."""
    try:
        ipaddress.ip_address(addr)
    except ValueError:
        return f"not an IP address: {addr!r}"
    return None


class _Checker:
    def __init__(self, source: str, fmt: str = "fields", *, hidden_secrets: bool = False) -> None:
        self.source = source
        self.fmt = fmt
        self.hidden_secrets = hidden_secrets

    def name(self, path: str) -> str:
        """``path`` as the file names it."""
        return file_path(path, self.fmt)

    def fail(self, path: str, message: str) -> ConfigError:
        return config_error(self.source, self.name(path), message)

    def int_in(self, path: str, value: object, low: int, high: int, why: str = "") -> None:
        if not isinstance(value, int) or isinstance(value, bool):
            raise self.fail(path, f"must be an integer, got {describe(value)}")
        if not low <= value <= high:
            raise self.fail(path, f"must be {low}..{high}{why}, got {value}")

    def text(self, path: str, value: object, *, nqn: bool = False, ip: bool = False) -> str:
        if not isinstance(value, str):
            raise self.fail(path, f"must be a string, got {describe(value)}")
        problem = (nqn_problem(value) if nqn else None) or (ip_problem(value) if ip else None)
        if problem:
            raise self.fail(path, problem)
        if not value:
            raise self.fail(path, "must not be empty")
        return value

    def ascii_field(self, path: str, value: str, limit: int) -> None:
        if not value or not value.isascii() or not value.isprintable() or len(value) > limit:
            raise self.fail(path, f"must be 1..{limit} printable ASCII characters, got {value!r}")

    def run(self, config: TargetConfig) -> None:
        seen_nqns: dict[str, str] = {}
        for s_index, sub in enumerate(config.subsystems):
            path = f"subsystems[{s_index}]"
            nqn = self.text(f"{path}.nqn", sub.nqn, nqn=True)
            if nqn == DISCOVERY_NQN:
                raise self.fail(f"{path}.nqn", "the discovery NQN cannot be a subsystem")
            if nqn in seen_nqns:
                raise self.fail(
                    f"{path}.nqn", f"duplicate NQN {nqn!r} (also {self.name(seen_nqns[nqn])})"
                )
            seen_nqns[nqn] = path
            if sub.serial is not None:
                self.ascii_field(f"{path}.serial", sub.serial, SERIAL_MAX_LEN)
            self.ascii_field(f"{path}.model", sub.model, MODEL_MAX_LEN)
            for h_index, host in enumerate(sub.allowed_hosts):
                self.text(f"{path}.allowed_hosts[{h_index}]", host, nqn=True)
            self.int_in(f"{path}.max_io_queues", sub.max_io_queues, 1, MAX_IO_QUEUES)
            self.int_in(f"{path}.queue_size", sub.queue_size, MIN_QUEUE_SIZE, MAX_QUEUE_SIZE)
            self.int_in(f"{path}.cntlid_min", sub.cntlid_min, 1, CNTLID_MAX)
            self.int_in(f"{path}.cntlid_max", sub.cntlid_max, sub.cntlid_min, CNTLID_MAX)
            self.int_in(f"{path}.max_namespaces", sub.max_namespaces, 1, MAX_NSID)
            self.int_in(f"{path}.cqt_ms", sub.cqt_ms, 0, 0xFFFF)
            self.namespaces(sub.namespaces, path, sub.max_namespaces)
        self.hosts(config)
        self.ports(config, set(seen_nqns))
        port_ids = {port.id for port in config.ports}
        for index, fault in enumerate(config.faults):
            table = Table(fault, self.source, file_path(f"faults[{index}]", self.fmt), FAULT_KEYS)
            fault_rule_kwargs(table, ports=port_ids, nqns=set(seen_nqns))

    def hosts(self, config: TargetConfig) -> None:
        seen: set[str] = set()
        for index, host in enumerate(config.hosts):
            path = f"hosts[{index}]"
            nqn = self.text(f"{path}.nqn", host.nqn, nqn=True)
            if nqn in seen:
                raise self.fail(f"{path}.nqn", f"duplicate host {nqn!r}")
            seen.add(nqn)
            for name in ("dhchap_key", "dhchap_ctrl_key"):
                secret = getattr(host, name)
                if secret is not None:
                    self.secret(f"{path}.{name}", secret)
            if host.dhchap_ctrl_key is not None and host.dhchap_key is None:
                raise self.fail(f"{path}.dhchap_ctrl_key",
                                "a controller key needs the host's key (dhchap_key)")  # fmt: skip
            self.one_of(f"{path}.dhchap_hash", host.dhchap_hash, DHCHAP_HASHES)
            self.one_of(f"{path}.dhchap_dhgroup", host.dhchap_dhgroup, DHCHAP_DHGROUPS)
            if host.tls_key is not None:
                self.secret(f"{path}.tls_key", host.tls_key, tls_key_problem)
            self.one_of(f"{path}.tls_psk_derivation", host.tls_psk_derivation,
                        TLS_PSK_DERIVATIONS)  # fmt: skip

    def secret(self, path: str, value: object,
               problem_of: Callable[[object], str | None] | None = None) -> None:  # fmt: skip
        """A secret as nvme-cli writes it, never echoed back: DH-HMAC-CHAP (gen-dhchap-key) by
        default, else what ``problem_of`` checks (a TLS PSK: gen-tls-key)."""
        if value == SECRET_HIDDEN:
            if self.hidden_secrets:
                return
            raise self.fail(path, "the secret was hidden by an export; export with "
                            "--show-secrets to keep it, or give the key")  # fmt: skip
        problem = (problem_of or dhchap_secret_problem)(value)
        if problem:
            raise self.fail(path, problem)

    def one_of(self, path: str, value: object, choices: tuple[str, ...]) -> None:
        if value not in choices:
            raise self.fail(path, f"must be one of {', '.join(choices)}, got {describe(value)}")

    def namespaces(self, namespaces: tuple[NamespaceConfig, ...], parent: str,
                   max_nsid: int) -> None:  # fmt: skip
        seen: dict[int, str] = {}
        for index, ns in enumerate(namespaces):
            path = f"{parent}.namespaces[{index}]"
            self.namespace(ns, f"{path}.", max_nsid)
            if ns.nsid in seen:
                raise self.fail(
                    f"{path}.nsid", f"duplicate NSID {ns.nsid} (also {self.name(seen[ns.nsid])})"
                )
            seen[ns.nsid] = path

    def namespace(self, ns: NamespaceConfig, path: str, max_nsid: int = MAX_NSID) -> None:
        """Check one namespace; ``path`` prefixes the field names (``"...namespaces[0]."``)."""
        why = " (max_namespaces)" if max_nsid != MAX_NSID else ""
        self.int_in(f"{path}nsid", ns.nsid, 1, max_nsid, why)
        if ns.block_size not in BLOCK_SIZES:
            allowed = " or ".join(map(str, BLOCK_SIZES))
            raise self.fail(f"{path}block_size", f"must be {allowed}, got {ns.block_size!r}")
        self.int_in(f"{path}size", ns.size, 1, 1 << 64)
        if ns.size % ns.block_size:
            raise self.fail(
                f"{path}size", f"{ns.size} is not a multiple of block_size {ns.block_size}"
            )
        if ns.backend not in BACKENDS:
            raise self.fail(
                f"{path}backend", f"must be one of {', '.join(BACKENDS)}, got {ns.backend!r}"
            )
        if ns.backend == "file":
            self.text(f"{path}path", ns.path)
        elif ns.path is not None:
            raise self.fail(
                f"{path}path", f"only used by the file backend (backend is {ns.backend!r})"
            )
        for name, length in ID_LENGTHS.items():
            value = getattr(ns, name)
            if value is None:
                continue
            if not isinstance(value, bytes) or len(value) != length:
                got = f"{len(value)} bytes" if isinstance(value, bytes) else describe(value)
                raise self.fail(f"{path}{name}", f"must be {length} bytes, got {got}")
            if not any(value):
                raise self.fail(f"{path}{name}", "all zeros means 'not set'; omit it")
        self.int_in(f"{path}ana_group", ns.ana_group, 1, MAX_ANA_GROUP)
        for flag in ("enabled", "reservations"):
            value = getattr(ns, flag)
            if not isinstance(value, bool):
                raise self.fail(f"{path}{flag}", f"must be a boolean, got {describe(value)}")
        self.one_of(f"{path}sync", ns.sync, SYNC_MODES)
        if ns.backend != "file" and ns.sync != NamespaceConfig.sync:
            # RAM is lost when the target stops and null keeps nothing: no mode makes them
            # durable, so a setting that says otherwise is refused rather than ignored.
            raise self.fail(f"{path}sync", f"only used by the file backend (backend is "
                            f"{ns.backend!r}, which is never durable)")  # fmt: skip

    def ports(self, config: TargetConfig, nqns: set[str]) -> None:
        ids: dict[int, str] = {}
        endpoints: dict[tuple[str, int], str] = {}
        for index, port in enumerate(config.ports):
            path = f"ports[{index}]"
            self.int_in(f"{path}.id", port.id, 0, MAX_PORT_ID)
            if port.id in ids:
                raise self.fail(
                    f"{path}.id", f"duplicate port id {port.id} (also {self.name(ids[port.id])})"
                )
            ids[port.id] = path
            addr = self.text(f"{path}.addr", port.addr, ip=True)
            self.int_in(f"{path}.port", port.port, 0, 65535)
            key = (str(ipaddress.ip_address(addr)), port.port)
            if port.port and key in endpoints:
                raise self.fail(
                    f"{path}.port",
                    f"{addr} port {port.port} already used by {self.name(endpoints[key])}",
                )
            endpoints[key] = path
            if port.advertise is not None:
                self.text(f"{path}.advertise", port.advertise, ip=True)
            for s_index, nqn in enumerate(port.subsystems):
                where = f"{path}.subsystems[{s_index}]"
                if nqn not in nqns:
                    raise self.fail(where, f"no subsystem with NQN {nqn!r}")
                if nqn in port.subsystems[:s_index]:
                    raise self.fail(where, f"{nqn!r} listed twice")
            groups: set[int] = set()
            for a_index, (group, _state) in enumerate(port.ana_states):
                self.int_in(f"{path}.ana_states[{a_index}]", group, 1, MAX_ANA_GROUP)
                if group in groups:
                    raise self.fail(f"{path}.ana_states[{a_index}]", f"ANA group {group} twice")
                groups.add(group)
            if port.tls is not None:
                self.one_of(f"{path}.tls", port.tls, TLS_MODES)
            size = port.inline_data_size
            self.int_in(f"{path}.inline_data_size", size, 0, MAX_INLINE_DATA_SIZE)
            if size % 16:
                raise self.fail(f"{path}.inline_data_size", f"must be a multiple of 16, got {size}")
            names: set[str] = set()
            for r_index, ref in enumerate(port.referrals):
                where = f"{path}.referrals[{r_index}]"
                name = self.text(f"{where}.name", ref.name)
                if name in names:
                    raise self.fail(f"{where}.name", f"duplicate referral name {name!r}")
                names.add(name)
                self.text(f"{where}.addr", ref.addr, ip=True)
                self.int_in(f"{where}.port", ref.port, 1, 65535)
                self.int_in(f"{where}.portid", ref.portid, 0, MAX_PORT_ID)


def validate_namespace(ns: NamespaceConfig, source: str) -> None:
    """Check one namespace as :func:`validate` does (ConfigError ``source: field: problem``)."""
    _Checker(source).namespace(ns, "")


_FAULT_INTEGERS = {"port": (0, MAX_PORT_ID), "nsid": (1, 0xFFFFFFFF), "opcode": (0, 0xFF),
                   "fctype": (0, 0xFF),
                   "every": (1, 1 << 32), "count": (0, 1 << 62), "delay_ms": (0, 1 << 32),
                   "status": (0, 0x7FF), "after": (1, 1 << 32), "duration_ms": (0, 1 << 32)}  # fmt: skip
_FAULT_CHOICES = {"action": ACTIONS, "queue": QUEUE_KINDS, "direction": ("rx", "tx")}


def fault_rule_kwargs(
    t: Table, *, ports: Collection[int] | None = None, nqns: Collection[str] | None = None
) -> dict[str, Any]:
    """Keyword arguments for :class:`~target.control.faults.FaultRule` from a table of
    :data:`FAULT_KEYS` (``[[fault]]`` in TOML, a JSON request), each field type- and
    range-checked: ConfigError naming the field. ``opcode`` and ``status`` may also be strings
    such as ``"0x370"``. With ``ports`` / ``nqns`` the rule must name one of them."""
    kwargs: dict[str, Any] = {"action": t.require_text("action")}
    for name in ("subsystem", "host", "queue", "direction"):
        _put(kwargs, name, t.text(name))
    for name, choices in _FAULT_CHOICES.items():
        if name in kwargs and kwargs[name] not in choices:
            raise t.error(name, f"must be one of {', '.join(choices)}, got {kwargs[name]!r}")
    for name, (low, high) in _FAULT_INTEGERS.items():
        value = t.integer(name, strings=name in ("opcode", "fctype", "status"))
        if value is not None and not low <= value <= high:
            fmt = "#x" if name in ("opcode", "fctype", "status") else "d"
            raise t.error(name, f"must be {low:{fmt}}..{high:{fmt}}, got {value:{fmt}}")
        _put(kwargs, name, value)
    probability = t.number("probability")
    if probability is not None and not 0.0 <= probability <= 1.0:
        raise t.error("probability", f"must be between 0 and 1, got {probability}")
    _put(kwargs, "probability", probability)
    _put(kwargs, "dnr", t.boolean("dnr"))
    if ports is not None and kwargs.get("port") not in (None, *ports):
        raise t.error("port", f"no port {kwargs['port']} (ports: {sorted(ports)})")
    if nqns is not None and kwargs.get("subsystem") not in (None, *nqns):
        raise t.error("subsystem", f"no subsystem with NQN {kwargs['subsystem']!r}")
    return kwargs


def _put(kwargs: dict[str, Any], name: str, value: object) -> None:
    if value is not None:
        kwargs[name] = value


def validate(config: TargetConfig, source: str, fmt: str = "fields", *,
             hidden_secrets: bool = False) -> None:  # fmt: skip
    """Cross-check a whole configuration; raise ConfigError (one line) at the first problem.

    Checks: subsystem NQNs unique and syntactically valid (``nqn.`` prefix, printable ASCII,
    at most 223 bytes, not the discovery NQN); serial 1..20 and model 1..40 printable ASCII;
    allowed_hosts and hosts are NQNs; max_io_queues 1..128; queue_size 2..1024; cntlid_min
    1..0xFFEF and cntlid_max cntlid_min..0xFFEF; max_namespaces 1..0xFFFFFFFE; per namespace:
    NSID 1..max_namespaces and unique in its subsystem, block_size in BLOCK_SIZES, size > 0 and a
    multiple of block_size, backend in BACKENDS, ``path`` set for (and only for) ``file``,
    uuid/nguid 16 and eui64 8 bytes (not all zeros), ana_group 1..128; per port: id 0..65535
    and unique, addr/advertise IP literals, port 0..65535 (0 = any) with (addr, port) unique,
    subsystems exist (once each), ANA groups 1..128 once each, inline_data_size a multiple of
    16 in 0..1 MiB, referrals with unique names, IP addresses, port 1..65535, portid 0..65535;
    fault rules as :func:`fault_rule_kwargs` checks them, naming existing ports and subsystems.

    ``fmt`` names the fields in errors as the file did (:mod:`target.config.keynames`:
    ``native`` TOML, ``nvmetcli`` JSON) or as the dataclasses do (``fields``).
    ``hidden_secrets``: accept SECRET_HIDDEN for a secret (a live apply keeps the target's).
    """
    _Checker(source, fmt, hidden_secrets=hidden_secrets).run(config)
