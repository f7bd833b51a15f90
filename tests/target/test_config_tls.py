"""TLS in the configuration: a port's ``tls`` (nvmet addr_tsas/addr_treq), a host's ``tls_key``
and ``tls_psk_derivation``; validation that never echoes a key, exports that hide it unless
asked, nvmetcli's tsas/treq both ways, warnings, the discovery log's TREQ and TSAS, and the
live API."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
import tomli_w

from nvmeof.constants import SecureChannel, TcpSecurityType
from target.config import SECRET_HIDDEN, ConfigError, PortConfig, SubsystemConfig, TargetConfig
from target.config.export import dump_native_toml, export_native, export_nvmetcli
from target.config.files import load_config, load_native, load_nvmetcli
from target.state import TargetState

HOST = "nqn.2014-08.org.nvmexpress:uuid:0a0a0a0a-1111-2222-3333-444444444444"
SUBNQN = "nqn.2026-12.io.test:tls"
#: libnvme test/psk.c's interchange key (hmac 01).
TLS_KEY = "NVMeTLSkey-1:01:VRLbtnN9AQb2WXW3c9+wEf/DRLz0QuLdbYvEhwtdWwNf9LrZ:"


def document(port_tls: str | None = "required", **host: str) -> dict[str, object]:
    port: dict[str, object] = {"id": 1, "port": 0, "subsystems": [SUBNQN]}
    if port_tls is not None:
        port["tls"] = port_tls
    return {"host": [{"nqn": HOST, **host}], "subsystem": [{"nqn": SUBNQN}], "port": [port]}


def test_native_tls_port_and_host_key_round_trip() -> None:
    config = load_native(document(tls_key=TLS_KEY, tls_psk_derivation="rfc8446"), "t.toml")
    assert config.ports[0].tls == "required"
    host = config.hosts[0]
    assert (host.tls_key, host.tls_psk_derivation) == (TLS_KEY, "rfc8446")
    assert TLS_KEY not in repr(config)
    hidden = dump_native_toml(config)
    assert TLS_KEY not in hidden and SECRET_HIDDEN in hidden and 'tls = "required"' in hidden
    shown = tomllib.loads(dump_native_toml(config, show_secrets=True))
    assert load_native(shown, "again.toml") == config
    assert load_native(export_native(config, show_secrets=False), "x.toml",
                       hidden_secrets=True).hosts[0].tls_key == SECRET_HIDDEN  # fmt: skip


@pytest.mark.parametrize(("doc", "where", "why"), [
    (document(tls_key="NVMeTLSkey-1:01:abcd:"), "host[0].tls_key", "NVMeTLSkey-1"),
    (document(tls_key=TLS_KEY[:-6] + "AAAAA:"), "host[0].tls_key", "NVMeTLSkey-1"),
    (document(tls_key="DHHC-1:00:abc:"), "host[0].tls_key", "NVMeTLSkey-1"),
    (document(tls_key=SECRET_HIDDEN), "host[0].tls_key", "hidden by an export"),
    (document(tls_key=TLS_KEY, tls_psk_derivation="v2"), "host[0].tls_psk_derivation",
     "compat, rfc8446"),
    (document(port_tls="optional"), "port[0].tls", "required, allowed"),
])  # fmt: skip
def test_tls_errors_name_the_key_and_never_the_secret(
    doc: dict[str, object], where: str, why: str
) -> None:
    with pytest.raises(ConfigError) as err:
        load_native(doc, "t.toml")
    message = str(err.value)
    assert message.startswith(f"t.toml: {where}: ") and why in message, message
    assert "VRLbtnN9" not in message and "abcd" not in message and "\n" not in message


@pytest.mark.parametrize(("tsas", "treq", "tls"), [
    ("tls1.3", "required", "required"),
    ("tls1.3", "not specified", "required"),
    ("tls1.3", "not required", "allowed"),
    ("none", "not specified", None),
])  # fmt: skip
def test_nvmetcli_tsas_and_treq(tsas: str, treq: str, tls: str | None) -> None:
    doc = {"hosts": [{"nqn": HOST, "nvmeof_emu_tls": {"key": TLS_KEY, "psk_derivation": "compat"}}],
           "subsystems": [{"nqn": SUBNQN, "attr": {"allow_any_host": "1"}, "namespaces": []}],
           "ports": [{"portid": 1, "addr": {"trtype": "tcp", "adrfam": "ipv4",
                                            "traddr": "127.0.0.1", "trsvcid": "4420",
                                            "tsas": tsas, "treq": treq},
                      "subsystems": [SUBNQN]}]}  # fmt: skip
    config = load_nvmetcli(doc, "saved.json")
    assert config.ports[0].tls == tls and config.hosts[0].tls_key == TLS_KEY
    again = load_nvmetcli(export_nvmetcli(config, show_secrets=True), "again.json")
    assert again == config
    exported = export_nvmetcli(config)
    assert exported["hosts"][0]["nvmeof_emu_tls"]["key"] == SECRET_HIDDEN
    addr = exported["ports"][0]["addr"]
    assert addr.get("tsas", "none") == tsas
    if tls is not None:
        assert addr["treq"] == ("not required" if tls == "allowed" else "required")


def test_nvmetcli_unknown_tsas_is_refused() -> None:
    doc = {"ports": [{"portid": 1, "addr": {"trtype": "tcp", "traddr": "127.0.0.1",
                                            "trsvcid": "4420", "tsas": "tls1.2"}}]}  # fmt: skip
    with pytest.raises(ConfigError, match=r"ports\[0\]\.addr\.tsas: must be 'none' or 'tls1.3'"):
        load_nvmetcli(doc, "saved.json")


def test_warnings_for_tls_ports_without_keys_and_keys_without_ports(tmp_path: Path) -> None:
    path = tmp_path / "tls.toml"
    path.write_text(tomli_w.dumps(document()))
    warnings: list[str] = []
    load_config(path, warnings)
    assert warnings == [f"{path}: port[0].tls: no host has a tls_key: no TLS connection can "
                        "succeed until one is set (ctl host set-key --tls-key)"]  # fmt: skip
    path.write_text(tomli_w.dumps(document(port_tls=None, tls_key=TLS_KEY)))
    warnings = []
    load_config(path, warnings)
    assert warnings == [f"{path}: host[0].tls_key: not used: no port has tls set"]


@pytest.mark.parametrize(("tls", "treq", "sectype"), [
    (None, SecureChannel.NOT_REQUIRED, TcpSecurityType.NONE),
    ("required", SecureChannel.REQUIRED, TcpSecurityType.TLS13),
    ("allowed", SecureChannel.NOT_REQUIRED, TcpSecurityType.TLS13),
])  # fmt: skip
def test_discovery_log_entry_says_treq_and_tsas(
    tls: str | None, treq: SecureChannel, sectype: TcpSecurityType
) -> None:
    config = TargetConfig(subsystems=(SubsystemConfig(nqn=SUBNQN),),
                          ports=(PortConfig(id=1, subsystems=(SUBNQN,), tls=tls),))  # fmt: skip
    state = TargetState(config)
    entries = state.discovery_entries(HOST, state.ports[1], "127.0.0.1")
    (entry,) = [e for e in entries if e.subnqn == SUBNQN]
    assert entry.treq == treq and entry.tsas[0] == sectype and not any(entry.tsas[1:])
