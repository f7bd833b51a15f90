"""Live configuration through the typed control client, against an in-process target on free
ports, with our initiator as the host that sees the effect (connections dropped, discovery log,
Identify, ANA)."""

from __future__ import annotations

import inspect
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio

from initiator.controller import ControllerOptions, HostController, connect_controller
from initiator.host import open_host
from initiator.queue import QueueClosed
from nvmeof.constants import AnaState, DiscoverySubtype
from nvmeof.errors import NvmeofError
from target.config import (
    DEMO_NQN,
    NamespaceConfig,
    PortConfig,
    SubsystemConfig,
    TargetConfig,
)
from target.control.aclient import AsyncControlClient
from target.control.client import ControlClient
from target.control.clientbase import ControlApiError, ControlNotFound
from target.control.httpapi import serve_control
from target.control.openapi import ROUTES
from target.daemon import Target

ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
NEW_NQN = "nqn.2026-12.io.test:live"
HOST_A = "nqn.2014-08.org.nvmexpress:uuid:0d9c5e2a-6f43-4c52-9a53-1b5c3d4e5f60"
HOST_B = "nqn.2014-08.org.nvmexpress:uuid:7e1f2a3b-4c5d-4e6f-8a9b-0c1d2e3f4a5b"
NS_UUID = "3f2504e0-4f89-41d3-9a0c-0305e82c3301"


def config() -> TargetConfig:
    sub = SubsystemConfig(nqn=DEMO_NQN, namespaces=(NamespaceConfig(nsid=1, size=16 << 20),))
    return TargetConfig(subsystems=(sub,),
                        ports=(PortConfig(id=1, port=0, subsystems=(DEMO_NQN,)),
                               PortConfig(id=2, port=0, subsystems=(DEMO_NQN,))))  # fmt: skip


@dataclass
class Live:
    target: Target
    client: AsyncControlClient
    control: tuple[str, int]
    nursery: trio.Nursery

    def port(self, port_id: int) -> int:
        return self.target.ports[port_id].bound_port

    async def connect(self, nqn: str, port_id: int = 1, hostnqn: str = HOST_A) -> HostController:
        opts = ControllerOptions(hostnqn=hostnqn, kato_ms=5000, command_timeout=5, io_queues=1)
        return await connect_controller(self.nursery, HOST, self.port(port_id), nqn, opts)


@asynccontextmanager
async def live() -> AsyncIterator[Live]:
    target = Target(config())
    async with trio.open_nursery() as nursery:
        await nursery.start(target.serve)
        ends = await nursery.start(partial(serve_control, target, control=(HOST, 0),
                                           metrics=None))  # fmt: skip
        assert ends.control is not None
        async with AsyncControlClient(ends.control) as client:
            try:
                yield Live(target, client, ends.control, nursery)
            finally:
                nursery.cancel_scope.cancel()


async def until(predicate: Any) -> None:
    while not predicate():  # noqa: ASYNC110 - model state, no event to wait on
        await trio.sleep(0.01)


async def verified_io(ctrl: HostController, nsid: int = 1, seed: int = 1) -> None:
    data = bytes((i * 13 + seed) & 0xFF for i in range(4096))
    assert (await ctrl.write(nsid, 8, data, 512)).ok
    done, back = await ctrl.read(nsid, 8, 8, 512)
    assert done.ok and back == data


async def write_until_dropped(ctrl: HostController, failed: list[BaseException]) -> None:
    try:
        while True:
            await verified_io(ctrl)
    except (QueueClosed, NvmeofError, trio.BrokenResourceError) as err:
        failed.append(err)


# -- the client itself ------------------------------------------------------------------------------


def test_blocking_client_is_generated_from_the_async_one() -> None:
    check = subprocess.run([sys.executable, str(ROOT / "scripts" / "unasync.py"), "--check"],
                           capture_output=True, text=True, check=False)  # fmt: skip
    assert check.returncode == 0, check.stderr


