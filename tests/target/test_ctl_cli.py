"""``nvmeof-target ctl`` against a live control API (``main`` runs in a worker thread), the
``serve`` options of the control API, and fault rules in the configuration file."""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pytest
import trio

from initiator.controller import ControllerOptions, connect_controller
from nvmeof.constants import AnaState
from target.cli import add_config_faults, build_parser, main, run_with_control
from target.config import (
    DEMO_NQN,
    ConfigError,
    NamespaceConfig,
    PortConfig,
    SubsystemConfig,
    TargetConfig,
)
from target.config.export import dump_nvmetcli_json
from target.config.files import load_config
from target.control.clientbase import format_endpoint
from target.control.httpapi import serve_control
from target.daemon import DEFAULT_DRAIN_TIMEOUT, Target

HOST = "127.0.0.1"
CANNOT_REACH = "(is the target running with --control?)"


def config() -> TargetConfig:
    sub = SubsystemConfig(nqn=DEMO_NQN, namespaces=(NamespaceConfig(nsid=1, size=16 << 20),))
    return TargetConfig(
        subsystems=(sub,),
        ports=(
            PortConfig(id=1, port=0, subsystems=(DEMO_NQN,), ana_states=((1, AnaState.OPTIMIZED),)),
            PortConfig(id=2, port=0, subsystems=(DEMO_NQN,)),
        ),
    )


@dataclass
class Env:
    target: Target
    address: str
    nursery: trio.Nursery


@asynccontextmanager
async def live(token: str | None = None) -> AsyncIterator[Env]:
    target = Target(config())
    async with trio.open_nursery() as nursery:
        await nursery.start(target.serve)
        ends = await nursery.start(
            partial(serve_control, target, control=(HOST, 0), metrics=None, token=token)
        )
        try:
            yield Env(target, format_endpoint(ends.control), nursery)
        finally:
            nursery.cancel_scope.cancel()


