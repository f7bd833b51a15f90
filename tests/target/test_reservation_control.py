"""Operating and observing reservations on a live target: ``GET``/``DELETE
.../reservations`` through the real HTTP client, ``ctl resv`` and ``ctl status``, the
reservation metrics parsed by prometheus_client's parser, the ``resv-clear`` scenario step.
Hosts drive the reservations with real commands over loopback (raw SQEs)."""

from __future__ import annotations

import json
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
from nvmeof.constants import AdminOpcode
from nvmeof.status import StatusCode
from nvmeof.wire.reservations import (
    FEATURE_NOTIFICATION_MASK,
    LOG_RESERVATION_NOTIFICATION,
    NOTIFICATION_LOG_SIZE,
    Cptpl,
    NotificationType,
    ReservationType,
    parse_notification_log,
)
from nvmeof.wire.sqe import FEATURES_COMMAND
from target.cli import main
from target.config import NamespaceConfig, PortConfig, SubsystemConfig, TargetConfig
from target.control.aclient import AsyncControlClient
from target.control.clientbase import ControlApiError, ControlNotFound, format_endpoint
from target.control.httpapi import serve_control
from target.control.openapi import openapi_document
from target.control.scenario import parse_scenario
from target.control.scenario_run import run_scenario
from target.daemon import Target
from tests.resv_commands import CONFLICT, acquire, register, report

HOST = "127.0.0.1"
NQN = "nqn.2026-12.io.nvmeof-emu:resv-ctl"
HOST_A = "nqn.2014-08.org.nvmexpress:uuid:0d9c5e2a-6f43-4c52-9a53-1b5c3d4e5f60"
HOST_B = "nqn.2014-08.org.nvmexpress:uuid:7e1f2a3b-4c5d-4e6f-8a9b-0c1d2e3f4a5b"
KEY_A, KEY_B = 0xA1A1, 0xB2B2
#: nsid 1 serves reservations (the default), nsid 2 does not (nvmet's resv_enable = 0).
RESV_NSID, PLAIN_NSID = 1, 2


def config() -> TargetConfig:
    sub = SubsystemConfig(nqn=NQN, namespaces=(
        NamespaceConfig(nsid=RESV_NSID, size=4 << 20),
        NamespaceConfig(nsid=PLAIN_NSID, size=4 << 20, reservations=False),
    ))  # fmt: skip
    return TargetConfig(subsystems=(sub,), ports=(PortConfig(id=1, port=0, subsystems=(NQN,)),))


def host_id(hostnqn: str) -> str:
    """The Host ID our initiator derives from a host NQN, as UUID text."""
    return str(uuid.UUID(bytes=ControllerOptions(hostnqn=hostnqn).hostid))


@dataclass
class Live:
    target: Target
    client: AsyncControlClient
    address: str
    nursery: trio.Nursery

    async def connect(self, hostnqn: str) -> HostController:
        opts = ControllerOptions(hostnqn=hostnqn, kato_ms=5000, command_timeout=5, io_queues=1)
        port = self.target.ports[1].bound_port
        return await connect_controller(self.nursery, HOST, port, NQN, opts)

    def controllers_of(self, hostnqn: str) -> list[object]:
        sub = self.target.state.subsystems[NQN]
        return [c for c in sub.controllers.values() if c.hostnqn == hostnqn]


@asynccontextmanager
async def live(target_config: TargetConfig | None = None) -> AsyncIterator[Live]:
    target = Target(target_config or config())
    async with trio.open_nursery() as nursery:
        await nursery.start(target.serve)
        ends = await nursery.start(partial(serve_control, target, control=(HOST, 0),
                                           metrics=None))  # fmt: skip
        assert ends.control is not None
        async with AsyncControlClient(ends.control) as client:
            try:
                yield Live(target, client, format_endpoint(ends.control), nursery)
            finally:
                nursery.cancel_scope.cancel()