#: Each route's handler (operationId) and the client method that calls it.
CLIENT_METHODS = {
    "status": "status", "config_export": "config_export", "config_apply": "config_apply",
    "subsystem_add": "subsystem_add", "subsystem_remove": "subsystem_remove",
    "subsystem_update": "subsystem_update", "host_allow": "host_allow",
    "host_disallow": "host_disallow", "ns_add": "ns_add", "ns_remove": "ns_remove",
    "ns_update": "ns_update", "host_add": "host_add", "host_remove": "host_remove",
    "host_set_key": "host_set_key",
    "port_add": "port_add", "port_remove": "port_remove", "port_down": "port_down",
    "port_up": "port_up", "port_link": "port_link", "port_unlink": "port_unlink",
    "referral_add": "referral_add", "referral_remove": "referral_remove", "ana": "set_ana",
    "ana_group_remove": "ana_group_remove", "capture_get": "capture_dir",
    "capture_set": "capture", "fault_list": "faults", "fault_add": "fault_add",
    "fault_clear": "fault_clear", "fault_remove": "fault_remove", "metrics": "metrics_text",
    "restart": "restart", "event": "event", "reservations_show": "reservations",
    "reservations_clear": "reservations_clear",
}  # fmt: skip


def test_every_route_has_a_method_in_both_clients_with_the_same_signature() -> None:
    assert {spec.handler.__name__ for spec in ROUTES} == set(CLIENT_METHODS)
    for name in {*CLIENT_METHODS.values(), "metrics", "openapi", "config", "ns_resize"}:
        async_method = getattr(AsyncControlClient, name)
        sync_method = getattr(ControlClient, name)
        assert inspect.iscoroutinefunction(async_method) and not inspect.iscoroutinefunction(
            sync_method
        )
        assert str(inspect.signature(async_method)) == str(inspect.signature(sync_method))


async def test_blocking_client_from_a_thread_and_errors_as_exceptions() -> None:
    with trio.fail_after(15):
        async with live() as env:

            def blocking() -> None:
                with ControlClient(env.control) as client:
                    assert [p["id"] for p in client.status()["ports"]] == [1, 2]
                    with pytest.raises(ControlNotFound, match=r"no subsystem 'nqn\.x:none'"):
                        client.subsystem_remove("nqn.x:none")
                    with pytest.raises(ControlApiError) as refused:
                        client.subsystem_add("nqn.not an nqn")
                    assert refused.value.status == 400
                    assert "control API: subsystem[1].nqn: " in refused.value.message

            await trio.to_thread.run_sync(blocking)
    with ControlClient(env.control, timeout=2) as gone, pytest.raises(ControlApiError) as err:
        gone.status()
    assert err.value.status == 0 and "cannot reach the control API" in str(err.value)


# -- subsystems, hosts, namespaces ----------------------------------------------------------------


async def test_subsystem_created_live_serves_its_uuid_to_its_allowed_host_only() -> None:
    with trio.fail_after(20):
        async with live() as env:
            changes = await env.client.subsystem_add(
                NEW_NQN, ports=[1], allow_any_host=False, allowed_hosts=[HOST_A],
                namespaces=[{"nsid": 1, "size": "8M", "uuid": NS_UUID}],
            )  # fmt: skip
            assert changes[0] == f"subsystem add {NEW_NQN} namespaces=1"
            assert f"port 1 link {NEW_NQN}" in changes
            ctrl = await env.connect(NEW_NQN)
            info = await ctrl.namespace(1)
            assert info.ids["uuid"] == uuid.UUID(NS_UUID).bytes and info.nlbas == 16384
            await verified_io(ctrl)
            with pytest.raises(NvmeofError, match="Connect"):
                await env.connect(NEW_NQN, hostnqn=HOST_B)
            with pytest.raises(NvmeofError, match="Connect"):  # not exposed on port 2
                await env.connect(NEW_NQN, port_id=2)
            await env.client.host_allow(NEW_NQN, HOST_B)
            await verified_io(await env.connect(NEW_NQN, hostnqn=HOST_B))
            (sub,) = [s for s in (await env.client.status())["subsystems"] if s["nqn"] == NEW_NQN]
            assert sub["allowed_hosts"] == [HOST_A, HOST_B] and len(sub["controllers"]) == 2