async def ctl(env: Env | str, *argv: str) -> int:
    """``nvmeof-target ctl --control ADDR:PORT argv...`` in a worker thread: the exit status."""
    address = env if isinstance(env, str) else env.address
    args = ["ctl", "--control", address, *argv]
    return await trio.to_thread.run_sync(main, args, abandon_on_cancel=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


# -- ctl against a live target -------------------------------------------------------------------


async def test_ctl_status_table_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    with trio.fail_after(15):
        async with live() as env:
            port = env.target.ports[1].bound_port
            ctrl = await connect_controller(env.nursery, HOST, port, DEMO_NQN,
                                            ControllerOptions(command_timeout=5))  # fmt: skip
            assert await ctl(env, "status") == 0
            out = capsys.readouterr().out
            lines = out.splitlines()
            assert lines[0].split() == ["PORT", "ADDRESS", "MODE", "LISTENING", "CONNECTIONS",
                                        "ANA", "SUBSYSTEMS"]  # fmt: skip
            assert lines[1].split() == ["1", f"{HOST}:{port}", "up", "yes", "2", "1=optimized", "1"]
            assert f"subsystem {DEMO_NQN}" in out and "16MiB" in out and ctrl.options.hostnqn in out
            assert "no fault rules" in out and "ANA change count 0, 2 connections" in out
            assert await ctl(env, "status", "--json") == 0
            document = json.loads(capsys.readouterr().out)
            assert document["ports"][0]["connections"] == 2


async def test_ctl_port_down_and_up(capsys: pytest.CaptureFixture[str]) -> None:
    with trio.fail_after(15):
        async with live() as env:
            assert await ctl(env, "port", "down", "1", "--mode", "refuse") == 0
            assert capsys.readouterr().out.startswith("port 1 down (refuse)")
            assert env.target.ports[1].mode == "refuse"
            assert await ctl(env, "port", "up", "1") == 0
            assert capsys.readouterr().out == "port 1 up\n"
            assert await ctl(env, "port", "down", "2") == 0  # reset by default
            assert capsys.readouterr().out == "port 2 down (reset): 0 connections affected\n"
            assert env.target.ports[1].mode == "up" and env.target.ports[2].mode == "reset"
            assert await ctl(env, "port", "up", "9") == 1
            assert capsys.readouterr().err == "nvmeof-target: no port 9 (ports: [1, 2])\n"


async def test_ctl_ana_set_direct_and_via_change(capsys: pytest.CaptureFixture[str]) -> None:
    with trio.fail_after(15):
        async with live() as env:
            args = ("ana", "set", "--port", "2", "--group", "1", "--state")
            assert await ctl(env, *args, "inaccessible") == 0
            assert capsys.readouterr().out == (
                "port 2 group 1: inaccessible (ANA change count 1)\n"
            )
            assert env.target.ports[2].ana_state(1) == AnaState.INACCESSIBLE
            assert await ctl(env, *args, "optimized", "--via", "change", "--after", "100") == 0
            assert capsys.readouterr().out == "port 2 group 1: change, then optimized in 100 ms\n"
            with trio.fail_after(5):
                while env.target.ports[2].ana_state(1) != AnaState.OPTIMIZED:  # noqa: ASYNC110
                    await trio.sleep(0.02)
            assert env.target.state.ana_chgcnt == 3
            assert await ctl(env, "ana", "set", "--port", "2", "--group", "0", "--state",
                             "optimized") == 1  # fmt: skip
            assert capsys.readouterr().err == "nvmeof-target: ANA group 0 outside 1..128\n"


async def test_ctl_namespaces(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    with trio.fail_after(15):
        async with live() as env:
            nss = env.target.state.subsystems[DEMO_NQN].namespaces
            base = ("--nqn", DEMO_NQN, "--nsid", "2")
            assert await ctl(env, "ns", "add", *base, "--size", "8M", "--block-size", "4096") == 0
            assert capsys.readouterr().out == (
                f"namespace add {DEMO_NQN} nsid=2 size={8 << 20} backend=ram\n"
            )
            assert nss[2].size == 8 << 20 and nss[2].block_size == 4096
            assert await ctl(env, "ns", "resize", *base, "--size", "12MiB") == 0
            assert capsys.readouterr().out == f"namespace 2 of {DEMO_NQN} resized to 12MiB\n"
            assert nss[2].size == 12 << 20
            assert await ctl(env, "ns", "remove", *base) == 0
            assert capsys.readouterr().out == f"removed namespace 2 from {DEMO_NQN}\n"
            assert list(nss) == [1]
            assert await ctl(env, "ns", "remove", *base) == 1
            assert capsys.readouterr().err == f"nvmeof-target: {DEMO_NQN} has no namespace 2\n"
            image = str(tmp_path / "ns3.img")
            assert await ctl(env, "ns", "add", "--nqn", DEMO_NQN, "--nsid", "3", "--size", "1M",
                             "--backend", "file", "--path", image, "--sync", "always") == 0  # fmt: skip
            assert capsys.readouterr().out == (
                f"namespace add {DEMO_NQN} nsid=3 size={1 << 20} backend=file sync=always\n"
            )
            assert nss[3].durability == "sync=always"


async def test_ctl_faults(capsys: pytest.CaptureFixture[str]) -> None:
    with trio.fail_after(15):
        async with live() as env:
            add = ("fault", "add", "status", "--status", "0x370", "--opcode", "0x02", "--port",
                   "1", "--dnr", "--count", "3")  # fmt: skip
            assert await ctl(env, *add) == 0
            assert capsys.readouterr().out == (
                "fault rule 1 added: status port=1 opcode=0x02 queue=io count=3 status=0x370 dnr\n"
            )
            (rule,) = env.target.state.faults.rules
            assert (rule.status, rule.opcode, rule.dnr, rule.count) == (0x370, 2, True, 3)
            assert await ctl(env, "fault", "add", "stall", "--direction", "tx", "--nqn", DEMO_NQN,
                             "--queue", "any", "--probability", "0.5") == 0  # fmt: skip
            capsys.readouterr()
            assert await ctl(env, "fault", "list") == 0
            lines = capsys.readouterr().out.splitlines()
            assert lines[0].split() == ["ID", "ACTION", "MATCHED", "FIRED", "RULE"]
            assert lines[2].split()[:2] == ["2", "stall"] and f"subsystem={DEMO_NQN}" in lines[2]
            assert await ctl(env, "fault", "list", "--json") == 0
            assert [r["id"] for r in json.loads(capsys.readouterr().out)] == [1, 2]
            assert await ctl(env, "fault", "clear", "1") == 0
            assert capsys.readouterr().out == "removed 1 fault rule\n"
            assert await ctl(env, "fault", "clear", "1") == 1
            assert capsys.readouterr().err == "nvmeof-target: no fault rule 1\n"
            assert await ctl(env, "fault", "clear") == 0
            assert capsys.readouterr().out == "removed 1 fault rule\n"
            assert await ctl(env, "fault", "add", "delay", "--port", "7") == 1
            assert capsys.readouterr().err == (
                "nvmeof-target: request: port: no port 7 (ports: [1, 2])\n"
            )


async def test_ctl_with_a_token(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("t0ken-value\n")
    with trio.fail_after(15):
        async with live(token="t0ken-value") as env:
            assert await ctl(env, "status") == 1
            assert capsys.readouterr().err == "nvmeof-target: missing or wrong bearer token\n"
            assert await ctl(env, "status", "--token-file", str(token_file)) == 0
            assert "PORT" in capsys.readouterr().out
            assert await ctl(env, "--token-file", str(tmp_path / "none"), "status") == 2
            assert "cannot read the token file" in capsys.readouterr().err


def test_ctl_cannot_reach_the_api(capsys: pytest.CaptureFixture[str]) -> None:
    address = f"{HOST}:{free_port()}"
    assert main(["ctl", "--control", address, "port", "up", "1"]) == 1
    assert capsys.readouterr().err == (
        f"nvmeof-target: cannot reach the control API at {address} {CANNOT_REACH}\n"
    )


@pytest.mark.parametrize(
    "argv",
    [
        ["ctl"],
        ["ctl", "status", "--yaml"],
        ["ctl", "port", "down"],
        ["ctl", "port", "down", "one"],
        ["ctl", "port", "down", "1", "--mode", "sideways"],
        ["ctl", "ana", "set", "--port", "1", "--group", "1", "--state", "sleepy"],
        ["ctl", "ana", "set", "--port", "1", "--group", "1", "--state", "optimized",
         "--after", "5"],
        ["ctl", "ns", "add", "--nqn", DEMO_NQN, "--nsid", "2", "--size", "lots"],
        ["ctl", "ns", "remove", "--nsid", "2"],
        ["ctl", "fault", "add", "explode"],
        ["ctl", "fault", "add", "delay", "--opcode", "zz"],
        ["ctl", "fault", "clear", "all"],
        ["ctl", "--control", "nowhere", "status"],
        ["ctl", "--control", "off", "status"],
        ["serve", "--control", "localhost"],
        ["serve", "--metrics", "127.0.0.1:70000"],
        ["serve", "--drain-timeout", "soon"],
        ["serve", "--drain-timeout", "-1"],
        ["ctl", "ns", "add", "--nqn", DEMO_NQN, "--nsid", "2", "--sync", "sometimes"],
    ],
)  # fmt: skip
def test_bad_arguments_exit_2(argv: Sequence[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "error:" in err


# -- serve: control API options ------------------------------------------------------------------


def test_serve_refuses_non_loopback_control_without_token(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert main(["serve", "--control", "0.0.0.0:9465"]) == 2
    assert capsys.readouterr().err == (
        "nvmeof-target: --control 0.0.0.0:9465 is not a loopback address: "
        "give --control-token-file\n"
    )
    missing = tmp_path / "missing"
    assert main(["serve", "--control", "0.0.0.0:9465", "--control-token-file", str(missing)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("nvmeof-target: cannot read the token file") and err.count("\n") == 1
    (tmp_path / "empty").write_text("\n")
    assert main(["serve", "--control-token-file", str(tmp_path / "empty")]) == 2
    assert "must hold one token" in capsys.readouterr().err


async def test_run_with_control_stops_when_the_target_stops() -> None:
    with trio.fail_after(15):
        target = Target(config())
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_with_control, target, (HOST, 0), (HOST, 0), None)
            while not target.listening(target.ports[2]):  # noqa: ASYNC110 - no event for it
                await trio.sleep(0.01)
            target.stop()
        assert not target.connections


# -- fault rules in the configuration file --------------------------------------------------------

TOML = f"""
[[subsystem]]
nqn = "{DEMO_NQN}"
  [[subsystem.namespace]]
  nsid = 1
[[port]]
id = 1
port = 0
subsystems = ["{DEMO_NQN}"]
"""


def test_config_faults_are_loaded_and_installed_at_start(tmp_path: Path) -> None:
    path = tmp_path / "target.toml"
    path.write_text(TOML + '[[fault]]\naction = "status"\nstatus = "0x370"\nopcode = 2\n'
                    "port = 1\nprobability = 0.5\ndnr = true\n"
                    '[[fault]]\naction = "delay"\ndelay_ms = 20\nsubsystem = "' + DEMO_NQN + '"\n')  # fmt: skip
    cfg = load_config(path)
    assert cfg.faults == (
        {"action": "status", "status": 0x370, "opcode": 2, "port": 1, "probability": 0.5,
         "dnr": True},
        {"action": "delay", "delay_ms": 20, "subsystem": DEMO_NQN},
    )  # fmt: skip
    target = Target(cfg)
    add_config_faults(target, cfg)
    rules = target.fault_list()
    assert [(r["id"], r["action"], r["status"], r["dnr"]) for r in rules] == [
        (1, "status", 0x370, True), (2, "delay", 0x370, False)]  # fmt: skip
    assert '"fault' not in dump_nvmetcli_json(cfg)  # nvmetcli has no fault rules
    target.state.close()


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        ('action = "delay"\nprobability = 2', "fault[0].probability: must be between 0 and 1, got 2.0"),
        ('action = "delay"\ncolour = "red"', "fault[0].colour: unknown key"),
        ('action = "explode"', "fault[0].action: must be one of delay, status"),
        ("port = 1", "fault[0].action: missing"),
        ('action = "status"\nstatus = "0xzz"', "fault[0].status: must be an integer, got '0xzz'"),
        ('action = "close"\nafter = 0', "fault[0].after: must be 1..4294967296, got 0"),
        ('action = "stall"\ndirection = "up"', "fault[0].direction: must be one of rx, tx"),
        ('action = "delay"\ndnr = "yes"', "fault[0].dnr: must be a boolean"),
        ('action = "delay"\nport = 9', "fault[0].port: no port 9 (ports: [1])"),
        ('action = "delay"\nsubsystem = "nqn.x:y"', "fault[0].subsystem: no subsystem"),
    ],
)  # fmt: skip
def test_config_fault_errors_name_the_field(tmp_path: Path, fault: str, message: str) -> None:
    path = tmp_path / "target.toml"
    path.write_text(TOML + "[[fault]]\n" + fault + "\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value).startswith(f"{path}: {message}"), str(err.value)


def test_serve_names_the_address_it_cannot_listen_on(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = tmp_path / "taken.toml"
        config.write_text(f'[[port]]\nid = 7\naddr = "127.0.0.1"\nport = {port}\n')
        argv = ["serve", "--config", str(config), "--control", "off", "--metrics", "off"]
        assert main(argv) == 1
    err = capsys.readouterr().err
    assert f"cannot listen: port 7 on 127.0.0.1:{port}: Address already in use" in err, err


def test_config_check_warns_about_what_it_accepts_but_ignores(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    host, stranger = "nqn.2014-08.org.example:h1", "nqn.2014-08.org.example:h2"
    doc = {
        "hosts": [{"nqn": host}],
        "ports": [],
        "subsystems": [{"nqn": "testnqn", "attr": {"allow_any_host": "0"},
                        "allowed_hosts": [host, stranger], "namespaces": []}],
    }  # fmt: skip
    path = tmp_path / "auth.json"
    path.write_text(json.dumps(doc))
    assert main(["config", "check", str(path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [
        f"warning: {path}: subsystems[0].allowed_hosts[1]: {stranger!r} is not in hosts",
        f"{path}: OK (1 warning)",
    ]


def test_serve_drain_timeout_option() -> None:
    assert build_parser().parse_args(["serve"]).drain_timeout == DEFAULT_DRAIN_TIMEOUT
    assert build_parser().parse_args(["serve", "--drain-timeout", "0.5"]).drain_timeout == 0.5
