"""The HTTP control API over real loopback: every route through a real HTTP client (the stdlib's,
in a worker thread) against an in-process target, with an initiator watching the effect."""

from __future__ import annotations

import http.client
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any

import pytest
import trio

from initiator.controller import ControllerOptions, HostController, connect_controller
from initiator.queue import QueueClosed
from nvmeof.constants import AnaState
from target.config import (
    DEMO_NQN,
    NamespaceConfig,
    PortConfig,
    SubsystemConfig,
    TargetConfig,
    derived_ids,
)
from target.control.clientbase import ControlSetupError, Endpoint
from target.control.httpapi import build_app, serve_control
from target.control.metrics import target_registry
from target.control.openapi import ROUTES, openapi_document
from target.control.routes import ControlApi
from target.daemon import Target

HOST = "127.0.0.1"
LOOPBACK_ANY: Endpoint = (HOST, 0)


def config() -> TargetConfig:
    sub = SubsystemConfig(nqn=DEMO_NQN, namespaces=(NamespaceConfig(nsid=1, size=16 << 20),))
    return TargetConfig(
        subsystems=(sub,),
        ports=(
            PortConfig(id=1, port=0, subsystems=(DEMO_NQN,),
                       ana_states=((1, AnaState.OPTIMIZED),)),
            PortConfig(id=2, port=0, subsystems=(DEMO_NQN,),
                       ana_states=((1, AnaState.NON_OPTIMIZED),)),
        ),
    )  # fmt: skip


@dataclass
class Live:
    target: Target
    control: Endpoint
    metrics: Endpoint
    nursery: trio.Nursery
    token: str | None = None

    async def connect(self, port_id: int = 1, **options: Any) -> HostController:
        opts = ControllerOptions(**{"kato_ms": 5000, "command_timeout": 5, **options})
        port = self.target.ports[port_id].bound_port
        return await connect_controller(self.nursery, HOST, port, DEMO_NQN, opts)

    async def call(self, method: str, path: str, body: object = None, **kw: Any) -> tuple[int, Any]:
        """One request to the control API: (HTTP status, decoded JSON)."""
        kw.setdefault("token", self.token)
        status, _, data = await request(self.control, method, path, body, **kw)
        return status, json.loads(data)


async def request(
    endpoint: Endpoint, method: str, path: str, body: object = None, *,
    token: str | None = None, raw: bytes | None = None,
) -> tuple[int, str, bytes]:  # fmt: skip
    """(status, content type, body) of one HTTP/1.1 request made with http.client."""

    def blocking() -> tuple[int, str, bytes]:
        conn = http.client.HTTPConnection(*endpoint, timeout=10)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        data = raw if raw is not None else None if body is None else json.dumps(body).encode()
        try:
            conn.request(method, path, body=data, headers=headers)
            response = conn.getresponse()
            return response.status, response.getheader("content-type") or "", response.read()
        finally:
            conn.close()

    return await trio.to_thread.run_sync(blocking, abandon_on_cancel=True)


@asynccontextmanager
async def live(token: str | None = None) -> AsyncIterator[Live]:
    """A target on free ports with its control API and metrics listener on free ports."""
    target = Target(config())
    async with trio.open_nursery() as nursery:
        await nursery.start(target.serve)
        ends = await nursery.start(partial(serve_control, target, control=LOOPBACK_ANY,
                                           metrics=LOOPBACK_ANY, token=token))  # fmt: skip
        assert ends.control is not None and ends.metrics is not None
        try:
            yield Live(target, ends.control, ends.metrics, nursery, token)
        finally:
            nursery.cancel_scope.cancel()


async def until(predicate: Any) -> None:
    """Poll a condition of the model (the caller's fail_after bounds it)."""
    while not predicate():  # noqa: ASYNC110 - model state, no event to wait on
        await trio.sleep(0.01)


async def verified_io(ctrl: HostController, lba: int = 0, seed: int = 1) -> None:
    data = bytes((i * 7 + seed) & 0xFF for i in range(4096))
    assert (await ctrl.write(1, lba, data, 512)).ok
    done, buf = await ctrl.read(1, lba, 8, 512)
    assert done.ok and buf == data


# -- status and ports --------------------------------------------------------------------------