async def test_removing_a_subsystem_under_io_drops_its_hosts_and_recreating_it_serves_again() -> (
    None
):
    with trio.fail_after(30):
        async with live() as env:
            baseline = len(env.target.connections)
            for round_ in range(10):
                await env.client.subsystem_add(NEW_NQN, ports=[1, 2],
                                               namespaces=[{"nsid": 1, "size": "4M"}])  # fmt: skip
                ctrl = await env.connect(NEW_NQN, port_id=1 + round_ % 2)
                await verified_io(ctrl, seed=round_)
                failed: list[BaseException] = []
                env.nursery.start_soon(write_until_dropped, ctrl, failed)
                await trio.sleep(0.02)
                changes = await env.client.subsystem_remove(NEW_NQN)
                assert changes[0] == f"subsystem remove {NEW_NQN} controllers=1"
                await until(failed.__len__)  # the host sees the drop; nothing hangs
                await until(lambda: len(env.target.connections) == baseline)
                await ctrl.shutdown()
            status = await env.client.status()
            assert [s["nqn"] for s in status["subsystems"]] == [DEMO_NQN]
            assert status["connections"] == baseline == 0
            assert all(p["subsystems"] == [DEMO_NQN] for p in status["ports"])


async def test_namespaces_change_in_place_and_hosts_see_it() -> None:
    with trio.fail_after(20):
        async with live() as env:
            ctrl = await env.connect(DEMO_NQN)
            await env.client.ns_add(DEMO_NQN, 2, size="4M", block_size=4096, ana_group=3)
            assert await ctrl.active_namespaces() == [1, 2]
            await env.client.ns_update(DEMO_NQN, 2, enabled=False)
            assert await ctrl.active_namespaces() == [1]
            await env.client.ns_update(DEMO_NQN, 2, enabled=True, ana_group=4, size="8M")
            info = await ctrl.namespace(2)
            assert (info.nlbas, info.ana_group) == (2048, 4)
            # a field that cannot change in place (the block size) makes a new namespace
            changes = await env.client.ns_update(DEMO_NQN, 2, block_size=512)
            assert changes == [f"namespace update {DEMO_NQN} nsid=2 block_size=512"]
            assert (await ctrl.namespace(2)).block_size == 512
            await env.client.ns_remove(DEMO_NQN, 2)
            assert await ctrl.active_namespaces() == [1]
            with pytest.raises(ControlApiError, match=r"nsid: must be 1..1024 \(max_namespaces\)"):
                await env.client.ns_add(DEMO_NQN, 5000)
            await env.client.subsystem_update(DEMO_NQN, max_namespaces=8000, model="Live Model")
            await env.client.ns_add(DEMO_NQN, 5000, size="1M")
            fresh = await env.connect(DEMO_NQN)
            assert fresh.identify.nn == 8000 and fresh.identify.mn.strip() == "Live Model"
            assert 5000 in await fresh.active_namespaces()


async def test_cntlid_range_is_honoured_and_exhausted_with_controller_busy() -> None:
    with trio.fail_after(20):
        async with live() as env:
            await env.client.subsystem_add(NEW_NQN, ports=[1], cntlid_min=40, cntlid_max=41,
                                           namespaces=[{"nsid": 1, "size": "1M"}])  # fmt: skip
            first, second = await env.connect(NEW_NQN), await env.connect(NEW_NQN)
            assert {first.cntlid, second.cntlid} == {40, 41}
            with pytest.raises(NvmeofError, match=r"0x181|Controller Busy|CTRL_BUSY"):
                await env.connect(NEW_NQN)
            with pytest.raises(
                ControlApiError, match=r"subsystem\[1\].cntlid_max: must be 40..65519, got 3"
            ):
                await env.client.subsystem_update(NEW_NQN, cntlid_max=3)


# -- ports, referrals, ANA, discovery -------------------------------------------------------------


async def discovery(env: Live, port_id: int = 1) -> list[Any]:
    async with open_host() as host:
        return await host.discover(HOST, env.port(port_id))


