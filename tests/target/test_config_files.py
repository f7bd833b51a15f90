"""Configuration files (target/config_files.py, target/config_validate.py): the native TOML
format, nvmetcli's JSON, one-line errors naming the field, and round trips."""

from __future__ import annotations

import copy
import json
import string
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from nvmeof.constants import DISCOVERY_NQN, AnaState
from target.config import (
    DEMO_NQN,
    SYNC_MODES,
    ConfigError,
    NamespaceConfig,
    PortConfig,
    ReferralConfig,
    SubsystemConfig,
    TargetConfig,
    default_config,
)
from target.config.export import dump_native_toml, dump_nvmetcli_json, export_nvmetcli
from target.config.files import (
    load_config,
    load_native,
    load_nvmetcli,
    parse_size,
    validate,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "target.example.toml"
NQN_A = "nqn.2026-11.io.test:a"
NQN_B = "nqn.2026-11.io.test:b"
HOST = "nqn.2014-08.org.nvmexpress:uuid:8ae2b12c-3d28-4458-83e3-658e571ed4b8"


def one_line(exc: pytest.ExceptionInfo[ConfigError]) -> str:
    message = str(exc.value)
    assert "\n" not in message and "\r" not in message
    return message


# -- the example file and round trips ----------------------------------------------------------


def test_example_equals_default_config() -> None:
    assert load_config(EXAMPLE) == default_config()


def test_example_file_namespace_is_valid_when_uncommented(tmp_path: Path) -> None:
    text = EXAMPLE.read_text()
    start = text.index("  # [[subsystem.namespace]]")
    end = text.index("# ----", start)
    block = "\n".join(line.replace("# ", "", 1) for line in text[start:end].splitlines())
    config_file = tmp_path / "with-file.toml"
    config_file.write_text(text[:start] + block + "\n" + text[end:])
    ns = load_config(config_file).subsystems[0].namespaces[2]
    assert ns == NamespaceConfig(
        nsid=3, size=1 << 30, block_size=4096, backend="file",
        path="/var/lib/nvmeof/ns3.img", ana_group=2,
    )  # fmt: skip


def _q(text: str) -> str:
    return json.dumps(text)  # a JSON string of printable ASCII is a TOML basic string


def to_toml(config: TargetConfig) -> str:
    """Render a config in the native format (test-only writer, every field explicit)."""
    lines = [f"hosts = [{', '.join(map(_q, config.host_nqns))}]"]
    for sub in config.subsystems:
        lines += ["[[subsystem]]", f"nqn = {_q(sub.nqn)}", f"model = {_q(sub.model)}",
                  f"allow_any_host = {str(sub.allow_any_host).lower()}",
                  f"allowed_hosts = [{', '.join(map(_q, sub.allowed_hosts))}]",
                  f"max_io_queues = {sub.max_io_queues}", f"queue_size = {sub.queue_size}",
                  f"cntlid_min = {sub.cntlid_min}", f"cntlid_max = {sub.cntlid_max}",
                  f"max_namespaces = {sub.max_namespaces}", f"cqt_ms = {sub.cqt_ms}"]  # fmt: skip
        if sub.serial is not None:
            lines.append(f"serial = {_q(sub.serial)}")
        for ns in sub.namespaces:
            lines += ["[[subsystem.namespace]]", f"nsid = {ns.nsid}", f"size = {ns.size}",
                      f"block_size = {ns.block_size}", f"backend = {_q(ns.backend)}",
                      f"ana_group = {ns.ana_group}", f"enabled = {str(ns.enabled).lower()}"]  # fmt: skip
            if ns.path is not None:
                lines.append(f"path = {_q(ns.path)}")
            if ns.sync != "flush":
                lines.append(f"sync = {_q(ns.sync)}")
            if ns.uuid is not None:
                lines.append(f'uuid = "{uuid.UUID(bytes=ns.uuid)}"')
            if ns.nguid is not None:
                lines.append(f'nguid = "{ns.nguid.hex("-", 4)}"')
            if ns.eui64 is not None:
                lines.append(f'eui64 = "{ns.eui64.hex(":")}"')
    for port in config.ports:
        ana = ", ".join(f"{group} = {_q(state.label)}" for group, state in port.ana_states)
        lines += ["[[port]]", f"id = {port.id}", f"addr = {_q(port.addr)}", f"port = {port.port}",
                  f"subsystems = [{', '.join(map(_q, port.subsystems))}]",
                  f"inline_data_size = {port.inline_data_size}", f"ana = {{ {ana} }}"]  # fmt: skip
        if port.advertise is not None:
            lines.append(f"advertise = {_q(port.advertise)}")
        for ref in port.referrals:
            lines += ["[[port.referral]]", f"name = {_q(ref.name)}", f"addr = {_q(ref.addr)}",
                      f"port = {ref.port}", f"portid = {ref.portid}"]  # fmt: skip
    return "\n".join(lines) + "\n"


RICH = TargetConfig(
    subsystems=(
        SubsystemConfig(
            nqn=NQN_A, serial="SN-0001", model="Emu Model", allow_any_host=False,
            allowed_hosts=(HOST,), max_io_queues=4, queue_size=32,
            namespaces=(
                NamespaceConfig(nsid=1, size=8 << 20, block_size=4096, backend="file",
                                path="/srv/a.img", uuid=bytes(range(1, 17)),
                                nguid=bytes(range(16, 32)), eui64=bytes(range(1, 9)),
                                ana_group=2, enabled=False, sync="always"),
                NamespaceConfig(nsid=7, size=1 << 30, backend="null"),
            ),
        ),
        SubsystemConfig(nqn=NQN_B, namespaces=(NamespaceConfig(nsid=1),)),
    ),
    ports=(
        PortConfig(id=1, addr="0.0.0.0", port=4420, advertise="10.0.2.2",
                   subsystems=(NQN_A, NQN_B), inline_data_size=16384,
                   ana_states=((1, AnaState.OPTIMIZED), (2, AnaState.INACCESSIBLE)),
                   referrals=(ReferralConfig(name="dc2", addr="192.0.2.7", portid=5),)),
        PortConfig(id=2, addr="::1", port=0, subsystems=(NQN_A,), inline_data_size=0,
                   ana_states=((2, AnaState.CHANGE),)),
    ),
    hosts=(HOST,),
)  # fmt: skip


@pytest.mark.parametrize("config", [default_config(), RICH, TargetConfig()])
def test_native_round_trip(config: TargetConfig, tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(to_toml(config))
    assert load_config(path) == config


@pytest.mark.parametrize("config", [default_config(), RICH, TargetConfig()])
def test_nvmetcli_round_trip(config: TargetConfig, tmp_path: Path) -> None:
    assert load_nvmetcli(export_nvmetcli(config), "x.json") == config
    path = tmp_path / "saved.json"
    path.write_text(dump_nvmetcli_json(config))
    assert load_config(path) == config


def test_native_values_spelled_loosely() -> None:
    doc = {
        "subsystem": [{"nqn": NQN_A, "namespace": [
            {"nsid": 1, "size": "1 GiB", "uuid": "{01020304-0506-0708-090a-0b0c0d0e0f10}",
             "nguid": "00:11:22:33:44:55:66:77:88:99:aa:bb:cc:dd:ee:ff", "eui64": "0011-2233-4455-6677"},
        ]}],
        "port": [{"id": 1, "ana": {"1": "Non_Optimized", "2": "persistent-loss"}}],
    }  # fmt: skip
    config = load_native(doc, "t.toml")
    ns = config.subsystems[0].namespaces[0]
    assert ns.size == 1 << 30
    assert ns.uuid == bytes(range(1, 17))
    assert ns.nguid == bytes.fromhex("00112233445566778899aabbccddeeff")
    assert ns.eui64 == bytes.fromhex("0011223344556677")
    assert config.ports[0] == PortConfig(
        id=1, ana_states=((1, AnaState.NON_OPTIMIZED), (2, AnaState.PERSISTENT_LOSS))
    )


# -- sizes -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "size"),
    [
        (4096, 4096), ("4096", 4096), ("512B", 512), ("4K", 4096), ("4k", 4096),
        ("4KiB", 4096), ("4KB", 4096), ("256MiB", 256 << 20), ("256M", 256 << 20),
        (" 1 GiB ", 1 << 30), ("2T", 2 << 40), ("1.5G", 3 << 29), ("0.5KiB", 512), ("1P", 1 << 50),
    ],
)  # fmt: skip
def test_parse_size(text: int | str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize(
    "text", ["", "M", "1X", "1 MiBs", "-1M", "1iB", "1.3B", "0.1K", "1e6", "0x10", True, 1.5, None]
)
def test_parse_size_rejects(text: object) -> None:
    with pytest.raises(ValueError, match=r"size|whole"):
        parse_size(text)


# -- validation errors: one line naming the field ----------------------------------------------


def base_native() -> dict[str, Any]:
    return {
        "subsystem": [{"nqn": NQN_A, "namespace": [{"nsid": 1, "size": "1MiB"}]}],
        "port": [{"id": 1, "port": 4420, "subsystems": [NQN_A]}],
    }


_DELETE = object()


def mutate(doc: dict[str, Any], dotted: str, value: object) -> dict[str, Any]:
    """Set (or delete, with _DELETE) ``a.0.b`` in a deep copy of ``doc``."""
    doc = copy.deepcopy(doc)
    *parents, last = dotted.split(".")
    node: Any = doc
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if isinstance(node, list):
        node[int(last)] = value
    elif value is _DELETE:
        del node[last]
    else:
        node[last] = value
    return doc


NS = "subsystem.0.namespace.0"
NATIVE_ERRORS = [
    (f"{NS}.block_size", 1000, "subsystem[0].namespace[0].block_size", "must be 512 or 4096, got 1000"),
    (f"{NS}.size", 1000, "subsystem[0].namespace[0].size", "not a multiple of block_size 512"),
    (f"{NS}.size", 0, "subsystem[0].namespace[0].size", "must be 1.."),
    (f"{NS}.size", "12 parsecs", "subsystem[0].namespace[0].size", "not a size"),
    (f"{NS}.nsid", 0, "subsystem[0].namespace[0].nsid", "must be 1..1024 (max_namespaces)"),
    (f"{NS}.nsid", "1", "subsystem[0].namespace[0].nsid", "must be an integer, got '1'"),
    (f"{NS}.nsid", _DELETE, "subsystem[0].namespace[0].nsid", "missing"),
    (f"{NS}.backend", "tape", "subsystem[0].namespace[0].backend", "ram, file, null"),
    (f"{NS}.backend", "file", "subsystem[0].namespace[0].path", "must be a string, got null"),
    (f"{NS}.path", "/x.img", "subsystem[0].namespace[0].path", "only used by the file backend"),
    (f"{NS}.uuid", "xyz", "subsystem[0].namespace[0].uuid", "not a UUID"),
    (f"{NS}.nguid", "0011", "subsystem[0].namespace[0].nguid", "32 hex digits"),
    (f"{NS}.eui64", "00" * 8, "subsystem[0].namespace[0].eui64", "all zeros"),
    (f"{NS}.ana_group", 129, "subsystem[0].namespace[0].ana_group", "1..128"),
    (f"{NS}.enabled", 1, "subsystem[0].namespace[0].enabled", "must be a boolean"),
    (f"{NS}.sync", "sometimes", "subsystem[0].namespace[0].sync", "must be one of flush, always, none"),
    (f"{NS}.sync", True, "subsystem[0].namespace[0].sync", "must be a string"),
    (f"{NS}.sync", "always", "subsystem[0].namespace[0].sync", "only used by the file backend"),
    (f"{NS}.sizee", 1, "subsystem[0].namespace[0].sizee", "unknown key"),
    ("subsystem.0.namepsace", [], "subsystem[0].namepsace", "unknown key"),
    ("subsystem.0.nqn", "nqn.with space", "subsystem[0].nqn", "without spaces"),
    ("subsystem.0.nqn", DISCOVERY_NQN, "subsystem[0].nqn", "discovery NQN"),
    ("subsystem.0.nqn", "nqn." + "x" * 220, "subsystem[0].nqn", "longer than 223"),
    ("subsystem.0.nqn", "nqn.caf\u00e9", "subsystem[0].nqn", "printable ASCII"),
    ("subsystem.0.nqn", _DELETE, "subsystem[0].nqn", "missing"),
    ("subsystem.1", {"nqn": NQN_A}, "subsystem[1].nqn", "duplicate NQN"),
    ("subsystem.0.serial", "x" * 21, "subsystem[0].serial", "1..20 printable ASCII"),
    ("subsystem.0.allowed_hosts", ["host 1"], "subsystem[0].allowed_hosts[0]", "without spaces"),
    ("subsystem.0.allowed_hosts", "h", "subsystem[0].allowed_hosts", "array of strings"),
    ("subsystem.0.allow_any_host", "yes", "subsystem[0].allow_any_host", "must be a boolean"),
    ("subsystem.0.max_io_queues", 0, "subsystem[0].max_io_queues", "1..128"),
    ("subsystem.0.queue_size", 1, "subsystem[0].queue_size", "2..1024"),
    ("subsystem.0.queue_size", 4096, "subsystem[0].queue_size", "2..1024"),
    ("subsystem", {"nqn": NQN_A}, "subsystem", "must be an array of tables, got a table"),
    ("subsystem.0.namespace.1", {"nsid": 1}, "subsystem[0].namespace[1].nsid", "duplicate NSID 1"),
    ("port.0.subsystems", [NQN_B], "port[0].subsystems[0]", "no subsystem with NQN"),
    ("port.0.subsystems", [NQN_A, NQN_A], "port[0].subsystems[1]", "listed twice"),
    ("port.0.port", 70000, "port[0].port", "0..65535"),
    ("port.0.addr", "localhost", "port[0].addr", "not an IP address: 'localhost'"),
    ("port.0.advertise", "10.0.2", "port[0].advertise", "not an IP address"),
    ("port.1", {"id": 1, "port": 4421}, "port[1].id", "duplicate port id 1"),
    ("port.1", {"id": 2, "port": 4420}, "port[1].port", "already used by port[0]"),
    ("port.0.inline_data_size", 10, "port[0].inline_data_size", "multiple of 16"),
    ("port.0.inline_data_size", 2 << 20, "port[0].inline_data_size", "0..1048576"),
    ("port.0.ana", {"129": "optimized"}, "port[0].ana[0]", "1..128"),
    ("port.0.ana", {"1": "sleepy"}, "port[0].ana.1", "unknown ANA state 'sleepy'"),
    ("port.0.ana", {"one": "optimized"}, "port[0].ana.one", "ANA group must be a number"),
    ("port.0.ana", {"1": 1}, "port[0].ana.1", "must be a string"),
    ("port.0.id", _DELETE, "port[0].id", "missing"),
    ("port.0.referral", [{"name": "r", "addr": "10.0.0.1", "port": 0}], "port[0].referral[0].port", "1..65535"),
    ("port.0.referral", [{"name": "r"}], "port[0].referral[0].addr", "missing"),
    ("port.0.referral", [{"name": "r", "addr": "10.0.0.1", "trtype": "tcp"}], "port[0].referral[0].trtype", "unknown key"),
    ("hosts", ["no\tpe"], "hosts[0]", "printable ASCII"),
    ("hosts", [1], "hosts[0]", "must be a string"),
    ("ports", [], "ports", "unknown key"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("where", "value", "path", "fragment"), NATIVE_ERRORS, ids=[c[2] for c in NATIVE_ERRORS]
)
def test_native_errors(where: str, value: object, path: str, fragment: str) -> None:
    doc = base_native()
    if where == "subsystem.1":
        doc["subsystem"].append({})
    if where == "subsystem.0.namespace.1":
        doc["subsystem"][0]["namespace"].append({})
    if where == "port.1":
        doc["port"].append({})
    with pytest.raises(ConfigError) as exc:
        load_native(mutate(doc, where, value), "config.toml")
    message = one_line(exc)
    assert message.startswith(f"config.toml: {path}: "), message
    assert fragment in message


def test_base_native_is_valid() -> None:
    assert load_native(base_native(), "config.toml").subsystems[0].namespaces[0].size == 1 << 20


def test_validate_accepts_default_and_names_source() -> None:
    validate(default_config(), "embedded")
    bad = TargetConfig(subsystems=(SubsystemConfig(nqn=DEMO_NQN, max_io_queues=0),))
    with pytest.raises(ConfigError, match=r"^embedded: subsystems\[0\]\.max_io_queues: "):
        validate(bad, "embedded")


def test_error_message_escapes_line_breaks() -> None:
    doc = mutate(base_native(), "subsystem.0.nqn", "nqn.a\nb\u2028c")
    with pytest.raises(ConfigError) as exc:
        load_native(doc, "odd\nname.toml")
    assert len(one_line(exc).splitlines()) == 1


@pytest.mark.parametrize(
    ("name", "text", "fragment"),
    [
        ("config.toml", "[[subsystem]]\nnqn = \n", "invalid TOML: "),
        ("config.toml", "[[port]]\nid = 1\nid = 2\n", "invalid TOML: "),
        ("tcp.json", '{"ports": [\n  {"portid": 1,}\n]}', "invalid JSON: "),
        ("config", '{"hosts": [}', "invalid JSON: "),
        ("config", "hosts = [", "invalid TOML: "),
    ],
)
def test_syntax_errors_are_one_line(name: str, text: str, fragment: str, tmp_path: Path) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    message = one_line(exc)
    assert message.startswith(f"{path}: {fragment}")
    assert ("line" in message and "column" in message) or "end of document" in message


def test_unreadable_and_sniffed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read") as exc:
        load_config(tmp_path / "missing.toml")
    one_line(exc)
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(binary)
    sniffed_json = tmp_path / "saved.conf"
    sniffed_json.write_text("\n  " + dump_nvmetcli_json(default_config()))
    assert load_config(sniffed_json) == default_config()
    sniffed_toml = tmp_path / "target.conf"
    sniffed_toml.write_text(EXAMPLE.read_text())
    assert load_config(sniffed_toml) == default_config()


# -- nvmetcli JSON -----------------------------------------------------------------------------

SAVED = """{
  "hosts": [
    {"dhchap": {"ctrl_key": "", "hash": "hmac(sha256)", "key": ""}, "nqn": "%(host)s"}
  ],
  "ports": [
    {
      "addr": {"adrfam": "ipv4", "traddr": "192.168.122.33", "treq": "not specified",
               "trsvcid": "4420", "trtype": "tcp", "tsas": "none"},
      "ana_groups": [
        {"ana": {"state": "optimized"}, "grpid": 1},
        {"ana": {"state": "inaccessible"}, "grpid": 2}
      ],
      "param": {"inline_data_size": "16384", "max_queue_size": "-1", "pi_enable": "0"},
      "portid": 1,
      "referrals": [
        {"addr": {"adrfam": "ipv4", "portid": "7", "traddr": "192.168.122.50",
                  "treq": "not specified", "trsvcid": "8009", "trtype": "tcp"},
         "enable": 1, "name": "dc2"},
        {"addr": {"adrfam": "ipv4", "portid": "8", "traddr": "192.168.122.51",
                  "treq": "not specified", "trsvcid": "8009", "trtype": "tcp"},
         "enable": 0, "name": "off"}
      ],
      "subsystems": ["nvmet-always"]
    },
    {
      "addr": {"adrfam": "ipv6", "traddr": "fd00::33", "treq": "not specified",
               "trsvcid": "4421", "trtype": "tcp"},
      "ana_groups": [
        {"ana": {"state": "non-optimized"}, "grpid": 1},
        {"ana": {"state": "optimized"}, "grpid": 2}
      ],
      "param": {"inline_data_size": "8192", "pi_enable": "0"},
      "portid": 2,
      "referrals": [],
      "subsystems": ["nvmet-always"]
    }
  ],
  "subsystems": [
    {
      "allowed_hosts": ["%(host)s"],
      "attr": {"allow_any_host": "0", "cntlid_max": "65519", "cntlid_min": "1",
               "firmware": "6.8.0", "ieee_oui": "0x000000", "model": "Linux",
               "pi_enable": "0", "qid_max": "128", "serial": "123456789abcdef",
               "version": "1.3"},
      "namespaces": [
        {"ana": {"grpid": "1"}, "ana_grpid": 1,
         "device": {"nguid": "00000000-0000-0000-0000-000000000000", "path": "/dev/nullb0",
                    "uuid": "d592cdf3-5d1c-44e0-8412-3fcf7d99df27"},
         "enable": 1, "nsid": 1, "resv": {"enable": "0"}},
        {"ana": {"grpid": "2"}, "ana_grpid": 2,
         "device": {"nguid": "ef90689c-6c46-d44c-89c1-4067801309a8", "path": "%(file)s",
                    "uuid": "5b5c4d1e-8a0e-4b87-a3a0-5e3c7b9e2f11"},
         "enable": 1, "nsid": 2, "resv": {"enable": "1"}}
      ],
      "nqn": "nvmet-always",
      "passthru": [{"admin_timeout": 0, "clear_ids": 1, "device": {"path": ""}, "enable": 0,
                    "io_timeout": 0}]
    }
  ]
}
"""


def saved_document(tmp_path: Path, nqn: str = "nqn.2014-08.org.example:nvmet-always") -> Path:
    backing = tmp_path / "ns2.img"
    with backing.open("wb") as f:
        f.truncate((16 << 20) + 100)  # not whole blocks: rounded down
    text = SAVED % {"host": HOST, "file": backing}
    path = tmp_path / "config.json"
    path.write_text(text.replace('"nvmet-always"', json.dumps(nqn)))
    return path


def test_nvmetcli_save_document_loads(tmp_path: Path) -> None:
    nqn = "nqn.2014-08.org.example:nvmet-always"
    config = load_config(saved_document(tmp_path, nqn))
    null_ns = NamespaceConfig(
        nsid=1, size=1 << 30, backend="null", ana_group=1, reservations=False,
        uuid=uuid.UUID("d592cdf3-5d1c-44e0-8412-3fcf7d99df27").bytes,
    )  # fmt: skip
    file_ns = NamespaceConfig(
        nsid=2, size=16 << 20, backend="file", path=str(tmp_path / "ns2.img"), ana_group=2,
        uuid=uuid.UUID("5b5c4d1e-8a0e-4b87-a3a0-5e3c7b9e2f11").bytes,
        nguid=bytes.fromhex("ef90689c6c46d44c89c14067801309a8"),
    )  # fmt: skip
    assert config == TargetConfig(
        subsystems=(
            SubsystemConfig(nqn=nqn, namespaces=(null_ns, file_ns), serial="123456789abcdef",
                            model="Linux", allow_any_host=False, allowed_hosts=(HOST,),
                            max_io_queues=128),
        ),
        ports=(
            PortConfig(id=1, addr="192.168.122.33", port=4420, subsystems=(nqn,),
                       ana_states=((1, AnaState.OPTIMIZED), (2, AnaState.INACCESSIBLE)),
                       referrals=(ReferralConfig(name="dc2", addr="192.168.122.50", port=8009,
                                                 portid=7),),
                       inline_data_size=16384),
            PortConfig(id=2, addr="fd00::33", port=4421, subsystems=(nqn,),
                       ana_states=((1, AnaState.NON_OPTIMIZED), (2, AnaState.OPTIMIZED))),
        ),
        hosts=(HOST,),
    )  # fmt: skip
    assert load_nvmetcli(export_nvmetcli(config), "again.json") == config


def test_nvmetcli_defaults_and_spellings() -> None:
    doc = {
        "ports": [{"addr": {"trtype": "tcp", "traddr": "10.0.0.1", "trsvcid": "4420"},
                   "portid": "3", "ana_groups": [{"grpid": "2"}],
                   "referrals": [{"name": "r", "portid": 4,
                                  "addr": {"traddr": "10.0.0.2", "trsvcid": 8009}}]}],
        "subsystems": [{"nqn": NQN_A, "attr": {"allow_any_host": "Y"}, "namespaces": [
            {"nsid": 1, "device": {"path": ""}},
            {"nsid": 2, "ana": {"grpid": "3"}, "enable": "1",
             "device": {"path": "/dev/nullb1", "size": "2G", "block_size": "4096"}},
        ]}],
    }  # fmt: skip
    config = load_nvmetcli(doc, "min.json")
    assert config.subsystems[0] == SubsystemConfig(
        nqn=NQN_A,
        namespaces=(
            # no resv group: reservations off, as nvmet's resv_enable defaults to 0
            NamespaceConfig(
                nsid=1, size=1 << 30, backend="null", enabled=False, reservations=False
            ),
            NamespaceConfig(
                nsid=2,
                size=2 << 30,
                block_size=4096,
                backend="null",
                ana_group=3,
                reservations=False,
            ),
        ),
    )
    assert config.ports[0] == PortConfig(
        id=3, addr="10.0.0.1", port=4420, ana_states=((2, AnaState.OPTIMIZED),),
        referrals=(ReferralConfig(name="r", addr="10.0.0.2", port=8009, portid=4),),
    )  # fmt: skip


P0 = "ports.0"
S0 = "subsystems.0"
NVMET_ERRORS = [
    (f"{P0}.addr.trsvcid", "abc", "ports[0].addr.trsvcid", "not a port number: 'abc'"),
    (f"{P0}.addr.trsvcid", "70000", "ports[0].addr.trsvcid", "not a port number"),
    (f"{P0}.addr.trtype", "rdma", "ports[0].addr.trtype", "only 'tcp' is supported, got 'rdma'"),
    (f"{P0}.addr.trtype", _DELETE, "ports[0].addr.trtype", "only 'tcp' is supported"),
    (f"{P0}.addr.adrfam", "ipv6", "ports[0].addr.traddr", "not an IPv6 address"),
    (f"{P0}.addr.adrfam", "fc", "ports[0].addr.adrfam", "'ipv4' or 'ipv6'"),
    (f"{P0}.addr.tsas", "tls1.2", "ports[0].addr.tsas", "must be 'none' or 'tls1.3'"),
    (f"{P0}.addr", _DELETE, "ports[0].addr", "missing"),
    (f"{P0}.addr", "10.0.0.1", "ports[0].addr", "must be a table"),
    (f"{P0}.param.inline_data_size", "lots", "ports[0].param.inline_data_size", "integer"),
    (f"{P0}.ana_groups.0.ana.state", "asleep", "ports[0].ana_groups[0].ana.state", "unknown ANA"),
    (f"{P0}.ana_groups.0.grpid", 0, "ports[0].ana_groups[0]", "1..128"),
    (f"{P0}.referrals.0.addr.trtype", "fc", "ports[0].referrals[0].addr.trtype", "only 'tcp'"),
    (f"{P0}.portid", _DELETE, "ports[0].portid", "missing"),
    (f"{P0}.subsystems", ["nqn.2014-08.org.example:other"], "ports[0].subsystems[0]", "no subsystem"),
    (f"{P0}.enabled", 1, "ports[0].enabled", "unknown key"),
    (f"{S0}.attr.allow_any_host", "maybe", "subsystems[0].attr.allow_any_host", "boolean"),
    (f"{S0}.attr.qid_max", "0", "subsystems[0].attr.qid_max", "1..128"),
    (f"{S0}.attr", [], "subsystems[0].attr", "must be a table, got an array"),
    (f"{S0}.namespaces", {}, "subsystems[0].namespaces", "array of tables"),
    (f"{S0}.namespace", [], "subsystems[0].namespace", "unknown key"),
    (f"{S0}.namespaces.1.device.path", "/nonexistent/ns.img", "subsystems[0].namespaces[1].device.path", "cannot size '/nonexistent/ns.img'"),
    (f"{S0}.namespaces.1.device.path", "/", "subsystems[0].namespaces[1].device.path", "not a regular file"),
    (f"{S0}.namespaces.1.device.uuid", "not-a-uuid", "subsystems[0].namespaces[1].device.uuid", "not hexadecimal"),
    (f"{S0}.namespaces.1.device.nvmeof_emu_backend", "ram", "subsystems[0].namespaces[1].device.path", "only used by the file backend"),
    (f"{S0}.namespaces.0.nsid", "one", "subsystems[0].namespaces[0].nsid", "must be an integer"),
    (f"{S0}.namespaces.0.enable", [1], "subsystems[0].namespaces[0].enable", "must be a boolean"),
    (f"{S0}.passthru.0.enable", 1, "subsystems[0].passthru[0].enable", "passthru"),
    (f"{S0}.allowed_hosts", [7], "subsystems[0].allowed_hosts[0]", "must be a string"),
    ("hosts.0.nqn", _DELETE, "hosts[0].nqn", "missing"),
    ("hosts.0.dhchap", "x", "hosts[0].dhchap", "must be a table"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("where", "value", "path", "fragment"), NVMET_ERRORS, ids=[c[0] for c in NVMET_ERRORS]
)
def test_nvmetcli_errors(
    where: str, value: object, path: str, fragment: str, tmp_path: Path
) -> None:
    doc = json.loads(saved_document(tmp_path).read_text())
    with pytest.raises(ConfigError) as exc:
        load_nvmetcli(mutate(doc, where, value), "tcp.json")
    message = one_line(exc)
    assert message.startswith(f"tcp.json: {path}: "), message
    assert fragment in message


def test_export_default_config_shape() -> None:
    text = dump_nvmetcli_json(default_config())
    assert text.endswith("}\n")
    doc = json.loads(text)
    assert text == json.dumps(doc, sort_keys=True, indent=2) + "\n"
    assert set(doc) == {"hosts", "ports", "subsystems"}
    port = doc["ports"][0]
    assert set(port) == {"addr", "ana_groups", "param", "portid", "referrals", "subsystems"}
    assert port["addr"] == {"adrfam": "ipv4", "traddr": "127.0.0.1", "treq": "not specified",
                            "trsvcid": "4420", "trtype": "tcp"}  # fmt: skip
    assert port["ana_groups"] == [{"ana": {"state": "optimized"}, "grpid": 1}]
    assert port["param"] == {"inline_data_size": "8192"}
    assert doc["ports"][1]["ana_groups"][0]["ana"]["state"] == "non-optimized"
    sub = doc["subsystems"][0]
    assert sub["nqn"] == DEMO_NQN and sub["allowed_hosts"] == []
    assert sub["attr"]["allow_any_host"] == "1" and sub["attr"]["qid_max"] == "128"
    assert "nvmeof_emu_queue_size" not in sub
    ns = sub["namespaces"][1]
    assert ns["nsid"] == 2 and ns["enable"] == 1 and ns["ana_grpid"] == 1
    assert ns["device"] == {"path": "", "nvmeof_emu_backend": "ram", "size": 256 << 20,
                            "block_size": 4096}  # fmt: skip


def test_export_rich_extension_keys() -> None:
    doc = export_nvmetcli(RICH)
    assert doc["ports"][0]["nvmeof_emu_advertise"] == "10.0.2.2"
    assert doc["ports"][1]["addr"]["adrfam"] == "ipv6"
    ref = doc["ports"][0]["referrals"][0]
    assert ref["addr"]["portid"] == "5" and ref["enable"] == 1 and ref["name"] == "dc2"
    sub = doc["subsystems"][0]
    assert sub["nvmeof_emu_queue_size"] == 32 and sub["attr"]["serial"] == "SN-0001"
    device = sub["namespaces"][0]["device"]
    assert device["path"] == "/srv/a.img" and device["uuid"] == str(
        uuid.UUID(bytes=bytes(range(1, 17)))
    )
    assert device["eui64"] == "0102030405060708"


# -- property tests ----------------------------------------------------------------------------

ADDRS = ["127.0.0.1", "0.0.0.0", "10.1.2.3", "::1", "fd00::7", "fe80::1"]
ASCII = st.text(alphabet=string.ascii_letters + string.digits + " -_.:", min_size=1, max_size=12)
IDS = st.none() | st.binary(min_size=16, max_size=16).filter(any)


@st.composite
def namespaces(draw: st.DrawFn) -> tuple[NamespaceConfig, ...]:
    out = []
    for nsid in draw(st.lists(st.integers(1, 0xFFFFFFFE), unique=True, max_size=3)):
        block_size = draw(st.sampled_from([512, 4096]))
        backend = draw(st.sampled_from(["ram", "file", "null"]))
        out.append(NamespaceConfig(
            nsid=nsid, size=block_size * draw(st.integers(1, 1 << 30)), block_size=block_size,
            backend=backend, path=f"/srv/ns{nsid}.img" if backend == "file" else None,
            sync=draw(st.sampled_from(SYNC_MODES)) if backend == "file" else "flush",
            uuid=draw(IDS), nguid=draw(IDS),
            eui64=draw(st.none() | st.binary(min_size=8, max_size=8).filter(any)),
            ana_group=draw(st.integers(1, 128)), enabled=draw(st.booleans()),
        ))  # fmt: skip
    return tuple(out)


@st.composite
def configs(draw: st.DrawFn) -> TargetConfig:
    suffixes = draw(
        st.lists(st.from_regex(r"[a-z0-9]{1,8}", fullmatch=True), unique=True, max_size=3)
    )
    nqns = [f"nqn.2026-11.io.test:{s}" for s in suffixes]
    hosts = st.lists(st.sampled_from([HOST, "nqn.2014-08.org.example:h2"]), unique=True)
    subsystems = []
    for nqn in nqns:
        spaces = draw(namespaces())
        cntlid_min = draw(st.integers(1, 0xFFEF))
        subsystems.append(SubsystemConfig(
            nqn=nqn, namespaces=spaces, serial=draw(st.none() | ASCII),
            model=draw(ASCII), allow_any_host=draw(st.booleans()),
            allowed_hosts=tuple(draw(hosts)), max_io_queues=draw(st.integers(1, 128)),
            queue_size=draw(st.integers(2, 1024)), cntlid_min=cntlid_min,
            cntlid_max=draw(st.integers(cntlid_min, 0xFFEF)),
            max_namespaces=draw(st.integers(max((ns.nsid for ns in spaces), default=1),
                                            0xFFFFFFFE)),
            cqt_ms=draw(st.integers(0, 0xFFFF)),
        ))  # fmt: skip
    ports = []
    ids = draw(st.lists(st.integers(0, 0xFFFF), unique=True, max_size=3))
    numbers = draw(
        st.lists(st.integers(1, 65535), unique=True, min_size=len(ids), max_size=len(ids))
    )
    for port_id, number in zip(ids, numbers, strict=True):
        groups = draw(st.lists(st.integers(1, 128), unique=True, max_size=3))
        names = draw(st.lists(ASCII, unique=True, max_size=2))
        ports.append(PortConfig(
            id=port_id, addr=draw(st.sampled_from(ADDRS)), port=draw(st.sampled_from([0, number])),
            advertise=draw(st.none() | st.sampled_from(ADDRS)),
            subsystems=tuple(draw(st.lists(st.sampled_from(nqns), unique=True)) if nqns else ()),
            ana_states=tuple((g, draw(st.sampled_from(list(AnaState)))) for g in groups),
            referrals=tuple(
                ReferralConfig(name=name, addr=draw(st.sampled_from(ADDRS)),
                               port=draw(st.integers(1, 65535)), portid=draw(st.integers(0, 0xFFFF)))
                for name in names
            ),
            inline_data_size=16 * draw(st.integers(0, 65536)),
        ))  # fmt: skip
    return TargetConfig(subsystems=tuple(subsystems), ports=tuple(ports), hosts=tuple(draw(hosts)))


@settings(deadline=None, max_examples=150)
@given(configs())
def test_random_configs_round_trip_both_formats(config: TargetConfig) -> None:
    import tomllib

    validate(config, "generated")
    assert load_native(tomllib.loads(to_toml(config)), "generated.toml") == config
    assert load_native(tomllib.loads(dump_native_toml(config)), "exported.toml") == config
    assert load_nvmetcli(json.loads(dump_nvmetcli_json(config)), "generated.json") == config


KEYS = st.sampled_from(sorted({
    "subsystem", "port", "hosts", "namespace", "referral", "nqn", "nsid", "size", "block_size",
    "backend", "path", "uuid", "nguid", "eui64", "ana_group", "enabled", "id", "addr",
    "advertise", "subsystems", "inline_data_size", "ana", "name", "portid", "serial", "model",
    "allow_any_host", "allowed_hosts", "max_io_queues", "queue_size", "ports", "namespaces",
    "attr", "device", "enable", "ana_grpid", "ana_groups", "grpid", "state", "param",
    "referrals", "trtype", "traddr", "trsvcid", "adrfam", "tsas", "qid_max", "passthru",
    "nvmeof_emu_backend", "nvmeof_emu_advertise", "nvmeof_emu_queue_size", "dhchap", "1",
    "sync", "nvmeof_emu_sync",
})) | st.text(max_size=6)  # fmt: skip
SCALARS = (
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=12)
    | st.sampled_from(["tcp", "ipv4", "ipv6", "127.0.0.1", "::1", "4420", "0x10", NQN_A, HOST,
                       "optimized", "1", "/dev/nullb0", "", "ram", "file", "null", "256MiB", "/"])
)  # fmt: skip
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=5),
    max_leaves=30,
)


def _only_config_errors(load: Any, doc: object, source: str) -> None:
    message = None
    try:
        load(doc, source)
    except ConfigError as exc:
        message = str(exc)
    if message is not None:
        assert "\n" not in message
        assert message.startswith(f"{source}: ")


@settings(deadline=None, max_examples=300)
@given(st.dictionaries(KEYS, VALUES, max_size=5) | VALUES)
def test_random_documents_raise_only_config_error(doc: Any) -> None:
    _only_config_errors(load_native, doc, "random.toml")
    _only_config_errors(load_nvmetcli, doc, "random.json")


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            out += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            out += _paths(value, (*prefix, index))
    return out


@settings(deadline=None, max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.data(), st.sampled_from(["native", "nvmetcli"]))
def test_mutated_documents_raise_only_config_error(data: st.DataObject, kind: str) -> None:
    import tomllib

    if kind == "native":
        doc: Any = tomllib.loads(to_toml(RICH))
        load: Any = load_native
    else:
        doc, load = export_nvmetcli(RICH), load_nvmetcli
    for _ in range(data.draw(st.integers(1, 3))):
        *parents, last = data.draw(st.sampled_from(_paths(doc)))
        node = doc
        for part in parents:
            node = node[part]
        action = data.draw(st.sampled_from(["replace", "delete", "add"]))
        if action == "delete" and isinstance(node, dict):
            del node[last]
        elif action == "add" and isinstance(node, dict):
            node[data.draw(KEYS)] = data.draw(VALUES)
        else:
            node[last] = data.draw(VALUES)
        if not _paths(doc):
            break
    _only_config_errors(load, doc, f"mutated.{kind}")


def test_with_free_ports_keeps_everything_but_the_port() -> None:
    from target.config import default_config, with_free_ports

    base = default_config()
    free = with_free_ports(base)
    assert [p.port for p in free.ports] == [0, 0, 0]
    assert [p.id for p in free.ports] == [p.id for p in base.ports]
    assert [p.ana_states for p in free.ports] == [p.ana_states for p in base.ports]
    assert free.subsystems == base.subsystems


def test_strict_port_in_both_formats(tmp_path: Path) -> None:
    toml_file = tmp_path / "strict.toml"
    toml_file.write_text("[[port]]\nid = 1\nport = 4420\nstrict = true\n")
    (port,) = load_config(toml_file).ports
    assert port.strict
    json_file = tmp_path / "strict.json"
    json_file.write_text(json.dumps({"ports": [{
        "portid": 1, "addr": {"trtype": "tcp", "adrfam": "ipv4", "traddr": "127.0.0.1",
                              "trsvcid": "4420"}, "nvmeof_emu_strict": True}]}))  # fmt: skip
    (port,) = load_config(json_file).ports
    assert port.strict
    assert export_nvmetcli(load_config(json_file))["ports"][0]["nvmeof_emu_strict"] is True


def test_unique_discovery_nqn_in_both_formats(tmp_path: Path) -> None:
    unique = "nqn.2014-08.org.nvmexpress.discovery:uuid:0d2c8b9e-8a4f-4f57-9d1c-6f1de0a4b3c2"
    toml_file = tmp_path / "disc.toml"
    toml_file.write_text(f'discovery_nqn = "{unique}"\n')
    assert load_config(toml_file).discovery_nqn == unique
    json_file = tmp_path / "disc.json"
    json_file.write_text(json.dumps({"discovery": {"discovery_nqn": unique}}))
    config = load_config(json_file)
    assert config.discovery_nqn == unique
    assert export_nvmetcli(config)["discovery"] == {"discovery_nqn": unique}
    assert "discovery" not in export_nvmetcli(load_config(EXAMPLE))


def test_sync_mode_in_both_formats(tmp_path: Path) -> None:
    toml_file = tmp_path / "sync.toml"
    toml_file.write_text('[[subsystem]]\nnqn = "nqn.2026-11.io.test:s"\n[[subsystem.namespace]]\n'
                         'nsid = 1\nbackend = "file"\npath = "/srv/s.img"\nsync = "none"\n')  # fmt: skip
    config = load_config(toml_file)
    assert config.subsystems[0].namespaces[0].sync == "none"
    device = export_nvmetcli(config)["subsystems"][0]["namespaces"][0]["device"]
    assert device["nvmeof_emu_sync"] == "none"
    assert load_nvmetcli(export_nvmetcli(config), "x.json") == config
    assert 'sync = "none"' in dump_native_toml(config)
    # a RAM namespace has no sync mode to write; the default one reads back
    ram = load_config(EXAMPLE)
    assert all("nvmeof_emu_sync" not in ns["device"]
               for ns in export_nvmetcli(ram)["subsystems"][0]["namespaces"])  # fmt: skip
    assert "sync" not in dump_native_toml(ram)


def test_nvmetcli_sync_errors_name_the_field() -> None:
    doc = {"subsystems": [{"nqn": "nqn.2026-11.io.test:s", "namespaces": [
        {"nsid": 1, "enable": 1, "device": {"path": "", "nvmeof_emu_backend": "ram",
                                            "size": 1 << 20, "nvmeof_emu_sync": "always"}}]}]}  # fmt: skip
    with pytest.raises(ConfigError, match=r"^x\.json: subsystems\[0\]\.namespaces\[0\]\.device"
                       r"\.nvmeof_emu_sync: only used by the file backend"):  # fmt: skip
        load_nvmetcli(doc, "x.json")
