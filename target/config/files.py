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

nvmetcli JSON (what ``nvmetcli save`` writes) maps as follows:

* ``hosts[].nqn`` -> ``hosts``, with ``hosts[].dhchap.{key,ctrl_key,hash,dhgroup}`` (configfs
  ``dhchap_*``; an empty string is unset); ``subsystems[].attr``: ``allow_any_host``, ``serial``, ``model``,
  ``qid_max`` (-> ``max_io_queues``); ``allowed_hosts``; other attributes are ignored.
* ``namespaces[]``: ``nsid``, ``enable`` (absent: disabled, as nvmetcli leaves it),
  ``resv.enable`` (configfs ``resv_enable``, absent: reservations off, as in nvmet),
  ``ana_grpid`` (or ``ana.grpid``; default 1), ``device.uuid`` / ``device.nguid`` (all zeros
  means unset). ``device.path`` selects the backend: ``""`` or ``/dev/nullb*`` -> ``null``
  (size ``device.size``, default 1 GiB), anything else -> ``file`` with that path, its size
  taken from the file (rounded down to the block size) unless ``device.size`` is given.
* ``ports[]``: ``portid``, ``addr`` (``trtype`` must be ``tcp``; ``adrfam`` ipv4/ipv6 matching
  ``traddr``; ``trsvcid`` -> port; ``tsas`` other than none is refused), ``param.inline_data_size``,
  ``subsystems``, ``ana_groups[]`` (``grpid``, ``ana.state``; a missing state is optimized,
  unlisted groups are optimized), ``referrals[]`` (``name``, ``addr`` with ``portid``; a
  referral with ``enable`` 0 is dropped).
* Unknown keys inside attribute groups (``attr``, ``addr``, ``param``, ``device``, ``ana``,
  ``resv``, ``dhchap``, ``discovery``) are ignored, since they vary with the kernel; an unknown
  key elsewhere is an error, and so is a value of the wrong type. Enabled ``passthru`` is refused.
* Extension keys (written by :func:`export_nvmetcli`, so that every representable config round
  trips): ``device.nvmeof_emu_backend`` (ram/file/null), ``device.size``, ``device.block_size``
  (default 512), ``device.eui64``; on ports ``nvmeof_emu_advertise`` and ``nvmeof_emu_strict``; on subsystems
  ``nvmeof_emu_queue_size`` (written only when not the default 128). A RAM namespace is
  written with ``"path": ""``. nvmetcli itself ignores the port and subsystem extension keys and
  reports the ``device`` ones as unknown attributes, skipped.
* Fault rules have no nvmetcli equivalent: a JSON configuration has none, and the export
  leaves the ``faults`` of a configuration out.