async def test_ports_created_linked_unlinked_and_removed_live() -> None:
    with trio.fail_after(20):
        async with live() as env:
            port = await env.client.port_add(3, subsystems=[DEMO_NQN], ana={1: "non-optimized"})
            assert port["port"] == env.port(3) and port["listening"] and port["port"] > 0
            ctrl = await env.connect(DEMO_NQN, port_id=3)
            await verified_io(ctrl)
            assert (await ctrl.ana_log()).groups[0].state == AnaState.NON_OPTIMIZED
            entries = await discovery(env, 3)
            assert (3, str(env.port(3))) in {(e.portid, e.trsvcid) for e in entries}
            changes = await env.client.port_unlink(3, DEMO_NQN)
            assert changes == [f"port 3 unlink {DEMO_NQN} controllers=1"]
            with pytest.raises((QueueClosed, NvmeofError, trio.BrokenResourceError)):
                await verified_io(ctrl)
            await env.client.port_link(3, DEMO_NQN)
            ctrl = await env.connect(DEMO_NQN, port_id=3)
            assert await env.client.port_remove(3) == ["port remove 3 connections=2"]
            with pytest.raises((QueueClosed, NvmeofError, trio.BrokenResourceError)):
                await verified_io(ctrl)
            with pytest.raises(OSError, match="all attempts to connect"):
                await trio.open_tcp_stream(HOST, port["port"])
            with pytest.raises(ControlApiError, match="already exists"):
                await env.client.port_add(1)
            with pytest.raises(ControlApiError, match=r"port\[2\].subsystems\[0\]: no subsystem"):
                await env.client.port_add(4, subsystems=["nqn.x:none"])


async def test_referrals_and_new_subsystems_reach_the_discovery_log() -> None:
    with trio.fail_after(20):
        async with live() as env:
            before = await discovery(env)
            await env.client.referral_add(1, "dc2", "192.0.2.7", port=8009, portid=9)
            await env.client.subsystem_add(NEW_NQN, ports=[1])
            entries = await discovery(env)
            assert len(entries) == len(before) + 2
            (ref,) = [e for e in entries if e.subtype == DiscoverySubtype.REFERRAL]
            assert (ref.traddr, ref.trsvcid, ref.portid) == ("192.0.2.7", "8009", 9)
            assert NEW_NQN in {e.subnqn for e in entries}
            await env.client.referral_remove(1, "dc2")
            await env.client.subsystem_remove(NEW_NQN)
            assert len(await discovery(env)) == len(before)
            with pytest.raises(ControlNotFound, match="no referral 'dc2'"):
                await env.client.referral_remove(1, "dc2")


async def test_ana_group_state_set_and_forgotten() -> None:
    with trio.fail_after(20):
        async with live() as env:
            ctrl = await env.connect(DEMO_NQN)
            await env.client.set_ana(1, 2, "inaccessible")
            states = {g.grpid: g.state for g in (await ctrl.ana_log()).groups}
            assert states == {1: AnaState.OPTIMIZED, 2: AnaState.INACCESSIBLE}
            await env.client.ana_group_remove(1, 2)
            assert {g.grpid for g in (await ctrl.ana_log()).groups} == {1}


# -- the whole configuration ---------------------------------------------------------------------


async def test_export_then_apply_changes_nothing_and_apply_brings_the_difference() -> None:
    with trio.fail_after(20):
        async with live() as env:
            await env.client.subsystem_add(NEW_NQN, ports=[2], namespaces=[{"nsid": 7}])
            text = await env.client.config_export()
            assert await env.client.config_apply(text) == []
            as_json = await env.client.config_export("nvmetcli")
            assert await env.client.config_apply(as_json) == []
            ctrl = await env.connect(NEW_NQN, port_id=2)
            # the file without NEW_NQN and with a third port: the difference is applied
            wanted = text.replace(NEW_NQN, DEMO_NQN + "-gone")
            changes = await env.client.config_apply(wanted)
            assert f"subsystem remove {NEW_NQN} controllers=1" in changes
            assert f"subsystem add {DEMO_NQN}-gone namespaces=1" in changes
            with pytest.raises((QueueClosed, NvmeofError, trio.BrokenResourceError)):
                await verified_io(ctrl)
            assert (await env.client.config())["subsystem"][1]["nqn"] == DEMO_NQN + "-gone"
            with pytest.raises(ControlApiError, match=r"^live\.toml: invalid TOML"):
                await env.client.config_apply("[[subsystem]", source="live.toml")
            with pytest.raises(ControlApiError, match=r"^x.toml: subsystem\[0\].nqn: "):
                await env.client.config_apply('[[subsystem]]\nnqn = "b d"\n', source="x.toml")
            assert (await env.client.config())["subsystem"][1]["nqn"] == DEMO_NQN + "-gone"


