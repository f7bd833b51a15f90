"""Configuration written out: nvmetcli's JSON (what ``nvmetcli save`` writes, plus the extension
keys :mod:`target.config.files` documents) and the native TOML format.

Both are read back by :func:`target.config.files.load_config` into the same configuration; fault
rules are run-time state and neither export writes them.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import tomli_w

from target.config.files import address_family
from target.config.model import (
    SECRET_HIDDEN,
    HostConfig,
    NamespaceConfig,
    PortConfig,
    SubsystemConfig,
    TargetConfig,
)

__all__ = ["dump_native_toml", "dump_nvmetcli_json", "export_native", "export_nvmetcli"]

_DEFAULTS = SubsystemConfig(nqn="")


def export_nvmetcli(config: TargetConfig, *, show_secrets: bool = False) -> dict[str, Any]:
    """The config as ``nvmetcli save`` would write it, plus the extension keys (see module doc);
    DH-HMAC-CHAP secrets as SECRET_HIDDEN unless ``show_secrets``."""
    out: dict[str, Any] = {
        "hosts": [_export_host(host, show_secrets) for host in config.hosts],
        "ports": [_export_port(port) for port in config.ports],
        "subsystems": [_export_subsystem(sub) for sub in config.subsystems],
    }
    if config.discovery_nqn is not None:
        out["discovery"] = {"discovery_nqn": config.discovery_nqn}
    return out


def _export_host(host: HostConfig, show_secrets: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"nqn": host.nqn}
    if host.dhchap_key is not None:  # configfs hosts/<nqn>/dhchap_*
        out["dhchap"] = {
            name: _secret(value, show_secrets) if name.endswith("key") else value
            for name, value in (("key", host.dhchap_key), ("ctrl_key", host.dhchap_ctrl_key),
                                ("hash", host.dhchap_hash), ("dhgroup", host.dhchap_dhgroup))
            if value is not None
        }  # fmt: skip
    if host.tls_key is not None:  # no configfs attribute: nvmet keeps PSKs in a keyring
        out["nvmeof_emu_tls"] = {"key": _secret(host.tls_key, show_secrets),
                                 "psk_derivation": host.tls_psk_derivation}  # fmt: skip
    return out


def _secret(value: str, show: bool) -> str:
    return value if show else SECRET_HIDDEN


def _export_addr(addr: str, port: int) -> dict[str, str]:
    return {"adrfam": address_family(addr), "traddr": addr, "treq": "not specified",
            "trsvcid": str(port), "trtype": "tcp"}  # fmt: skip


def _export_port(port: PortConfig) -> dict[str, Any]:
    out: dict[str, Any] = {
        "addr": _export_addr(port.addr, port.port),
        "ana_groups": [{"ana": {"state": s.label}, "grpid": g} for g, s in port.ana_states],
        "param": {"inline_data_size": str(port.inline_data_size)},
        "portid": port.id,
        "referrals": [
            {"addr": {**_export_addr(r.addr, r.port), "portid": str(r.portid)},
             "enable": 1, "name": r.name}
            for r in port.referrals
        ],
        "subsystems": list(port.subsystems),
    }  # fmt: skip
    if port.advertise is not None:
        out["nvmeof_emu_advertise"] = port.advertise
    if port.strict:
        out["nvmeof_emu_strict"] = True
    if port.tls is not None:  # configfs addr_tsas / addr_treq
        out["addr"].update(tsas="tls1.3",
                           treq="required" if port.tls == "required" else "not required")  # fmt: skip
    return out


def _export_subsystem(sub: SubsystemConfig) -> dict[str, Any]:
    attr = {"allow_any_host": "1" if sub.allow_any_host else "0",
            "cntlid_max": str(sub.cntlid_max), "cntlid_min": str(sub.cntlid_min), "model": sub.model,
            "qid_max": str(sub.max_io_queues),
            "version": "1.3"}  # fmt: skip
    if sub.serial is not None:
        attr["serial"] = sub.serial
    if sub.cqt_ms:  # only then: a kernel without the attribute would refuse it on restore
        attr["cqt"] = str(sub.cqt_ms)
    out: dict[str, Any] = {
        "allowed_hosts": list(sub.allowed_hosts),
        "attr": attr,
        "namespaces": [_export_namespace(ns) for ns in sub.namespaces],
        "nqn": sub.nqn,
    }
    if sub.queue_size != _DEFAULTS.queue_size:
        out["nvmeof_emu_queue_size"] = sub.queue_size
    if sub.max_namespaces != _DEFAULTS.max_namespaces:
        out["nvmeof_emu_max_namespaces"] = sub.max_namespaces
    return out


def _export_namespace(ns: NamespaceConfig) -> dict[str, Any]:
    device: dict[str, Any] = {"path": ns.path or "", "nvmeof_emu_backend": ns.backend,
                              "size": ns.size, "block_size": ns.block_size}  # fmt: skip
    if ns.uuid is not None:
        device["uuid"] = str(uuid.UUID(bytes=ns.uuid))
    if ns.nguid is not None:
        device["nguid"] = str(uuid.UUID(bytes=ns.nguid))
    if ns.eui64 is not None:
        device["eui64"] = ns.eui64.hex()
    if ns.backend == "file":
        device["nvmeof_emu_sync"] = ns.sync
    return {"ana": {"grpid": str(ns.ana_group)}, "ana_grpid": ns.ana_group, "device": device,
            "enable": int(ns.enabled), "nsid": ns.nsid,
            "resv": {"enable": int(ns.reservations)}}  # fmt: skip


def dump_nvmetcli_json(config: TargetConfig, *, show_secrets: bool = False) -> str:
    """:func:`export_nvmetcli` as text, formatted like ``nvmetcli save`` (sorted, indent 2)."""
    doc = export_nvmetcli(config, show_secrets=show_secrets)
    return json.dumps(doc, sort_keys=True, indent=2) + "\n"


# -- native TOML ------------------------------------------------------------------------------


def export_native(config: TargetConfig, *, show_secrets: bool = False) -> dict[str, Any]:
    """The config as a native TOML document (every field written, identifiers as text; hosts
    as ``[[host]]`` tables when one has DH-HMAC-CHAP settings, whose secrets are
    SECRET_HIDDEN unless ``show_secrets``)."""
    out: dict[str, Any] = {}
    if config.discovery_nqn is not None:
        out["discovery_nqn"] = config.discovery_nqn
    if any(h.dhchap_key is not None or h.tls_key is not None for h in config.hosts):
        out["host"] = [_native_host(h, show_secrets) for h in config.hosts]
    else:
        out["hosts"] = list(config.host_nqns)
    out["subsystem"] = [_native_subsystem(sub) for sub in config.subsystems]
    out["port"] = [_native_port(port) for port in config.ports]
    return out


def _native_host(host: HostConfig, show_secrets: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"nqn": host.nqn}
    for name in ("dhchap_key", "dhchap_ctrl_key"):
        value = getattr(host, name)
        if value is not None:
            out[name] = _secret(value, show_secrets)
    if host.dhchap_key is not None:
        out.update(dhchap_hash=host.dhchap_hash, dhchap_dhgroup=host.dhchap_dhgroup)
    if host.tls_key is not None:
        out.update(tls_key=_secret(host.tls_key, show_secrets),
                   tls_psk_derivation=host.tls_psk_derivation)  # fmt: skip
    return out


def _native_subsystem(sub: SubsystemConfig) -> dict[str, Any]:
    out: dict[str, Any] = {"nqn": sub.nqn}
    if sub.serial is not None:
        out["serial"] = sub.serial
    out.update(model=sub.model, allow_any_host=sub.allow_any_host,
               allowed_hosts=list(sub.allowed_hosts), max_io_queues=sub.max_io_queues,
               queue_size=sub.queue_size, cntlid_min=sub.cntlid_min, cntlid_max=sub.cntlid_max,
               max_namespaces=sub.max_namespaces, cqt_ms=sub.cqt_ms)  # fmt: skip
    out["namespace"] = [_native_namespace(ns) for ns in sub.namespaces]
    return out


def _native_namespace(ns: NamespaceConfig) -> dict[str, Any]:
    out: dict[str, Any] = {"nsid": ns.nsid, "size": ns.size, "block_size": ns.block_size,
                           "backend": ns.backend}  # fmt: skip
    if ns.path is not None:
        out["path"] = ns.path
    if ns.backend == "file":
        out["sync"] = ns.sync
    if ns.uuid is not None:
        out["uuid"] = str(uuid.UUID(bytes=ns.uuid))
    if ns.nguid is not None:
        out["nguid"] = ns.nguid.hex()
    if ns.eui64 is not None:
        out["eui64"] = ns.eui64.hex()
    out.update(ana_group=ns.ana_group, enabled=ns.enabled, reservations=ns.reservations)
    return out


def _native_port(port: PortConfig) -> dict[str, Any]:
    out: dict[str, Any] = {"id": port.id, "addr": port.addr, "port": port.port}
    if port.advertise is not None:
        out["advertise"] = port.advertise
    out.update(subsystems=list(port.subsystems), inline_data_size=port.inline_data_size,
               strict=port.strict, ana={str(group): state.label for group, state in port.ana_states})  # fmt: skip
    out["referral"] = [{"name": r.name, "addr": r.addr, "port": r.port, "portid": r.portid}
                       for r in port.referrals]  # fmt: skip
    if port.tls is not None:
        out["tls"] = port.tls
    return out


def dump_native_toml(config: TargetConfig, *, show_secrets: bool = False) -> str:
    """:func:`export_native` as TOML text."""
    return tomli_w.dumps(export_native(config, show_secrets=show_secrets))