async def test_status_lists_ports_subsystems_controllers_and_ana() -> None:
    with trio.fail_after(15):
        async with live() as env:
            ctrl = await env.connect()
            status, body = await env.call("GET", "/status")
            assert status == 200
            ports = {p["id"]: p for p in body["ports"]}
            assert ports[1]["port"] == env.target.ports[1].bound_port
            assert ports[1]["mode"] == "up" and ports[1]["listening"]
            assert ports[1]["connections"] == 2 and ports[2]["connections"] == 0  # admin + I/O
            assert ports[1]["ana"] == {"1": "optimized"}
            assert ports[2]["ana"] == {"1": "non-optimized"}
            (sub,) = body["subsystems"]
            assert sub["nqn"] == DEMO_NQN
            assert sub["namespaces"][0] == {"nsid": 1, "size": 16 << 20, "block_size": 512,
                                            "backend": "ram", "durability": "volatile",
                                            "ana_group": 1, "enabled": True,
                                            "uuid": str(uuid.UUID(bytes=derived_ids(DEMO_NQN, 1)[0])),
                                            "reservations": {"type": 0, "registrants": 0,
                                                             "generation": 0}}  # fmt: skip
            (controller,) = sub["controllers"]
            assert controller["cntlid"] == ctrl.cntlid and controller["port"] == 1
            assert controller["host"] == ctrl.options.hostnqn and controller["queues"] == [0, 1]
            assert body["connections"] == 2 and body["faults"] == []


async def test_port_down_reset_closes_the_host_queues_and_up_restores() -> None:
    with trio.fail_after(15):
        async with live() as env:
            ctrl = await env.connect()
            status, body = await env.call("POST", "/ports/1/down", {"mode": "reset"})
            assert (status, body) == (200, {"port": 1, "mode": "reset", "connections": 2})
            await until(lambda: ctrl.admin.closed and ctrl.io_queues[0].closed)
            with pytest.raises(OSError, match="all attempts to connect"):
                await trio.open_tcp_stream(HOST, env.target.ports[1].bound_port)
            assert (await env.call("POST", "/ports/1/up"))[0] == 200
            await verified_io(await env.connect())
            assert "port 1 down mode=reset connections=2" in env.target.changes[0].what


async def test_port_down_refuse_keeps_existing_io_and_refuses_new_connections() -> None:
    with trio.fail_after(15):
        async with live() as env:
            ctrl = await env.connect()
            status, body = await env.call("POST", "/ports/1/down", {"mode": "refuse"})
            assert status == 200 and body["connections"] == 0
            with pytest.raises(OSError, match="all attempts to connect"):
                await trio.open_tcp_stream(HOST, env.target.ports[1].bound_port)
            await verified_io(ctrl)
            assert (await env.call("GET", "/status"))[1]["ports"][0]["listening"] is False
            await env.call("POST", "/ports/1/up")
            stream = await trio.open_tcp_stream(HOST, env.target.ports[1].bound_port)
            await stream.aclose()
            await verified_io(ctrl, seed=2)


async def test_every_port_down_then_up_keeps_the_target() -> None:
    with trio.fail_after(15):
        async with live() as env:
            for port_id in (1, 2):
                assert (await env.call("POST", f"/ports/{port_id}/down", {"mode": "close"}))[
                    0
                ] == 200
            assert (await env.call("POST", "/ports/1/up"))[0] == 200
            await verified_io(await env.connect())


async def test_blackhole_stops_answers_until_port_up() -> None:
    with trio.fail_after(15):
        async with live() as env:
            impatient = await env.connect(kato_ms=0, command_timeout=0.5)
            patient = await env.connect(kato_ms=0, command_timeout=10)
            assert (await env.call("POST", "/ports/1/down", {"mode": "blackhole"}))[0] == 200
            with pytest.raises(trio.TooSlowError):
                await impatient.read(1, 0, 8, 512)
            done: list[Any] = []

            async def pending_read() -> None:
                try:
                    done.append(await patient.read(1, 0, 8, 512))
                except QueueClosed as err:
                    done.append(err)

            env.nursery.start_soon(pending_read)
            await trio.sleep(0.3)
            assert not done  # no answer while blackholed
            assert (await env.call("GET", "/status"))[1]["ports"][0]["blackholed"] == 4
            assert (await env.call("POST", "/ports/1/up"))[0] == 200
            # The blackholed connections are reset, not resumed (no stale commands run)...
            await until(lambda: done)
            assert isinstance(done[0], QueueClosed)
            # ... and the path serves new connections again.
            fresh = await env.connect(kato_ms=0, command_timeout=5)
            assert (await fresh.read(1, 0, 8, 512))[0].ok


