"""TargetProcess and the in-process target as a test writer drives them: configurations from
every source, context managers that undo themselves, restart on the same ports with file-backed
data kept, and the failures that must be loud (a daemon that cannot start, an internal error)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest
import trio

from nvmeof_emu import (
    TargetFailed,
    TargetProcess,
    as_target_config,
    internal_errors,
    nvmeof_host,
    running_target,
    serve_target,
)
from nvmeof_emu.checks import ana_state_on, io_ports, opcode_number
from target.config import DEMO_NQN, NamespaceConfig, PortConfig, SubsystemConfig, TargetConfig
from target.config.export import dump_nvmetcli_json
from tests.plugin.failover import NQN, TWO_PATHS

ERROR_WITH_TRACEBACK = ('ts=2026-12-07T06:00:00.000Z level=error logger=nvmeof.target '
                        'msg="handler failed peer=127.0.0.1:1 qid=1 opcode=0x2" '
                        'exc="Traceback (most recent call last):\\n  File ...\\nKeyError: 3"')  # fmt: skip


def test_internal_error_rule() -> None:
    harmless = [
        'ts=t level=error logger=nvmeof.target msg="storage error peer=p qid=1: No space"',
        'ts=t level=info logger=nvmeof.target msg="command failed: internal error"',
        'ts=t level=warning logger=nvmeof.target msg="x" exc="Traceback (most recent call last)"',
    ]
    assert internal_errors("\n".join(harmless)) == []
    bare = "Traceback (most recent call last):\n  File x\nRuntimeError: boom"
    text = "\n".join([*harmless, ERROR_WITH_TRACEBACK, bare])
    assert internal_errors(text) == [ERROR_WITH_TRACEBACK, "Traceback (most recent call last):"]


def test_small_translations() -> None:
    assert [opcode_number(x) for x in ("read", "write", "flush", "0x05", 9)] == [2, 1, 0, 5, 9]
    with pytest.raises(ValueError, match="unknown opcode 'reed'"):
        opcode_number("reed")
    assert io_ports({1: ["a"], 2: [], 3: ["a"]}) == [1, 3]
    assert io_ports({4: []}) == [4]


def test_configuration_sources_agree(tmp_path: Path) -> None:
    config = as_target_config(TWO_PATHS)
    assert [s.nqn for s in config.subsystems] == [NQN] and [p.id for p in config.ports] == [1, 2]
    json_file = tmp_path / "config.json"
    json_file.write_text(dump_nvmetcli_json(config))
    assert as_target_config(json_file).ports == config.ports
    assert as_target_config(config) is config
    assert as_target_config(None).subsystems[0].nqn == DEMO_NQN


def test_daemon_from_an_nvmetcli_file_and_context_managers_that_undo_themselves(
    tmp_path: Path,
) -> None:
    json_file = tmp_path / "config.json"
    json_file.write_text(dump_nvmetcli_json(as_target_config(TWO_PATHS)))
    with TargetProcess(json_file, workdir=tmp_path / "t", pcap=False) as target:
        client = target.client
        assert target.nqns == [NQN] and sorted(target.ports) == [1, 2]
        assert target.discovery == target.ports[1]  # no discovery-only port: the first one
        with target.fault(status=0x370, opcode="write", count=10) as rule:
            assert (rule["opcode"], rule["status"], rule["count"]) == (0x01, 0x370, 10)
            assert [r["id"] for r in client.faults()] == [rule["id"]]
        assert client.faults() == []
        with target.ana(port=1, group=1, state="inaccessible"):
            assert ana_state_on(client.status(), 1, 1) == "inaccessible"
        assert ana_state_on(client.status(), 1, 1) == "optimized"
        with target.ana(port=2, group=7, state="non-optimized"):  # a group the port did not list
            assert ana_state_on(client.status(), 2, 7) == "non-optimized"
        assert ana_state_on(client.status(), 2, 7) is None
        with target.path_down(2, mode="blackhole"):
            assert client.status()["ports"][1]["mode"] == "blackhole"
        assert client.status()["ports"][1]["mode"] == "up"
        with target.subsystem("nqn.2026-12.io.test:extra") as nqn:
            (extra,) = [s for s in client.status()["subsystems"] if s["nqn"] == nqn]
            assert len(extra["namespaces"]) == 1
            assert all(nqn in p["subsystems"] for p in client.status()["ports"])
        assert [s["nqn"] for s in client.status()["subsystems"]] == [NQN]
        metrics = target.metrics()
        assert metrics.value("nvmeof_target_port_up", port=2) == 1
    assert not target.running


def file_backed(image: Path) -> TargetConfig:
    namespace = NamespaceConfig(nsid=1, size=1 << 20, backend="file", path=str(image))
    return TargetConfig(
        subsystems=(SubsystemConfig(nqn=NQN, namespaces=(namespace,)),),
        ports=(PortConfig(id=1, port=0, subsystems=(NQN,)),
               PortConfig(id=2, port=0, subsystems=(NQN,))),
    )  # fmt: skip


async def test_restart_serves_the_same_ports_and_keeps_file_backed_data(tmp_path: Path) -> None:
    target = TargetProcess(file_backed(tmp_path / "ns1.img"), workdir=tmp_path / "t")
    await trio.to_thread.run_sync(target.start)
    try:
        ports, pid, control = target.ports, target.pid, target.control
        with trio.fail_after(15):
            async with nvmeof_host(target) as host:
                assert (await host.verified_io(units=16)).failed == 0
                before = await host.namespace().read(0, 16)
        await trio.to_thread.run_sync(target.restart)
        assert (target.ports, target.control) == (ports, control) and target.pid != pid
        with trio.fail_after(15):
            async with nvmeof_host(target) as host:
                assert await host.namespace().read(0, 16) == before
    finally:
        await trio.to_thread.run_sync(target.stop)
    assert target.log.count("ready file") == 2  # one log across both runs


def test_a_daemon_that_cannot_start_fails_loudly(tmp_path: Path) -> None:
    broken = TargetProcess(workdir=tmp_path, command=[sys.executable, "-c", "raise SystemExit(3)"])
    with pytest.raises(TargetFailed, match=r"failed: it exited with status 3 while starting"):
        broken.start()
    assert not broken.running


def test_an_internal_error_in_the_daemon_log_fails_the_stop(tmp_path: Path) -> None:
    target = TargetProcess(workdir=tmp_path, pcap=False).start()
    with open(target.log_path, "a", encoding="utf-8") as log:  # as if a handler had raised
        log.write(ERROR_WITH_TRACEBACK + "\n")
    with pytest.raises(TargetFailed, match=r"it logged 1 internal error\(s\):\n.*handler failed"):
        target.stop()
    assert not target.running
    target.stop()  # stopping again is a no-op


def crash_inside_a_with_block(started: list[TargetProcess]) -> None:
    with TargetProcess(pcap=False) as target:
        started.append(target)
        target.kill()
        raise KeyError("the test's own failure")


def test_with_block_keeps_the_test_error_first_and_cleans_its_own_workdir() -> None:
    with TargetProcess(pcap=False) as target:
        workdir = target.workdir
        assert workdir.is_dir()
    assert not workdir.exists(), "a clean run removes the temporary directory it made"
    started: list[TargetProcess] = []
    with pytest.raises(KeyError) as raised:
        crash_inside_a_with_block(started)
    assert "exited on its own with signal SIGKILL" in "".join(raised.value.__notes__)
    assert started[0].workdir.exists(), "kept after a failure"


async def log_an_internal_error_inside_a_running_target() -> None:
    async with running_target(TWO_PATHS) as target:
        try:
            raise RuntimeError("a bug in a handler")
        except RuntimeError:
            logging.getLogger("nvmeof.target").exception("handler failed (test)")
        assert len(target.internal_errors()) == 1


async def test_inprocess_internal_error_fails_the_block() -> None:
    with pytest.raises(TargetFailed, match=r"logged 1 internal error\(s\)"):
        await log_an_internal_error_inside_a_running_target()


async def test_inprocess_task_status_form_and_context_managers(nursery: trio.Nursery) -> None:
    with trio.fail_after(10):
        target = await nursery.start(serve_target, TWO_PATHS)
        async with target.fault("delay", delay_ms=5, opcode="read") as rule:
            assert rule["opcode"] == 2
        assert await target.client.faults() == []
        async with target.ana(port=2, group=1, state="inaccessible"):
            assert ana_state_on(await target.client.status(), 2, 1) == "inaccessible"
        assert ana_state_on(await target.client.status(), 2, 1) == "non-optimized"
        async with target.subsystem("nqn.2026-12.io.test:x", ports=[2]) as nqn:
            assert nqn in target.nqns and target.port_subsystems[2] == (NQN, nqn)
        assert target.nqns == [NQN]
        target.stop()
        await target.wait_stopped()
