"""nvmetcli's JSON configuration (what ``nvmetcli save`` writes to ``/etc/nvmet/config.json``).

nvmetcli JSON (what ``nvmetcli save`` writes) maps as follows:

* ``hosts[].nqn`` -> ``hosts``, with ``hosts[].dhchap.{key,ctrl_key,hash,dhgroup}`` (configfs
  ``dhchap_*``; an empty string is unset) and the extension ``hosts[].nvmeof_emu_tls.{key,
  psk_derivation}`` (nvmet keeps TLS PSKs in the kernel keyring, not in configfs); ``subsystems[].attr``: ``allow_any_host``, ``serial``, ``model``,
  ``qid_max`` (-> ``max_io_queues``); ``allowed_hosts``; other attributes are ignored.
* ``namespaces[]``: ``nsid``, ``enable`` (absent: disabled, as nvmetcli leaves it),
  ``resv.enable`` (configfs ``resv_enable``, absent: reservations off, as in nvmet),
  ``ana_grpid`` (or ``ana.grpid``; default 1), ``device.uuid`` / ``device.nguid`` (all zeros
  means unset). ``device.path`` selects the backend: ``""`` or ``/dev/nullb*`` -> ``null``
  (size ``device.size``, default 1 GiB), anything else -> ``file`` with that path, its size
  taken from the file (rounded down to the block size) unless ``device.size`` is given.
* ``ports[]``: ``portid``, ``addr`` (``trtype`` must be ``tcp``; ``adrfam`` ipv4/ipv6 matching
  ``traddr``; ``trsvcid`` -> port; ``tsas`` ``tls1.3`` -> ``tls``: ``allowed`` when ``treq`` is
  ``not required``, else ``required``; other ``tsas`` values are refused), ``param.inline_data_size``,
  ``subsystems``, ``ana_groups[]`` (``grpid``, ``ana.state``; a missing state is optimized,
  unlisted groups are optimized), ``referrals[]`` (``name``, ``addr`` with ``portid``; a
  referral with ``enable`` 0 is dropped).
* Unknown keys inside attribute groups (``attr``, ``addr``, ``param``, ``device``, ``ana``,
  ``resv``, ``dhchap``, ``discovery``) are ignored, since they vary with the kernel; an unknown
  key elsewhere is an error, and so is a value of the wrong type. Enabled ``passthru`` is refused.
* Extension keys (written by :func:`export_nvmetcli`, so that every representable config round
  trips): ``device.nvmeof_emu_backend`` (ram/file/null), ``device.size``, ``device.block_size``
  (default 512), ``device.eui64``, ``device.nvmeof_emu_sync`` (the file backend's sync mode,
  docs/DURABILITY.md; nvmet's nearest is the namespace's ``buffered_io``, which nvmetcli does
  not save); on ports ``nvmeof_emu_advertise`` and ``nvmeof_emu_strict``; on subsystems
  ``nvmeof_emu_queue_size`` (written only when not the default 128). A RAM namespace is
  written with ``"path": ""``. nvmetcli itself ignores the port and subsystem extension keys and
  reports the ``device`` ones as unknown attributes, skipped.
* Fault rules have no nvmetcli equivalent: a JSON configuration has none, and the export
  leaves the ``faults`` of a configuration out.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from typing import Any

from nvmeof.constants import AnaState
from target.config.model import (
    BLOCK_SIZES,
    HostConfig,
    NamespaceConfig,
    PortConfig,
    ReferralConfig,
    SubsystemConfig,
    TargetConfig,
)
from target.config.validate import ID_LENGTHS, Table, validate

NULL_DEFAULT_SIZE = 1 << 30


def put_if_set(kwargs: dict[str, Any], name: str, value: object) -> None:
    if value is not None:
        kwargs[name] = value


def ana_state(t: Table, key: str) -> AnaState:
    label = t.text(key)
    if label is None:
        return AnaState.OPTIMIZED
    try:
        return AnaState.from_label(label)
    except ValueError as exc:
        raise t.error(key, str(exc)) from None


def load_nvmetcli(data: Mapping[str, Any], source: str, *,
                  hidden_secrets: bool = False) -> TargetConfig:  # fmt: skip
    """Build and validate a TargetConfig from a parsed ``nvmetcli save`` document."""
    top = Table(data, source, "", {"hosts", "ports", "subsystems", "discovery"})
    discovery = top.table("discovery")
    hosts = []
    for h in top.tables("hosts", {"nqn", "dhchap", "nvmeof_emu_tls"}):
        dhchap = _group(h, "dhchap")
        kwargs: dict[str, Any] = {"nqn": h.require_text("nqn")}
        for name in ("key", "ctrl_key", "hash", "dhgroup"):  # configfs dhchap_<name>
            put_if_set(kwargs, f"dhchap_{name}", dhchap.text(name) or None)  # "" means unset
        tls = _group(h, "nvmeof_emu_tls")
        put_if_set(kwargs, "tls_key", tls.text("key") or None)
        put_if_set(kwargs, "tls_psk_derivation", tls.text("psk_derivation"))
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
    put_if_set(kwargs, "allow_any_host", attr.boolean("allow_any_host", loose=True))
    serial = attr.text("serial")
    kwargs["serial"] = serial or None  # the kernel always has one; "" means unset
    put_if_set(kwargs, "model", attr.text("model"))
    put_if_set(kwargs, "max_io_queues", attr.integer("qid_max", strings=True))
    put_if_set(kwargs, "queue_size", t.integer("nvmeof_emu_queue_size", strings=True))
    for name in ("cntlid_min", "cntlid_max"):
        put_if_set(kwargs, name, attr.integer(name, strings=True))
    # attr_cqt: the configfs attribute of the TP8028/TP4129 nvmet patches (milliseconds)
    put_if_set(kwargs, "cqt_ms", attr.integer("cqt", strings=True))
    put_if_set(kwargs, "max_namespaces", t.integer("nvmeof_emu_max_namespaces", strings=True))
    put_if_set(kwargs, "allowed_hosts", t.texts("allowed_hosts"))
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
    put_if_set(kwargs, "ana_group", group)
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
    put_if_set(kwargs, "sync", device.text("nvmeof_emu_sync"))
    if path and not (backend == "null" and path.startswith("/dev/nullb")):
        kwargs["path"] = path
    size = device.size("size")
    if size is None and backend == "file" and path:
        size = _file_size(device, path, block_size)
    elif size is None and backend == "null":
        size = NULL_DEFAULT_SIZE
    put_if_set(kwargs, "size", size)
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
    if addr.text("tsas") not in (None, "", "none", "tls1.3"):
        raise addr.error("tsas", f"must be 'none' or 'tls1.3', got {addr.text('tsas')!r}")
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


def _port_tls(t: Table) -> str | None:
    """Our ``tls`` from configfs ``addr_tsas`` and ``addr_treq``: ``tls1.3`` is TLS, required
    unless TREQ says ``not required`` (nvmet_addr_tsas_store sets the secure channel to
    required when TLS is enabled; ``not required`` lets plaintext hosts in too)."""
    addr = _group(t, "addr")
    if addr.text("tsas") != "tls1.3":
        return None
    return "allowed" if addr.text("treq") == "not required" else "required"


def _describe_opt(value: str | None) -> str:
    return "nothing" if value is None else repr(value)


def _nvmet_port(t: Table) -> PortConfig:
    traddr, port = _tcp_addr(t, "addr", trtype_required=True)
    kwargs: dict[str, Any] = {"id": t.require_integer("portid", strings=True)}
    kwargs.update(addr=traddr, port=port)
    put_if_set(
        kwargs, "inline_data_size", _group(t, "param").integer("inline_data_size", strings=True)
    )
    put_if_set(kwargs, "subsystems", t.texts("subsystems"))
    put_if_set(kwargs, "advertise", t.text("nvmeof_emu_advertise"))
    put_if_set(kwargs, "strict", t.boolean("nvmeof_emu_strict", loose=True))
    put_if_set(kwargs, "tls", _port_tls(t))
    states = []
    for group in t.tables("ana_groups", {"grpid", "ana"}):
        grpid = group.require_integer("grpid", strings=True)
        states.append((grpid, ana_state(_group(group, "ana"), "state")))
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