async def test_unknown_port_bad_mode_and_bad_bodies() -> None:
    with trio.fail_after(15):
        async with live() as env:
            assert await env.call("POST", "/ports/9/down", {"mode": "reset"}) == (
                404, {"error": "no port 9 (ports: [1, 2])"})  # fmt: skip
            status, body = await env.call("POST", "/ports/1/down", {"mode": "sideways"})
            assert status == 400 and body["error"].startswith("unknown mode 'sideways'")
            status, body = await env.call("POST", "/ports/1/down", {"mood": "reset"})
            assert (status, body["error"]) == (400, "request: mood: unknown key")
            status, body = await env.call("POST", "/ports/1/down", raw=b"{nope")
            assert status == 400 and body["error"].startswith("the request body is not JSON")
            status, body = await env.call("POST", "/ports/1/down", [1])
            assert (status, body["error"]) == (400, "the request body must be a JSON object")
            assert await env.call("GET", "/nowhere") == (404, {"error": "GET /nowhere: Not Found"})
            assert (await env.call("PUT", "/status"))[0] == 405
            assert env.target.ports[1].mode == "up"


# -- ANA -------------------------------------------------------------------------------------------


async def test_ana_set_changes_the_log_the_host_reads() -> None:
    with trio.fail_after(15):
        async with live() as env:
            ctrl = await env.connect()
            before = (await ctrl.ana_log()).chgcnt
            status, body = await env.call("POST", "/ana",
                                          {"port": 1, "group": 1, "state": "inaccessible"})  # fmt: skip
            assert status == 200 and body["ana_change_count"] == before + 1
            log = await ctrl.ana_log()
            assert log.chgcnt == before + 1
            assert {g.grpid: g.state for g in log.groups}[1] == AnaState.INACCESSIBLE
            for bad, code in (({"port": 1, "group": 1, "state": "sleepy"}, 400),
                              ({"port": 1, "group": 999, "state": "optimized"}, 400),
                              ({"port": 7, "group": 1, "state": "optimized"}, 404),
                              ({"port": 1, "state": "optimized"}, 400),
                              ({"port": 1, "group": 1, "state": "optimized", "via": "x"}, 400),
                              ({"port": 1, "group": 1, "state": "optimized", "after_ms": 5}, 400)):  # fmt: skip
                assert (await env.call("POST", "/ana", bad))[0] == code, bad
            assert (await env.call("POST", "/ana", {"port": 1, "group": 1, "state": "optimized",
                                                    "via": "change", "group_": 1}))[0] == 400  # fmt: skip
            assert env.target.state.ana_chgcnt == before + 1


async def test_ana_via_change_goes_through_change_then_the_final_state() -> None:
    with trio.fail_after(15):
        async with live() as env:
            ctrl = await env.connect()
            before = (await ctrl.ana_log()).chgcnt
            request = {"port": 1, "group": 1, "state": "non-optimized", "via": "change",
                       "after_ms": 300}  # fmt: skip
            status, body = await env.call("POST", "/ana", request)
            assert status == 202 and body["state"] == "non-optimized" and body["via"] == "change"
            log = await ctrl.ana_log()
            assert ({g.grpid: g.state for g in log.groups}[1], log.chgcnt) == (
                AnaState.CHANGE, before + 1)  # fmt: skip
            await until(lambda: env.target.state.ana_chgcnt == before + 2)
            log = await ctrl.ana_log()
            assert {g.grpid: g.state for g in log.groups}[1] == AnaState.NON_OPTIMIZED
            assert log.chgcnt == before + 2


# -- namespaces ------------------------------------------------------------------------------------