async def hold_write_exclusive(env: Live) -> tuple[HostController, HostController]:
    """Host A holds a Write Exclusive - Registrants Only reservation, host B is registered,
    and a write from a third host that is not registered was refused (one conflict)."""
    a, b = await env.connect(HOST_A), await env.connect(HOST_B)
    assert await register(a, nrkey=KEY_A, nsid=RESV_NSID) == 0
    assert await register(b, nrkey=KEY_B, nsid=RESV_NSID) == 0
    assert await acquire(a, 0, ReservationType.WRITE_EXCLUSIVE_REG_ONLY, KEY_A, nsid=RESV_NSID) == 0
    # B acquiring over A's reservation conflicts: a reservation command refused.
    refused = await acquire(b, 0, ReservationType.EXCLUSIVE_ACCESS, KEY_B, nsid=RESV_NSID)
    assert refused == CONFLICT
    return a, b


# -- the API -------------------------------------------------------------------------------------


async def test_show_lists_registrants_holder_type_and_conflicts() -> None:
    with trio.fail_after(20):
        async with live() as env:
            empty = await env.client.reservations(NQN, RESV_NSID)
            assert empty == {"nqn": NQN, "nsid": RESV_NSID, "generation": 0, "type": 0,
                             "type_name": "Reservation not held", "holder": None, "ptpl": False,
                             "can_persist": False, "conflicts": 0, "registrants": []}  # fmt: skip
            await hold_write_exclusive(env)
            info = await env.client.reservations(NQN, RESV_NSID)
            assert info["type"] == ReservationType.WRITE_EXCLUSIVE_REG_ONLY
            assert info["type_name"] == "Write Exclusive - Registrants Only Reservation"
            assert info["holder"] == host_id(HOST_A)
            assert info["generation"] == 2 and info["conflicts"] == 1
            assert info["registrants"] == [
                {"hostid": host_id(HOST_A), "key": KEY_A, "holds": True, "hosts": [HOST_A]},
                {"hostid": host_id(HOST_B), "key": KEY_B, "holds": False, "hosts": [HOST_B]},
            ]
            # What the API shows is what a host's Report says.
            seen = await report(await env.connect(HOST_B), nsid=RESV_NSID)
            assert (seen.gen, seen.rtype, seen.regctl) == (2, info["type"], 2)
            assert [str(uuid.UUID(bytes=r.hostid)) for r in seen.registrants if r.holds] == [
                info["holder"]
            ]


async def test_clear_drops_everything_notifies_registrants_and_is_audited() -> None:
    with trio.fail_after(20):
        async with live() as env:
            a, _ = await hold_write_exclusive(env)
            cleared = await env.client.reservations_clear(NQN, RESV_NSID)
            assert cleared["removed"] == 2 and cleared["notified"] == 2
            assert cleared["released_type"] == ReservationType.WRITE_EXCLUSIVE_REG_ONLY
            assert cleared["generation"] == 3
            (line,) = cleared["changes"]
            assert line == (f"reservations clear {NQN} nsid=1 registrants=2 type=3 "
                            "generation=3 notified=2")  # fmt: skip
            assert env.target.changes[-1].what == line
            info = await env.client.reservations(NQN, RESV_NSID)
            assert (info["registrants"], info["holder"], info["type"]) == ([], None, 0)
            # Each registrant's controller has a Reservation Preempted notification queued.
            for hostnqn in (HOST_A, HOST_B):
                (ctrl,) = env.controllers_of(hostnqn)
                queued = list(ctrl.reservation_log.queue)  # type: ignore[attr-defined]
                assert [(kind, nsid) for _, kind, nsid in queued] == [
                    (NotificationType.RESERVATION_PREEMPTED, RESV_NSID)
                ]
            # The hosts see it too: A may register again and take a new reservation.
            assert (await report(a, nsid=RESV_NSID)).regctl == 0
            assert await register(a, nrkey=KEY_A, nsid=RESV_NSID) == 0
            assert await acquire(a, 0, ReservationType.EXCLUSIVE_ACCESS, KEY_A, nsid=RESV_NSID) == 0


