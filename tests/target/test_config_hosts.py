"""Hosts with DH-HMAC-CHAP settings in the configuration: native [[host]] tables, nvmetcli's
hosts[].dhchap, validation without echoing secrets, exports that hide them unless asked, and
live key rotation through the control API."""

from __future__ import annotations

import base64
import json
import tomllib
import zlib
from pathlib import Path

import pytest
import tomli_w

from target.config import SECRET_HIDDEN, ConfigError, HostConfig, TargetConfig
from target.config.export import dump_native_toml, dump_nvmetcli_json, export_nvmetcli
from target.config.files import load_config, load_native, load_nvmetcli

HOST = "nqn.2014-08.org.nvmexpress:uuid:0a0a0a0a-1111-2222-3333-444444444444"
OTHER = "nqn.2014-08.org.nvmexpress:uuid:0b0b0b0b-1111-2222-3333-444444444444"


def secret(seed: int, length: int = 32, hmac_id: int = 0) -> str:
    """A DHHC-1 secret as nvme gen-dhchap-key writes it: base64(key + CRC-32 LE)."""
    key = bytes((seed + i) % 256 for i in range(length))
    blob = key + zlib.crc32(key).to_bytes(4, "little")
    return f"DHHC-1:{hmac_id:02x}:{base64.b64encode(blob).decode()}:"


KEY, CTRL_KEY = secret(1), secret(7, 48, 2)


def native(hosts: list[dict[str, object]]) -> dict[str, object]:
    return {"host": hosts, "subsystem": [], "port": []}


def test_native_host_tables_and_the_list_form() -> None:
    config = load_native(native([
        {"nqn": HOST, "dhchap_key": KEY, "dhchap_ctrl_key": CTRL_KEY,
         "dhchap_hash": "hmac(sha384)", "dhchap_dhgroup": "ffdhe2048"},
        {"nqn": OTHER},
    ]), "t.toml")  # fmt: skip
    first = config.hosts[0]
    assert (first.dhchap_key, first.dhchap_ctrl_key) == (KEY, CTRL_KEY)
    assert (first.dhchap_hash, first.dhchap_dhgroup) == ("hmac(sha384)", "ffdhe2048")
    assert first.authentication == "bidirectional" and config.hosts[1].authentication == "none"
    assert KEY not in repr(config) and CTRL_KEY not in repr(first)  # logs never see them
    listed = load_native({"hosts": [HOST], "subsystem": [], "port": []}, "t.toml")
    assert listed.hosts == (HostConfig(nqn=HOST),)  # strings keep working
    assert TargetConfig(hosts=(HOST,)).hosts == (HostConfig(nqn=HOST),)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"hosts: give hosts either"):
        load_native({"hosts": [HOST], "host": [{"nqn": OTHER}]}, "t.toml")


@pytest.mark.parametrize(("table", "where", "why"), [
    ({"dhchap_key": "DHHC-1:00:abcd:"}, "host[0].dhchap_key", "key is 32, 48 or 64 bytes"),
    ({"dhchap_key": KEY[:-8] + "AAAAAAA:"}, "host[0].dhchap_key", "CRC-32"),
    ({"dhchap_key": "secret"}, "host[0].dhchap_key", "not a DHHC-1 secret"),
    ({"dhchap_key": SECRET_HIDDEN}, "host[0].dhchap_key", "hidden by an export"),
    ({"dhchap_ctrl_key": KEY}, "host[0].dhchap_ctrl_key", "needs the host's key"),
    ({"dhchap_key": KEY, "dhchap_hash": "sha256"}, "host[0].dhchap_hash", "hmac(sha256)"),
    ({"dhchap_key": KEY, "dhchap_dhgroup": "ffdhe1024"}, "host[0].dhchap_dhgroup", "null"),
])  # fmt: skip
def test_native_host_errors_name_the_key_and_never_the_secret(
    table: dict[str, str], where: str, why: str
) -> None:
    with pytest.raises(ConfigError) as err:
        load_native(native([{"nqn": HOST, **table}]), "t.toml")
    message = str(err.value)
    assert message.startswith(f"t.toml: {where}: ") and why in message, message
    assert KEY not in message and "abcd" not in message