async def test_namespace_add_resize_remove_in_status_and_identify() -> None:
    with trio.fail_after(15):
        async with live() as env:
            ctrl = await env.connect()
            add = {"nsid": 3, "size": "8M", "block_size": 4096, "ana_group": 2}
            status, body = await env.call("POST", f"/subsystems/{DEMO_NQN}/namespaces", add)
            assert status == 201 and body["nsid"] == 3
            assert body["changes"] == [
                f"namespace add {DEMO_NQN} nsid=3 size={8 << 20} backend=ram"
            ]
            nsids = [n["nsid"] for n in (await env.call("GET", "/status"))[1]["subsystems"][0]
                     ["namespaces"]]  # fmt: skip
            assert nsids == [1, 3]
            assert 3 in await ctrl.active_namespaces()
            info = await ctrl.namespace(3)
            assert (info.nlbas, info.block_size, info.ana_group) == (2048, 4096, 2)
            ns3 = f"/subsystems/{DEMO_NQN}/namespaces/3"
            assert (await env.call("PATCH", ns3, {"size": 16 << 20}))[0] == 200
            assert (await ctrl.namespace(3)).nlbas == 4096
            status, _ = await env.call("DELETE", ns3)
            assert status == 200
            assert await ctrl.active_namespaces() == [1]
            assert len((await env.call("GET", "/status"))[1]["subsystems"][0]["namespaces"]) == 1


async def test_namespace_errors() -> None:
    with trio.fail_after(15):
        async with live() as env:
            nss = f"/subsystems/{DEMO_NQN}/namespaces"
            cases = [
                ("POST", nss, {"nsid": 1, "size": 4096}, 400, "already exists"),
                ("POST", "/subsystems/nqn.x:none/namespaces", {"nsid": 2, "size": 4096}, 404,
                 "no subsystem"),
                ("POST", nss, {"nsid": 2, "size": 4096, "block_size": 1000}, 400,
                 "control API: subsystem[0].namespace[1].block_size: must be 512"),
                ("POST", nss, {"nsid": 2, "size": "lots"}, 400, "request: size: not a size"),
                ("POST", nss, {"size": 4096}, 400, "request: nsid: missing"),
                ("POST", nss, {"nsid": 2, "size": 4096, "backend": "file"}, 400,
                 "namespace[1].path: must be a string"),
                ("DELETE", f"{nss}/9", None, 404, "has no namespace 9"),
                ("PATCH", f"{nss}/1", {"size": 1000}, 400, "positive multiple of 512"),
                ("PATCH", f"{nss}/1", {"nsid": 4}, 400, "request: nsid: unknown key"),
            ]  # fmt: skip
            for method, path, body, code, text in cases:
                status, answer = await env.call(method, path, body)
                assert status == code and text in answer["error"], (path, body, answer)
            assert list(env.target.state.subsystems[DEMO_NQN].namespaces) == [1]


# -- faults ----------------------------------------------------------------------------------------


async def test_fault_status_fails_reads_until_cleared() -> None:
    with trio.fail_after(15):
        async with live() as env:
            ctrl = await env.connect()
            rule = {"action": "status", "status": "0x370", "opcode": 2, "port": 1}
            status, added = await env.call("POST", "/faults", rule)
            assert status == 201 and added["status"] == 0x370 and added["id"] >= 1
            done, _ = await ctrl.read(1, 0, 8, 512)
            assert (done.status.code, done.status.dnr) == (0x370, False)
            assert (await ctrl.write(1, 0, bytes(512), 512)).ok  # opcode 1 does not match
            status, rules = await env.call("GET", "/faults")
            assert status == 200 and [(r["id"], r["fired"]) for r in rules] == [(added["id"], 1)]
            assert await env.call("DELETE", f"/faults/{added['id']}") == (200, {"removed": 1})
            await verified_io(ctrl)
            assert (await env.call("DELETE", f"/faults/{added['id']}"))[0] == 404
            for action in ("delay", "drop"):
                await env.call("POST", "/faults", {"action": action, "port": 2})
            assert await env.call("DELETE", "/faults") == (200, {"removed": 2})
            assert (await env.call("GET", "/status"))[1]["faults"] == []