async def test_the_hosts_read_the_notification_and_a_mask_silences_it() -> None:
    with trio.fail_after(20):
        async with live() as env:
            a, b = await hold_write_exclusive(env)
            await env.client.reservations_clear(NQN, RESV_NSID)
            for ctrl in (a, b):
                page = await ctrl.get_log_page(LOG_RESERVATION_NOTIFICATION,
                                               NOTIFICATION_LOG_SIZE)  # fmt: skip
                note = parse_notification_log(page)
                assert (note.type, note.nsid) == (NotificationType.RESERVATION_PREEMPTED,
                                                  RESV_NSID)  # fmt: skip
            # Feature 0x82 masks Reservation Preempted (nvmet keeps one mask per namespace).
            await hold_write_exclusive(env)
            mask = FEATURES_COMMAND.build(dict(opcode=AdminOpcode.SET_FEATURES, nsid=RESV_NSID,
                                               fid=FEATURE_NOTIFICATION_MASK,
                                               dword11=1 << NotificationType.RESERVATION_PREEMPTED))  # fmt: skip
            assert (await a.admin_command(mask))[0].ok
            cleared = await env.client.reservations_clear(NQN, RESV_NSID)
            assert (cleared["removed"], cleared["notified"]) == (2, 0)


async def test_clear_with_nothing_registered_still_answers() -> None:
    with trio.fail_after(20):
        async with live() as env:
            cleared = await env.client.reservations_clear(NQN, RESV_NSID)
            assert (cleared["removed"], cleared["released_type"], cleared["notified"]) == (0, 0, 0)


async def test_a_clear_is_kept_through_a_restart_when_ptpl_is_on(tmp_path: Path) -> None:
    """A file namespace keeps its state through power loss once a host set PTPL: the clear
    must be saved too, or the registrations would come back with the next process."""
    disk = str(tmp_path / "disk.img")
    sub = SubsystemConfig(nqn=NQN, namespaces=(
        NamespaceConfig(nsid=1, size=4 << 20, backend="file", path=disk),))  # fmt: skip
    file_config = TargetConfig(subsystems=(sub,),
                               ports=(PortConfig(id=1, port=0, subsystems=(NQN,)),))  # fmt: skip
    with trio.fail_after(20):
        async with live(file_config) as env:
            a = await env.connect(HOST_A)
            assert await register(a, nrkey=KEY_A, nsid=RESV_NSID, cptpl=Cptpl.PERSIST) == 0
            assert await acquire(a, 0, ReservationType.WRITE_EXCLUSIVE, KEY_A, nsid=RESV_NSID) == 0
            info = await env.client.reservations(NQN, RESV_NSID)
            assert info["ptpl"] and info["can_persist"] and info["holder"] == host_id(HOST_A)
        restarted = reloaded(file_config)
        assert restarted["holder"] is not None  # kept, as PTPL says
        async with live(file_config) as env:
            await env.client.reservations_clear(NQN, RESV_NSID)
    after_clear = reloaded(file_config)
    assert (after_clear["registrants"], after_clear["holder"], after_clear["generation"],
            after_clear["ptpl"]) == ([], None, 2, True)  # fmt: skip


def reloaded(target_config: TargetConfig) -> dict[str, Any]:
    """Namespace 1's reservations as a new target process would load them."""
    state = Target(target_config).state
    try:
        resv = state.subsystems[NQN].namespaces[1].reservations
        assert resv is not None
        return resv.snapshot()
    finally:
        state.close()