"""

from __future__ import annotations

import json
import os
import re
import stat
import tomllib
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from nvmeof.constants import AnaState
from target.config.keynames import file_path
from target.config.model import (
    BLOCK_SIZES,
    ConfigError,
    HostConfig,
    NamespaceConfig,
    PortConfig,
    ReferralConfig,
    SubsystemConfig,
    TargetConfig,
)
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

NULL_DEFAULT_SIZE = 1 << 30

SUBSYSTEM_KEYS = {"nqn", "serial", "model", "allow_any_host", "allowed_hosts",
                   "max_io_queues", "queue_size", "cntlid_min", "cntlid_max", "max_namespaces",
                   "cqt_ms", "namespace"}  # fmt: skip
NAMESPACE_KEYS = {"nsid", "size", "block_size", "backend", "path", "uuid", "nguid", "eui64",
                   "ana_group", "enabled", "reservations"}  # fmt: skip
PORT_KEYS = {"id", "addr", "port", "advertise", "subsystems", "inline_data_size", "ana",
              "referral", "strict"}  # fmt: skip
REFERRAL_KEYS = {"name", "addr", "port", "portid"}
HOST_KEYS = {"nqn", "dhchap_key", "dhchap_ctrl_key", "dhchap_hash", "dhchap_dhgroup"}


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
    allow any host and list it), and allowed hosts missing from the host list (nvmetcli links
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
    if fmt == "nvmetcli" or config.hosts:
        known = set(config.host_nqns)
        for s_index, sub in enumerate(config.subsystems):
            for h_index, allowed in enumerate(sub.allowed_hosts):
                if allowed not in known:
                    where = file_path(f"subsystems[{s_index}].allowed_hosts[{h_index}]", fmt)
                    out.append(f"{source}: {where}: {allowed!r} is not in hosts")
    return out


def _put(kwargs: dict[str, Any], name: str, value: object) -> None:
    if value is not None:
        kwargs[name] = value


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
    for name in ("dhchap_key", "dhchap_ctrl_key", "dhchap_hash", "dhchap_dhgroup"):
        _put(kwargs, name, t.text(name))
    return HostConfig(**kwargs)


def native_subsystem(t: Table) -> SubsystemConfig:
    kwargs: dict[str, Any] = {"nqn": t.require_text("nqn")}
    for name in ("serial", "model"):
        _put(kwargs, name, t.text(name))
    _put(kwargs, "allow_any_host", t.boolean("allow_any_host"))
    _put(kwargs, "allowed_hosts", t.texts("allowed_hosts"))
    for name in ("max_io_queues", "queue_size", "cntlid_min", "cntlid_max", "max_namespaces",
                 "cqt_ms"):  # fmt: skip
        _put(kwargs, name, t.integer(name))
    namespaces = t.tables("namespace", NAMESPACE_KEYS)
    kwargs["namespaces"] = tuple(native_namespace(n) for n in namespaces)
    return SubsystemConfig(**kwargs)


def native_namespace(t: Table) -> NamespaceConfig:
    kwargs: dict[str, Any] = {"nsid": t.require_integer("nsid")}
    _put(kwargs, "size", t.size("size"))
    for name in ("block_size", "ana_group"):
        _put(kwargs, name, t.integer(name))
    for name in ("backend", "path"):
        _put(kwargs, name, t.text(name))
    for name, length in ID_LENGTHS.items():
        _put(kwargs, name, _uuid(t, name) if name == "uuid" else t.hex_id(name, length))
    _put(kwargs, "enabled", t.boolean("enabled"))
    _put(kwargs, "reservations", t.boolean("reservations"))
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
    for name in ("addr", "advertise"):
        _put(kwargs, name, t.text(name))
    for name in ("port", "inline_data_size"):
        _put(kwargs, name, t.integer(name))
    _put(kwargs, "strict", t.boolean("strict"))
    _put(kwargs, "subsystems", t.texts("subsystems"))
    ana = t.table("ana")
    if ana is not None:
        states = []
        for key in ana.data:
            if not key.isascii() or not key.isdigit():
                raise ana.error(key, "ANA group must be a number")
            states.append((int(key), _ana_state(ana, key)))
        kwargs["ana_states"] = tuple(states)
    referrals = [native_referral(r) for r in t.tables("referral", REFERRAL_KEYS)]
    kwargs["referrals"] = tuple(referrals)
    return PortConfig(**kwargs)


def native_referral(t: Table) -> ReferralConfig:
    ref: dict[str, Any] = {"name": t.require_text("name"), "addr": t.require_text("addr")}
    for name in ("port", "portid"):
        _put(ref, name, t.integer(name))
    return ReferralConfig(**ref)


def _ana_state(t: Table, key: str) -> AnaState:
    label = t.text(key)
    if label is None:
        return AnaState.OPTIMIZED
    try:
        return AnaState.from_label(label)
    except ValueError as exc:
        raise t.error(key, str(exc)) from None


# -- nvmetcli JSON --------------------------------------------------------------------------


def load_nvmetcli(data: Mapping[str, Any], source: str, *,
                  hidden_secrets: bool = False) -> TargetConfig:  # fmt: skip
    """Build and validate a TargetConfig from a parsed ``nvmetcli save`` document."""
    top = Table(data, source, "", {"hosts", "ports", "subsystems", "discovery"})
    discovery = top.table("discovery")
    hosts = []
    for h in top.tables("hosts", {"nqn", "dhchap"}):
        dhchap = _group(h, "dhchap")
        kwargs: dict[str, Any] = {"nqn": h.require_text("nqn")}
        for name in ("key", "ctrl_key", "hash", "dhgroup"):  # configfs dhchap_<name>
            _put(kwargs, f"dhchap_{name}", dhchap.text(name) or None)  # "" means unset
        hosts.append(HostConfig(**kwargs))
    subsystem_keys = {"nqn", "attr", "namespaces", "allowed_hosts", "passthru",
                      "nvmeof_emu_queue_size", "nvmeof_emu_max_namespaces"}  # fmt: skip
    port_keys = {"portid", "addr", "param", "subsystems", "ana_groups", "referrals",
                 "nvmeof_emu_advertise", "nvmeof_emu_strict"}  # fmt: skip
    config = TargetConfig(
        subsystems=tuple(_nvmet_subsystem(t) for t in top.tables("subsystems", subsystem_keys)),
        ports=tuple(_nvmet_port(t) for t in top.tables("ports", port_keys)),
        hosts=tuple(hosts),
        discovery_nqn=discovery.text("discovery_nqn") if discovery is not None else None,
    )
    validate(config, source, "nvmetcli", hidden_secrets=hidden_secrets)
    return config


def _group(t: Table, key: str) -> Table:
    """An attribute group (unknown keys ignored); absent is empty."""
    return t.table(key) or Table({}, t.source, t.sub(key))


def _nvmet_subsystem(t: Table) -> SubsystemConfig:
    attr = _group(t, "attr")
    kwargs: dict[str, Any] = {"nqn": t.require_text("nqn")}
    _put(kwargs, "allow_any_host", attr.boolean("allow_any_host", loose=True))
    serial = attr.text("serial")
    kwargs["serial"] = serial or None  # the kernel always has one; "" means unset
    _put(kwargs, "model", attr.text("model"))
    _put(kwargs, "max_io_queues", attr.integer("qid_max", strings=True))
    _put(kwargs, "queue_size", t.integer("nvmeof_emu_queue_size", strings=True))
    for name in ("cntlid_min", "cntlid_max"):
        _put(kwargs, name, attr.integer(name, strings=True))
    # attr_cqt: the configfs attribute of the TP8028/TP4129 nvmet patches (milliseconds)
    _put(kwargs, "cqt_ms", attr.integer("cqt", strings=True))
    _put(kwargs, "max_namespaces", t.integer("nvmeof_emu_max_namespaces", strings=True))
    _put(kwargs, "allowed_hosts", t.texts("allowed_hosts"))
    for passthru in t.tables("passthru"):
        if passthru.boolean("enable", loose=True):
            raise passthru.error("enable", "passthru subsystems are not supported")
    namespace_keys = {"nsid", "device", "enable", "ana_grpid", "ana", "resv"}
    namespaces = t.tables("namespaces", namespace_keys)
    kwargs["namespaces"] = tuple(_nvmet_namespace(n) for n in namespaces)
    return SubsystemConfig(**kwargs)


def _nvmet_namespace(t: Table) -> NamespaceConfig:
    kwargs: dict[str, Any] = {
        "nsid": t.require_integer("nsid", strings=True),
        "enabled": bool(t.boolean("enable", loose=True)),
        # configfs resv_enable (6.13+), which nvmetcli keeps as resv.enable; off by default
        "reservations": bool(_group(t, "resv").boolean("enable", loose=True)),
    }
    group = t.integer("ana_grpid", strings=True)
    if group is None:
        group = _group(t, "ana").integer("grpid", strings=True)
    _put(kwargs, "ana_group", group)
    device = _group(t, "device")
    for name, length in ID_LENGTHS.items():
        ident = device.hex_id(name, length)
        if ident is not None and any(ident):
            kwargs[name] = ident
    block_size = device.integer("block_size", strings=True)
    block_size = kwargs["block_size"] = 512 if block_size is None else block_size
    path = device.text("path") or ""
    backend = device.text("nvmeof_emu_backend")
    if backend is None:
        backend = "null" if not path or path.startswith("/dev/nullb") else "file"
    kwargs["backend"] = backend
    if path and not (backend == "null" and path.startswith("/dev/nullb")):
        kwargs["path"] = path
    size = device.size("size")
    if size is None and backend == "file" and path:
        size = _file_size(device, path, block_size)
    elif size is None and backend == "null":
        size = NULL_DEFAULT_SIZE
    _put(kwargs, "size", size)
    return NamespaceConfig(**kwargs)


def _file_size(device: Table, path: str, block_size: int) -> int:
    """The size of a backing file or block device, rounded down to whole blocks."""
    if block_size not in BLOCK_SIZES:
        raise device.error("block_size", f"must be 512 or 4096, got {block_size}")
    try:
        info = os.stat(path)
        size = info.st_size
        if stat.S_ISBLK(info.st_mode):
            with open(path, "rb") as dev:
                size = dev.seek(0, os.SEEK_END)
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise device.error("path", f"cannot size {path!r}: {reason} (give device.size)") from None
    if not (stat.S_ISREG(info.st_mode) or stat.S_ISBLK(info.st_mode)):
        raise device.error("path", f"{path!r} is not a regular file or block device")
    if size >= block_size:
        return size - size % block_size
    raise device.error("path", f"{path!r} is smaller than one block ({size} bytes)")


def _tcp_addr(t: Table, key: str, *, trtype_required: bool) -> tuple[str, int]:
    """(traddr, trsvcid) of an ``addr`` group, checking trtype, adrfam and tsas."""
    addr = t.table(key)
    if addr is None:
        raise t.error(key, "missing")
    trtype = addr.text("trtype")
    if trtype != "tcp" and (trtype_required or trtype):
        raise addr.error("trtype", f"only 'tcp' is supported, got {_describe_opt(trtype)}")
    if addr.text("tsas") not in (None, "", "none"):
        raise addr.error("tsas", f"TLS is not supported, got {addr.text('tsas')!r}")
    adrfam = addr.text("adrfam")
    traddr = addr.require_text("traddr")
    if adrfam is not None:
        if adrfam not in ("ipv4", "ipv6"):
            raise addr.error("adrfam", f"must be 'ipv4' or 'ipv6', got {adrfam!r}")
        if address_family(traddr) != adrfam:
            family = adrfam.replace("ip", "IP")
            raise addr.error("traddr", f"not an {family} address: {traddr!r}")
    trsvcid = addr.raw("trsvcid")
    text = str(trsvcid).strip() if isinstance(trsvcid, int | str) else ""
    if isinstance(trsvcid, bool) or not text.isascii() or not text.isdigit() or int(text) > 65535:
        raise addr.error("trsvcid", f"not a port number: {trsvcid!r}")
    return traddr, int(text)


def _describe_opt(value: str | None) -> str:
    return "nothing" if value is None else repr(value)


def _nvmet_port(t: Table) -> PortConfig:
    traddr, port = _tcp_addr(t, "addr", trtype_required=True)
    kwargs: dict[str, Any] = {"id": t.require_integer("portid", strings=True)}
    kwargs.update(addr=traddr, port=port)
    _put(kwargs, "inline_data_size", _group(t, "param").integer("inline_data_size", strings=True))
    _put(kwargs, "subsystems", t.texts("subsystems"))
    _put(kwargs, "advertise", t.text("nvmeof_emu_advertise"))
    _put(kwargs, "strict", t.boolean("nvmeof_emu_strict", loose=True))
    states = []
    for group in t.tables("ana_groups", {"grpid", "ana"}):
        grpid = group.require_integer("grpid", strings=True)
        states.append((grpid, _ana_state(_group(group, "ana"), "state")))
    kwargs["ana_states"] = tuple(states)
    referrals = []
    for r in t.tables("referrals", {"addr", "name", "enable", "portid"}):
        name = r.require_text("name")
        traddr, ref_port = _tcp_addr(r, "addr", trtype_required=False)
        portid = _group(r, "addr").integer("portid", strings=True)
        if portid is None:
            portid = r.integer("portid", strings=True)
        portid = 0 if portid is None else portid
        if r.boolean("enable", loose=True) is not False:
            referrals.append(ReferralConfig(name=name, addr=traddr, port=ref_port, portid=portid))
    kwargs["referrals"] = tuple(referrals)
    return PortConfig(**kwargs)


def address_family(addr: str) -> str:
    """nvmetcli's ``adrfam`` of an IP literal."""
    return "ipv6" if ":" in addr else "ipv4"