async def test_fault_rules_are_checked_field_by_field() -> None:
    with trio.fail_after(15):
        async with live() as env:
            for rule, text in (
                ({"action": "explode"}, "request: action: must be one of delay"),
                ({"action": "delay", "queue": "x"}, "request: queue: must be one of any"),
                ({"action": "delay", "probability": 2}, "request: probability: must be between 0 and 1"),
                ({"action": "delay", "every": 0}, "request: every: must be 1.."),
                ({"action": "status", "status": "0x900"}, "request: status: must be 0x0..0x7ff, got 0x900"),
                ({"action": "delay", "port": 9}, "request: port: no port 9"),
                ({"action": "delay", "id": 3}, "request: id: unknown key"),
                ({"port": 1}, "request: action: missing"),
            ):  # fmt: skip
                status, body = await env.call("POST", "/faults", rule)
                assert status == 400 and body["error"].startswith(text), body
            assert env.target.fault_list() == []


# -- security, OpenAPI, metrics, lifecycle ----------------------------------------------------------


async def test_bearer_token_is_required_when_configured() -> None:
    with trio.fail_after(15):
        async with live(token="s3cret-token") as env:
            status, body = await env.call("GET", "/status", token=None)
            assert (status, body) == (401, {"error": "missing or wrong bearer token"})
            assert (await env.call("GET", "/status", token="wrong"))[0] == 401
            assert (await env.call("POST", "/ports/1/down", token="wrong"))[0] == 401
            assert env.target.ports[1].mode == "up"
            assert (await env.call("GET", "/status"))[0] == 200
            assert (await request(env.metrics, "GET", "/metrics"))[0] == 200  # its own listener


async def test_non_loopback_control_without_token_is_refused_at_start() -> None:
    with trio.fail_after(15):
        target = Target(config())
        with pytest.raises(ControlSetupError, match="needs a bearer token"):
            await serve_control(target, control=("0.0.0.0", 0), metrics=None)


async def test_openapi_document_lists_every_route() -> None:
    with trio.fail_after(15):
        async with live() as env:
            status, content_type, data = await request(env.control, "GET", "/openapi.json")
            assert status == 200 and content_type == "application/json"
    document = json.loads(data)
    assert document == json.loads(json.dumps(openapi_document()))
    assert document["openapi"].startswith("3.")
    app = build_app(ControlApi(Target(config()), target_registry(Target(config())), print))
    served = set()
    for route in app.routes:
        path = getattr(route, "path", "").replace(":int}", "}")
        for method in getattr(route, "methods", set()) - {"HEAD"}:
            served.add((path, method.lower()))
    listed = {(path, method) for path, ops in document["paths"].items() for method in ops}
    assert served == listed and len(listed) == len(ROUTES) + 1  # + /openapi.json
    for path, ops in document["paths"].items():
        for op in ops.values():
            assert op["summary"] and op["responses"]
            names = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
            assert names == {part[1:-1] for part in path.split("/") if part.startswith("{")}


async def test_metrics_on_their_own_listener_and_on_the_control_api() -> None:
    with trio.fail_after(15):
        async with live() as env:
            await env.connect()
            for endpoint in (env.metrics, env.control):
                status, content_type, data = await request(endpoint, "GET", "/metrics")
                assert status == 200 and content_type.startswith("text/plain")
                assert b"nvmeof_target_connections" in data
            assert (await request(env.metrics, "GET", "/status"))[0] == 404


async def test_serve_control_stops_with_its_shutdown_trigger() -> None:
    with trio.fail_after(15):
        target = Target(config())
        stopped = trio.Event()
        async with trio.open_nursery() as nursery:
            await nursery.start(target.serve)
            ends = await nursery.start(partial(serve_control, target, control=LOOPBACK_ANY,
                                               metrics=None, shutdown_trigger=stopped.wait))  # fmt: skip
            assert ends.metrics is None and ends.control is not None
            # A transition in progress is cancelled with the API, not left behind.
            await request(ends.control, "POST", "/ana", {"port": 1, "group": 1,
                          "state": "optimized", "via": "change", "after_ms": 60_000})  # fmt: skip
            stopped.set()
            target.stop()
        with pytest.raises(OSError, match="all attempts to connect"):
            await trio.open_tcp_stream(*ends.control)