@pytest.mark.parametrize(
    ("name", "refusal"),
    [("tcp.json", None), ("loop.json", "loop"), ("rdma.json", "rdma"), ("fc.json", "fc")],
)
async def test_nvmetcli_example_files_load_or_name_the_transport(
    name: str, refusal: str | None, tmp_path: Path
) -> None:
    path = tmp_path / name
    path.write_text(NVMETCLI_EXAMPLES[name])
    with trio.fail_after(20):
        async with live() as env:
            if refusal is None:
                changes = await env.client.config_apply_file(path)
                assert any(line.startswith("subsystem add testnqn") for line in changes)
                assert {p["id"] for p in (await env.client.status())["ports"]} == {2}
            else:
                with pytest.raises(ControlApiError) as err:
                    await env.client.config_apply_file(path)
                assert err.value.message.startswith(f"{name}: ports[0].addr.trtype: ")
                assert repr(refusal) in err.value.message and "\n" not in err.value.message


#: The shape of nvmetcli's own examples (its repository's tcp.json, loop.json, rdma.json,
#: fc.json), with a file-less namespace so that the test does not need a block device.
_SUBSYSTEM = ('{"attr": {"allow_any_host": "1"}, "namespaces": [{"device": {"nguid": '
              '"ef90689c-6c46-d44c-89c1-4067801309a8", "path": "", "size": 1048576}, '
              '"enable": 1, "nsid": 1}], "nqn": "testnqn"}')  # fmt: skip
_PORT = ('{{"addr": {{"adrfam": "{fam}", "traddr": "{addr}", "treq": "not specified", '
         '"trsvcid": "{svc}", "trtype": "{tr}"}}, "portid": 2, "referrals": [], '
         '"subsystems": ["testnqn"]}}')  # fmt: skip
NVMETCLI_EXAMPLES = {
    name: f'{{"hosts": [], "ports": [{port}], "subsystems": [{_SUBSYSTEM}]}}'
    for name, port in (
        ("tcp.json", _PORT.format(fam="ipv4", addr="127.0.0.1", svc="0", tr="tcp")),
        ("loop.json", _PORT.format(fam="", addr="", svc="", tr="loop")),
        ("rdma.json", _PORT.format(fam="ipv4", addr="192.168.6.68", svc="4420", tr="rdma")),
        ("fc.json", _PORT.format(fam="fc", addr="nn-0x1000000044001123:pn-0x2000000055001123",
                                 svc="none", tr="fc")),
    )
}  # fmt: skip


async def test_file_namespace_sync_mode_added_shown_and_changed_in_place(tmp_path: Path) -> None:
    image = str(tmp_path / "live.img")
    with trio.fail_after(20):
        async with live() as env:
            await env.client.ns_add(DEMO_NQN, 2, size="1M", backend="file", path=image,
                                    sync="always")  # fmt: skip
            backend = env.target.state.subsystems[DEMO_NQN].namespaces[2].backend
            status = await env.client.status()
            durability = {n["nsid"]: n["durability"] for n in status["subsystems"][0]["namespaces"]}
            assert durability == {1: "volatile", 2: "sync=always"}
            changes = await env.client.ns_update(DEMO_NQN, 2, sync="none")
            assert changes == [f"namespace update {DEMO_NQN} nsid=2 sync='none'"]
            ns = env.target.state.subsystems[DEMO_NQN].namespaces[2]
            assert ns.backend is backend and ns.durability == "sync=none"  # same open file
            exported = await env.client.config_export("toml")
            assert 'sync = "none"' in exported
            with pytest.raises(ControlApiError, match=r"sync: only used by the file backend"):
                await env.client.ns_add(DEMO_NQN, 3, size="1M", sync="always")
            with pytest.raises(ControlApiError, match=r"sync: must be one of flush, always, none"):
                await env.client.ns_update(DEMO_NQN, 2, sync="later")