async def test_unknown_names_and_namespaces_without_reservations_are_refused() -> None:
    with trio.fail_after(20):
        async with live() as env:
            client = env.client
            with pytest.raises(ControlNotFound, match=r"no subsystem 'nqn\.x:none'"):
                await client.reservations("nqn.x:none", 1)
            with pytest.raises(ControlNotFound, match=f"{NQN} has no namespace 9"):
                await client.reservations_clear(NQN, 9)
            for call in (client.reservations, client.reservations_clear):
                with pytest.raises(ControlApiError, match="does not serve reservations") as err:
                    await call(NQN, PLAIN_NSID)
                assert err.value.status == 400
            assert not any("reservations clear" in c.what for c in env.target.changes)


async def test_a_fault_rule_from_the_api_fails_an_acquire() -> None:
    """Rules name opcodes by number (``"0x11"`` as in a configuration file), reservation
    commands included."""
    with trio.fail_after(20):
        async with live() as env:
            a = await env.connect(HOST_A)
            assert await register(a, nrkey=KEY_A, nsid=RESV_NSID) == 0
            rule = await env.client.fault_add("status", opcode="0x11", status="0x83", dnr=True,
                                              nsid=RESV_NSID)  # fmt: skip
            assert (rule["opcode"], rule["status"]) == (0x11, StatusCode.RESERVATION_CONFLICT)
            refused = await acquire(a, 0, ReservationType.WRITE_EXCLUSIVE, KEY_A, nsid=RESV_NSID)
            assert refused == CONFLICT
            assert (await env.client.reservations(NQN, RESV_NSID))["holder"] is None
            await env.client.fault_remove(rule["id"])
            assert await acquire(a, 0, ReservationType.WRITE_EXCLUSIVE, KEY_A, nsid=RESV_NSID) == 0


# -- ctl -----------------------------------------------------------------------------------------


async def ctl(env: Live, *argv: str) -> int:
    args = ["ctl", "--control", env.address, *argv]
    return await trio.to_thread.run_sync(main, args, abandon_on_cancel=True)


async def test_ctl_resv_show_clear_and_status(capsys: pytest.CaptureFixture[str]) -> None:
    with trio.fail_after(30):
        async with live() as env:
            await hold_write_exclusive(env)
            assert await ctl(env, "resv", "show", NQN, "1") == 0
            shown = capsys.readouterr().out.splitlines()
            assert shown[0] == (f"namespace 1 of {NQN}: Write Exclusive - Registrants Only "
                                "Reservation (type 3, WE-RO)")  # fmt: skip
            assert shown[1] == f"  holder {host_id(HOST_A)}"
            assert "generation 2" in shown[2] and "1 reservation conflicts" in shown[2]
            assert shown[3].split() == ["HOST", "ID", "KEY", "HOLDS", "HOSTS"]
            assert shown[4].split() == [host_id(HOST_A), f"{KEY_A:#018x}", "yes", HOST_A]
            assert shown[5].split() == [host_id(HOST_B), f"{KEY_B:#018x}", "no", HOST_B]

            assert await ctl(env, "resv", "show", NQN, "1", "--json") == 0
            assert json.loads(capsys.readouterr().out)["holder"] == host_id(HOST_A)

            assert await ctl(env, "status") == 0
            status = capsys.readouterr().out.splitlines()
            at = next(i for i, line in enumerate(status) if line.strip().startswith("NSID"))
            assert status[at].split()[-1] == "RESERVATION"
            rows = {line.split()[0]: line for line in status[at + 1 : at + 3]}
            assert rows["1"].endswith("held WE-RO, 2 registrants")
            assert rows["2"].endswith("off")

            assert await ctl(env, "resv", "clear", NQN, "1") == 0
            assert capsys.readouterr().out.strip() == (
                f"cleared namespace 1 of {NQN}: 2 registrants removed, WE-RO reservation "
                "released, 2 controllers notified (generation 3)"
            )
            assert await ctl(env, "status") == 0
            assert "none, 0 registrants" in capsys.readouterr().out

            assert await ctl(env, "resv", "clear", NQN, "2") == 1
            assert "does not serve reservations" in capsys.readouterr().err


