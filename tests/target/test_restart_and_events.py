"""``POST /restart`` (a soft restart: connections and controllers dropped, listeners rebound,
data kept) and ``POST /events`` (scenario markers in the audit trail and the metrics), through
the typed client against an in-process target, with our initiator as the host."""

from __future__ import annotations

import errno

import pytest
import trio

from initiator import ControllerOptions, open_host
from target.config import DEMO_NQN
from target.control.clientbase import ControlApiError
from target.port import Port
from tests.target.test_live_config import HOST, live, until

MIB = 1 << 20


def host_options() -> ControllerOptions:
    return ControllerOptions(io_queues=1, queue_size=32, reconnect_delay=0.05,
                             command_timeout=10.0, ctrl_loss_tmo=30.0)  # fmt: skip


async def test_restart_drops_every_connection_and_the_host_reconnects_to_the_same_data() -> None:
    with trio.fail_after(30):
        async with live() as env, open_host(host_options()) as host:
            for port_id in (1, 2):
                await host.connect(HOST, env.port(port_id), DEMO_NQN)
            head = host.namespace(DEMO_NQN, 1)
            data = bytes(range(256)) * 16
            await head.write(64, data)
            await env.client.port_down(2, "refuse")  # undone by the restart
            bound = {port_id: env.port(port_id) for port_id in (1, 2)}
            before = {c["cntlid"] for s in (await env.client.status())["subsystems"]
                      for c in s["controllers"]}  # fmt: skip
            assert len(before) == 2

            dropped = await env.client.restart()

            assert dropped["connections"] >= 4 and dropped["controllers"] == 2
            assert dropped["ports"] == [1, 2]
            status = await env.client.status()
            assert [(p["mode"], p["listening"]) for p in status["ports"]] == [("up", True)] * 2
            assert {p["id"]: p["port"] for p in status["ports"]} == bound
            assert status["changes"][-1]["what"].startswith("restart connections=")
            await until(lambda: sum(len(s.controllers) for s in env.target.state.subsystems
                                    .values()) == 2)  # fmt: skip
            back = await head.read(64, len(data) // head.block_size)
            assert bytes(back) == data
            after = {c["cntlid"] for s in (await env.client.status())["subsystems"]
                     for c in s["controllers"]}  # fmt: skip
            assert len(after) == 2


async def test_events_are_recorded_and_counted_by_scenario_and_action() -> None:
    with trio.fail_after(15):
        async with live() as env:
            await env.client.event("step[0] port-down port=1: ok", "flap", "port-down")
            await env.client.event("step[1] port-down port=1: ok", "flap", "port-down")
            await env.client.event("checkpoint")
            changes = [c["what"] for c in (await env.client.status())["changes"]]
            assert changes[-3:] == ["scenario flap: step[0] port-down port=1: ok",
                                    "scenario flap: step[1] port-down port=1: ok",
                                    "event: checkpoint"]  # fmt: skip
            metrics = await env.client.metrics()
            name = "nvmeof_target_scenario_steps_total"
            assert metrics.value(name, scenario="flap", action="port-down") == 2
            assert metrics.value(name, scenario="-", action="mark") == 1
            with pytest.raises(ControlApiError, match=r"request: what: must be printable"):
                await env.client.event("two\nlines")
            with pytest.raises(ControlApiError, match=r"request: what: missing"):
                await env.client.request("POST", "/events", {"scenario": "x"})


async def test_a_port_that_cannot_listen_again_is_named_and_the_others_still_serve() -> None:
    with trio.fail_after(15):
        async with live() as env:
            real_open = env.target.open_listener

            async def taken_for_port_1(port: Port) -> None:
                if port.id == 1:
                    raise OSError(errno.EADDRINUSE, "Address already in use")
                await real_open(port)

            env.target.open_listener = taken_for_port_1  # type: ignore[method-assign]
            with pytest.raises(ControlApiError, match=r"restarted, but cannot listen again on "
                               r"port 1 \(127\.0\.0\.1:\d+\): Address already in use"):  # fmt: skip
                await env.client.restart()
            listening = {p["id"]: p["listening"] for p in (await env.client.status())["ports"]}
            assert listening == {1: False, 2: True}
            env.target.open_listener = real_open  # type: ignore[method-assign]
            await env.client.port_up(1)  # the operator's way back
            assert all(p["listening"] for p in (await env.client.status())["ports"])