def test_nvmetcli_dhchap_round_trip_and_hidden_secrets(tmp_path: Path) -> None:
    doc = {"hosts": [{"nqn": HOST, "dhchap": {"key": KEY, "ctrl_key": CTRL_KEY,
                                              "hash": "hmac(sha512)", "dhgroup": "ffdhe4096"}},
                     {"nqn": OTHER, "dhchap": {"key": "", "ctrl_key": "", "hash": "hmac(sha256)",
                                               "dhgroup": "null"}}],
           "ports": [], "subsystems": []}  # fmt: skip
    config = load_nvmetcli(doc, "saved.json")
    assert config.hosts[0].dhchap_hash == "hmac(sha512)" and config.hosts[1].dhchap_key is None
    shown = export_nvmetcli(config, show_secrets=True)
    assert shown["hosts"][0]["dhchap"] == doc["hosts"][0]["dhchap"]  # type: ignore[index]
    assert load_nvmetcli(shown, "again.json") == config
    hidden = dump_nvmetcli_json(config)
    assert KEY not in hidden and CTRL_KEY not in hidden and SECRET_HIDDEN in hidden
    path = tmp_path / "hidden.json"
    path.write_text(hidden)
    with pytest.raises(ConfigError, match=r"hosts\[0\]\.dhchap\.key: the secret was hidden"):
        load_config(path)
    toml = dump_native_toml(config)
    assert "[[host]]" in toml and KEY not in toml
    shown_toml = tomllib.loads(dump_native_toml(config, show_secrets=True))
    assert load_native(shown_toml, "t.toml") == config  # with its secrets, it round trips


async def test_live_host_keys_rotation_status_and_export_never_show_secrets(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from tests.target.test_live_config import live

    async with live() as env:
        changes = await env.client.host_add(HOST, dhchap_key=KEY, dhchap_dhgroup="ffdhe2048")
        assert changes == [f"host {HOST} added (authentication host, hmac(sha256), ffdhe2048)"]
        status = await env.client.status()
        assert status["host_authentication"] == {HOST: "host"}
        changes = await env.client.host_set_key(HOST, dhchap_key=secret(9),
                                                dhchap_ctrl_key=CTRL_KEY)  # fmt: skip
        assert changes == [f"host {HOST} DH-HMAC-CHAP settings changed (authentication "
                           "bidirectional, hmac(sha256), ffdhe2048)"]  # fmt: skip
        assert env.target.state.host_config(HOST).dhchap_key == secret(9)  # type: ignore[union-attr]
        exported = await env.client.config_export()
        assert SECRET_HIDDEN in exported and secret(9) not in exported
        # an export applied back, secrets hidden, changes nothing and keeps the keys
        assert await env.client.config_apply(exported) == []
        assert env.target.state.host_config(HOST).dhchap_ctrl_key == CTRL_KEY  # type: ignore[union-attr]
        assert secret(9) in await env.client.config_export(show_secrets=True)
        await env.client.host_set_key(HOST, dhchap_ctrl_key="")  # "" removes a key
        assert (await env.client.status())["host_authentication"] == {HOST: "host"}
        with pytest.raises(Exception, match=r"dhchap_key: .*CRC-32") as err:
            await env.client.host_set_key(HOST, dhchap_key=KEY[:-8] + "AAAAAAA:")
        assert KEY[:-8] not in str(err.value)
    logged = caplog.text + json.dumps([change.what for change in env.target.changes])
    assert f"host {HOST} added" in logged  # the audit trail and the log have the lines
    for key in (KEY, secret(9), CTRL_KEY):
        assert key not in logged


def test_config_warns_about_keys_no_subsystem_asks_for(tmp_path: Path) -> None:
    doc = {"host": [{"nqn": HOST, "dhchap_key": KEY}, {"nqn": OTHER, "dhchap_key": KEY}],
           "subsystem": [{"nqn": "nqn.2026-12.io.test:open", "allowed_hosts": [HOST]},
                         {"nqn": "nqn.2026-12.io.test:closed", "allow_any_host": False,
                          "allowed_hosts": [OTHER]}]}  # fmt: skip
    path = tmp_path / "keys.toml"
    path.write_text(tomli_w.dumps(doc))
    warnings: list[str] = []
    load_config(path, warnings)
    assert warnings == [f"{path}: host[0].dhchap_key: not used: a host authenticates only to "
                        "subsystems that list it in allowed_hosts and do not allow any host "
                        "(as nvmet)"]  # fmt: skip