async def test_namespaces_added_live_with_and_without_reservations(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with trio.fail_after(30):
        async with live() as env:
            assert await ctl(env, "ns", "add", "--nqn", NQN, "--nsid", "3", "--size", "1M",
                             "--no-reservations") == 0  # fmt: skip
            capsys.readouterr()
            with pytest.raises(ControlApiError, match="does not serve reservations"):
                await env.client.reservations(NQN, 3)
            # Turning them on replaces the namespace under the same NSID (a new one, empty).
            await env.client.ns_update(NQN, 3, reservations=True)
            assert (await env.client.reservations(NQN, 3))["registrants"] == []
            await env.client.ns_add(NQN, 4, size="1M", reservations=False)
            namespaces = (await env.client.status())["subsystems"][0]["namespaces"]
            assert {n["nsid"]: n["reservations"] is None for n in namespaces} == {
                1: False, 2: True, 3: False, 4: True}  # fmt: skip
    ns_body = openapi_document()["paths"]["/subsystems/{nqn}/namespaces"]["post"]
    schema = ns_body["requestBody"]["content"]["application/json"]["schema"]
    assert schema["properties"]["reservations"] == {"type": "boolean"}


# -- metrics ---------------------------------------------------------------------------------------


async def test_metrics_count_conflicts_registrants_and_the_type() -> None:
    with trio.fail_after(20):
        async with live() as env:
            metrics = await env.client.metrics()
            labels = {"subsystem": NQN, "nsid": "1"}
            assert metrics.value("nvmeof_target_reservation_registrants", **labels) == 0
            assert metrics.value("nvmeof_target_reservation_type", **labels) == 0
            assert metrics.value("nvmeof_target_reservation_conflicts_total", **labels) == 0
            # A namespace without reservations has none of these series.
            assert not list(metrics.select("nvmeof_target_reservation_type", nsid="2"))

            a, _ = await hold_write_exclusive(env)
            outsider = await env.connect("nqn.2014-08.org.nvmexpress:uuid:"
                                         "99999999-0000-4000-8000-000000000000")  # fmt: skip
            refused = await outsider.write(RESV_NSID, 0, bytes(512), 512)
            assert refused.status.code == StatusCode.RESERVATION_CONFLICT
            assert (await a.write(RESV_NSID, 0, bytes(512), 512)).ok

            metrics = await env.client.metrics()
            assert metrics.value("nvmeof_target_reservation_registrants", **labels) == 2
            assert metrics.value("nvmeof_target_reservation_type", **labels) == 3
            assert metrics.value("nvmeof_target_reservation_conflicts_total", **labels) == 2
            assert metrics.value("nvmeof_target_commands_total", opcode="reservation_acquire",
                                 status="reservation_conflict") == 1  # fmt: skip

            await env.client.reservations_clear(NQN, RESV_NSID)
            metrics = await env.client.metrics()
            assert metrics.value("nvmeof_target_reservation_registrants", **labels) == 0
            assert metrics.value("nvmeof_target_reservation_type", **labels) == 0
            assert metrics.value("nvmeof_target_reservation_conflicts_total", **labels) == 2


# -- scenarios -------------------------------------------------------------------------------------


async def test_resv_clear_scenario_step(tmp_path: Path) -> None:
    scenario = parse_scenario(f'''
        name = "fence"
        [[step]]
        at = 0
        action = "resv-clear"
        nqn = "{NQN}"
        nsid = 1
    ''')  # fmt: skip
    with trio.fail_after(20):
        async with live() as env:
            await hold_write_exclusive(env)
            (result,) = await run_scenario(env.address, scenario)
            assert result.ok, result.detail
            assert result.detail == "2 registrants removed, 2 controllers notified"
            assert (await env.client.reservations(NQN, 1))["registrants"] == []
            assert env.target.scenario_steps == {("fence", "resv-clear"): 1}
