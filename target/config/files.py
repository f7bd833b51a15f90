"""Configuration files: the native TOML format and nvmetcli's JSON (``/etc/nvmet/config.json``).

:func:`load_config` picks the format by extension (``.toml`` native, ``.json`` nvmetcli; other
names: a document starting with ``{`` is JSON, anything else TOML), builds a
:class:`~target.config.TargetConfig` and runs :func:`validate`. Every problem, including a
syntax error, is one :class:`~target.config.ConfigError` line naming the file and the field,
e.g. ``config.toml: subsystem[0].namepsace: unknown key`` (reading: the file's own key names)
or ``config.toml: subsystems[0].namespaces[1].block_size: must be 512 or 4096, got 1000``
(:func:`validate`: the dataclass field names).

Native TOML (complete example: ``deploy/target.example.toml``)::

    hosts = ["nqn.2014-08.org.nvmexpress:uuid:..."]   # optional; before the first [[...]]

    [[host]]                  # or hosts as tables (not both), with DH-HMAC-CHAP settings
    nqn = "nqn.2014-08.org.nvmexpress:uuid:..."
    dhchap_key = "DHHC-1:00:...:"        # the host's secret: it must authenticate
    dhchap_ctrl_key = "DHHC-1:00:...:"   # optional: the controller proves itself too
    dhchap_hash = "hmac(sha256)"         # hmac(sha256|sha384|sha512)
    dhchap_dhgroup = "null"              # null | ffdhe2048 | 3072 | 4096 | 6144 | 8192
    tls_key = "NVMeTLSkey-1:01:...:"     # its TLS PSK (nvme gen-tls-key), for tls ports
    tls_psk_derivation = "compat"        # compat (nvme-cli 2.13) | rfc8446 (later libnvme)

    [[subsystem]]
    nqn = "nqn.2026-11.io.nvmeof-emu:demo"   # required
    serial = "..."            # optional (default: derived from the NQN)
    model = "nvmeof-emu"
    allow_any_host = true
    allowed_hosts = []        # host NQNs, used when allow_any_host = false
    max_io_queues = 128       # 1..128 (nvmet: attr_qid_max)
    queue_size = 1024         # 2..1024 (nvmet: MQES 1023)

      [[subsystem.namespace]]
      nsid = 1                # required
      size = "256MiB"         # bytes, or a string with K/M/G/T[/P/E] and optional B/iB (x1024)
      block_size = 512        # 512 | 4096
      backend = "ram"         # ram | file | null
      path = "/var/lib/nvmeof/ns1.img"   # file backend only (required there)
      sync = "flush"          # file backend: flush (Flush and FUA writes fdatasync) | always
                              # (every write) | none (never: unsafe); docs/DURABILITY.md
      uuid = "..."            # optional: UUID string; nguid = 32 and eui64 = 16 hex digits
                              # ("-", ":" tolerated); omitted ids are derived from NQN + NSID
      ana_group = 1           # 1..128
      enabled = true
      reservations = true     # Reservation Register/Acquire/Release/Report (nvmet: resv_enable);
                              # a file namespace keeps them through restarts when PTPL is set

    [[port]]
    id = 1                    # required: PORTID
    addr = "127.0.0.1"
    port = 4420               # 0 = any free port (tests)
    advertise = "10.0.2.2"    # optional address for discovery log entries
    subsystems = ["nqn.2026-11.io.nvmeof-emu:demo"]
    inline_data_size = 8192   # multiple of 16, at most 1 MiB
    strict = false            # true: refuse what the spec forbids even where nvmet accepts it
    tls = "required"          # optional: required | allowed (TLS 1.3 PSK, TP 8011)
    ana = { 1 = "optimized", 2 = "inaccessible" }   # group -> state; unlisted: optimized

      [[port.referral]]
      name = "r1"             # required
      addr = "192.0.2.7"      # required
      port = 8009
      portid = 0

    [[fault]]                 # fault rules active from the start (control.faults.FaultRule)
    action = "status"         # delay|status|drop|corrupt-hdgst|corrupt-ddgst|close|stall|ghost-write
    port = 1                  # matchers, all optional: port, subsystem, nsid, opcode, host, queue
    opcode = "0x02"           # an integer, or a string "0x.." (also for status)
    queue = "io"              # io | admin | any
    probability = 0.5         # firing: probability, every (Nth match), count (at most)
    status = "0x370"          # and per action: delay_ms, status, dnr, after, direction,
    dnr = false               # duration_ms

Omitted keys take the dataclass defaults; unknown keys are errors.

nvmetcli's JSON is read by :mod:`target.config.nvmetcli`, which documents the mapping.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from target.config.keynames import file_path
from target.config.model import (
    ConfigError,
    HostConfig,
    NamespaceConfig,
    PortConfig,
    ReferralConfig,
    SubsystemConfig,
    TargetConfig,
)
from target.config.nvmetcli import address_family, ana_state, load_nvmetcli, put_if_set
from target.config.validate import (
    FAULT_KEYS,
    ID_LENGTHS,
    Table,
    config_error,
    fault_rule_kwargs,
    parse_size,
    validate,
)

__all__ = [
    "NAMESPACE_KEYS",
    "PORT_KEYS",
    "REFERRAL_KEYS",
    "SUBSYSTEM_KEYS",
    "address_family",
    "load_config",
    "load_native",
    "load_nvmetcli",
    "native_namespace",
    "native_port",
    "native_referral",
    "native_subsystem",
    "parse_size",
    "validate",
]

SUBSYSTEM_KEYS = {"nqn", "serial", "model", "allow_any_host", "allowed_hosts",
                   "max_io_queues", "queue_size", "cntlid_min", "cntlid_max", "max_namespaces",
                   "cqt_ms", "namespace"}  # fmt: skip
NAMESPACE_KEYS = {"nsid", "size", "block_size", "backend", "path", "uuid", "nguid", "eui64",
                   "ana_group", "enabled", "reservations", "sync"}  # fmt: skip
PORT_KEYS = {"id", "addr", "port", "advertise", "subsystems", "inline_data_size", "ana",
              "referral", "strict", "tls"}  # fmt: skip
REFERRAL_KEYS = {"name", "addr", "port", "portid"}
HOST_KEYS = {"nqn", "dhchap_key", "dhchap_ctrl_key", "dhchap_hash", "dhchap_dhgroup",
             "tls_key", "tls_psk_derivation"}  # fmt: skip


def load_config(path: str | os.PathLike[str], warnings: list[str] | None = None) -> TargetConfig:
    """Read, parse and validate a configuration file (native TOML or nvmetcli JSON); what is
    accepted but not acted on is appended to ``warnings``, one line each (see
    :func:`config_warnings`)."""
    source = os.fspath(path)
    try:
        raw = Path(source).read_bytes()
    except OSError as exc:
        raise config_error(source, "", f"cannot read: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise config_error(source, "", f"not UTF-8 text (byte {exc.start})") from None
    suffix = Path(source).suffix.lower()
    is_json = suffix == ".json" or (suffix != ".toml" and text.lstrip().startswith("{"))
    if is_json:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            where = f"(at line {exc.lineno}, column {exc.colno})"
            raise config_error(source, "", f"invalid JSON: {exc.msg} {where}") from None
        except RecursionError:
            raise config_error(source, "", "invalid JSON: nested too deeply") from None
        config = load_nvmetcli(data, source)
        if warnings is not None:
            warnings += config_warnings(config, source, "nvmetcli", data)
        return config
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise config_error(source, "", f"invalid TOML: {exc}") from None
    config = load_native(document, source)
    if warnings is not None:
        warnings += config_warnings(config, source, "native", document)
    return config


def config_warnings(config: TargetConfig, source: str, fmt: str,
                    document: Mapping[str, Any]) -> list[str]:  # fmt: skip
    """What a valid configuration says that the target will not do, one line each: DH-HMAC-CHAP
    keys of a host no subsystem will ask for them (nvmet_setup_auth: only subsystems that do not
    allow any host and list it), TLS ports no host has a key for and TLS keys no port uses,
    and allowed hosts missing from the host list (nvmetcli links
    them under ``hosts``, so nvmet refuses them; the native format needs a list only if it
    gives one)."""
    out = []
    for h_index, host in enumerate(config.hosts):
        if host.dhchap_key is None:
            continue
        guarded = [s.nqn for s in config.subsystems
                   if not s.allow_any_host and host.nqn in s.allowed_hosts]  # fmt: skip
        if not guarded:
            where = file_path(f"hosts[{h_index}].dhchap_key", fmt)
            out.append(f"{source}: {where}: not used: a host authenticates only to subsystems "
                       "that list it in allowed_hosts and do not allow any host (as nvmet)")  # fmt: skip
    tls_ports = [p for p in config.ports if p.tls is not None]
    keyed = [h for h in config.hosts if h.tls_key is not None]
    for p_index, port in enumerate(config.ports):
        if port.tls is not None and not keyed:
            where = file_path(f"ports[{p_index}].tls", fmt)
            out.append(f"{source}: {where}: no host has a tls_key: no TLS connection can "
                       "succeed until one is set (ctl host set-key --tls-key)")  # fmt: skip
    for h_index, host in enumerate(config.hosts):
        if host.tls_key is not None and not tls_ports:
            where = file_path(f"hosts[{h_index}].tls_key", fmt)
            out.append(f"{source}: {where}: not used: no port has tls set")
    if fmt == "nvmetcli" or config.hosts:
        known = set(config.host_nqns)
        for s_index, sub in enumerate(config.subsystems):
            for h_index, allowed in enumerate(sub.allowed_hosts):
                if allowed not in known:
                    where = file_path(f"subsystems[{s_index}].allowed_hosts[{h_index}]", fmt)
                    out.append(f"{source}: {where}: {allowed!r} is not in hosts")
    return out


# -- native TOML ----------------------------------------------------------------------------


def load_native(data: Mapping[str, Any], source: str, *,
                hidden_secrets: bool = False) -> TargetConfig:  # fmt: skip
    """Build and validate a TargetConfig from a parsed native TOML document."""
    top = Table(data, source, "",
                {"subsystem", "port", "hosts", "host", "fault", "discovery_nqn"})  # fmt: skip
    names = top.texts("hosts") or ()
    tables = tuple(native_host(t) for t in top.tables("host", HOST_KEYS))
    if names and tables:
        raise top.error("hosts", "give hosts either as a list of NQNs or as [[host]] tables")
    config = TargetConfig(
        subsystems=tuple(native_subsystem(t) for t in top.tables("subsystem", SUBSYSTEM_KEYS)),
        ports=tuple(native_port(t) for t in top.tables("port", PORT_KEYS)),
        hosts=tables or tuple(HostConfig(nqn=n) for n in names),
        faults=tuple(fault_rule_kwargs(t) for t in top.tables("fault", FAULT_KEYS)),
        discovery_nqn=top.text("discovery_nqn"),
    )
    try:
        validate(config, source, "native", hidden_secrets=hidden_secrets)
    except ConfigError as err:
        if names:  # the list form: name the key as written (hosts[0], not host[0].nqn)
            raise ConfigError(re.sub(r"\bhost\[(\d+)\]\.nqn\b", r"hosts[\1]", str(err))) from None
        raise
    return config


def native_host(t: Table) -> HostConfig:
    kwargs: dict[str, Any] = {"nqn": t.require_text("nqn")}
    for name in ("dhchap_key", "dhchap_ctrl_key", "dhchap_hash", "dhchap_dhgroup", "tls_key",
                 "tls_psk_derivation"):  # fmt: skip
        put_if_set(kwargs, name, t.text(name))
    return HostConfig(**kwargs)


def native_subsystem(t: Table) -> SubsystemConfig:
    kwargs: dict[str, Any] = {"nqn": t.require_text("nqn")}
    for name in ("serial", "model"):
        put_if_set(kwargs, name, t.text(name))
    put_if_set(kwargs, "allow_any_host", t.boolean("allow_any_host"))
    put_if_set(kwargs, "allowed_hosts", t.texts("allowed_hosts"))
    for name in ("max_io_queues", "queue_size", "cntlid_min", "cntlid_max", "max_namespaces",
                 "cqt_ms"):  # fmt: skip
        put_if_set(kwargs, name, t.integer(name))
    namespaces = t.tables("namespace", NAMESPACE_KEYS)
    kwargs["namespaces"] = tuple(native_namespace(n) for n in namespaces)
    return SubsystemConfig(**kwargs)


def native_namespace(t: Table) -> NamespaceConfig:
    kwargs: dict[str, Any] = {"nsid": t.require_integer("nsid")}
    put_if_set(kwargs, "size", t.size("size"))
    for name in ("block_size", "ana_group"):
        put_if_set(kwargs, name, t.integer(name))
    for name in ("backend", "path", "sync"):
        put_if_set(kwargs, name, t.text(name))
    for name, length in ID_LENGTHS.items():
        put_if_set(kwargs, name, _uuid(t, name) if name == "uuid" else t.hex_id(name, length))
    put_if_set(kwargs, "enabled", t.boolean("enabled"))
    put_if_set(kwargs, "reservations", t.boolean("reservations"))
    return NamespaceConfig(**kwargs)


def _uuid(t: Table, key: str) -> bytes | None:
    text = t.text(key)
    if text is None:
        return None
    try:
        return uuid.UUID(text.strip()).bytes
    except ValueError:
        raise t.error(key, f"not a UUID: {text!r}") from None


def native_port(t: Table) -> PortConfig:
    kwargs: dict[str, Any] = {"id": t.require_integer("id")}
    for name in ("addr", "advertise", "tls"):
        put_if_set(kwargs, name, t.text(name))
    for name in ("port", "inline_data_size"):
        put_if_set(kwargs, name, t.integer(name))
    put_if_set(kwargs, "strict", t.boolean("strict"))
    put_if_set(kwargs, "subsystems", t.texts("subsystems"))
    ana = t.table("ana")
    if ana is not None:
        states = []
        for key in ana.data:
            if not key.isascii() or not key.isdigit():
                raise ana.error(key, "ANA group must be a number")
            states.append((int(key), ana_state(ana, key)))
        kwargs["ana_states"] = tuple(states)
    referrals = [native_referral(r) for r in t.tables("referral", REFERRAL_KEYS)]
    kwargs["referrals"] = tuple(referrals)
    return PortConfig(**kwargs)


def native_referral(t: Table) -> ReferralConfig:
    ref: dict[str, Any] = {"name": t.require_text("name"), "addr": t.require_text("addr")}
    for name in ("port", "portid"):
        put_if_set(ref, name, t.integer(name))
    return ReferralConfig(**ref)
