"""The control API's route handlers: JSON in, an operator action, JSON out.

Bodies that create configuration objects are the native TOML tables as JSON, with the same keys
and the same one-line errors as a configuration file: ``POST /subsystems`` takes a
``[[subsystem]]`` table (its namespaces under ``"namespace"``), ``POST /ports`` a ``[[port]]``,
``POST /subsystems/{nqn}/namespaces`` a ``[[subsystem.namespace]]``, ``POST
/ports/{id}/referrals`` a ``[[port.referral]]``. Errors are ``{"error": "<one line>"}``: 404
when the request names something that does not exist, 400 for anything else refused.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import trio
import trio.lowlevel
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from nvmeof.constants import AnaState
from target.config import ConfigError
from target.config.export import dump_native_toml, dump_nvmetcli_json, export_native
from target.config.files import (
    NAMESPACE_KEYS,
    PORT_KEYS,
    REFERRAL_KEYS,
    SUBSYSTEM_KEYS,
    load_native,
    load_nvmetcli,
    native_namespace,
    native_port,
    native_referral,
    native_subsystem,
)
from target.config.validate import FAULT_KEYS, Table, fault_rule_kwargs
from target.control.actions import NAMESPACE_FIELDS, SUBSYSTEM_ATTRIBUTES
from target.control.live import ControlError, NotFound
from target.daemon import Target
from target.state import MAX_ANA_GROUPS

#: Default time in the ANA "change" state for ``POST /ana`` with ``"via": "change"``.
DEFAULT_CHANGE_MS = 1000
#: ``GET /config?format=``: what each format is called and its media type.
CONFIG_FORMATS = {"toml": "application/toml", "nvmetcli": "application/json",
                  "json": "application/json"}  # fmt: skip


class HttpError(Exception):
    """An error answered as ``{"error": message}`` with an HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def error_response(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


async def _json(request: Request) -> dict[str, Any]:
    raw = await request.body()
    data: object = {}
    if raw.strip():
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError) as err:
            raise HttpError(400, f"the request body is not JSON: {err}") from None
    if not isinstance(data, dict):
        raise HttpError(400, "the request body must be a JSON object")
    return data


async def _body(request: Request, known: tuple[str, ...] | set[str] | frozenset[str]) -> Table:
    return Table(await _json(request), "request", "", known)


def _required(value: Any, name: str) -> Any:
    if value is None:
        raise HttpError(400, f"request: {name}: missing")
    return value


Handler = Callable[["ControlApi", Request], Awaitable[Response]]


def guarded(api: ControlApi, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """``handler`` with every refusal turned into ``{"error": ...}`` and its status."""

    async def endpoint(request: Request) -> Response:
        try:
            return await handler(api, request)
        except HttpError as err:
            return error_response(err.status, str(err))
        except NotFound as err:
            return error_response(404, str(err))
        except (ControlError, ConfigError) as err:
            return error_response(400, str(err))
        except OSError as err:  # e.g. a file backend that cannot be opened
            return error_response(400, f"{err.filename or ''}: {err.strerror or err}".lstrip(": "))

    return endpoint


def _changes(changes: list[str], status: int = 200, **extra: Any) -> JSONResponse:
    return JSONResponse({**extra, "changes": changes}, status_code=status)


#: A host's DH-HMAC-CHAP and TLS settings, as a [[host]] table names them.
HOST_FIELDS = ("dhchap_key", "dhchap_ctrl_key", "dhchap_hash", "dhchap_dhgroup", "tls_key",
               "tls_psk_derivation")  # fmt: skip


@dataclass
class ControlApi:
    """The route handlers, over one target; ``spawn`` runs background work (ANA transitions)."""

    target: Target
    registry: CollectorRegistry
    spawn: Callable[..., object] = field(repr=False)

    def _port(self, request: Request) -> int:
        port_id: int = request.path_params["port_id"]
        if port_id not in self.target.ports:
            raise NotFound(f"no port {port_id} (ports: {sorted(self.target.ports)})")
        return port_id

    # -- status, ports, ANA ----------------------------------------------------------------------

    async def status(self, request: Request) -> Response:
        return JSONResponse(self.target.status())

    async def port_down(self, request: Request) -> Response:
        port_id = self._port(request)
        mode = (await _body(request, ("mode",))).text("mode") or "reset"
        count = await self.target.port_down(port_id, mode)
        return JSONResponse({"port": port_id, "mode": mode, "connections": count})

    async def port_up(self, request: Request) -> Response:
        port_id = self._port(request)
        await _body(request, ())
        await self.target.port_up(port_id)
        return JSONResponse({"port": port_id, "mode": "up"})

    async def port_add(self, request: Request) -> Response:
        cfg = native_port(await _body(request, PORT_KEYS))
        port = await self.target.port_add(cfg)
        return JSONResponse(self.target.port_status(port), status_code=201)

    async def port_remove(self, request: Request) -> Response:
        return _changes(await self.target.port_remove(self._port(request)))

    async def port_link(self, request: Request) -> Response:
        body = await _body(request, ("nqn",))
        nqn = _required(body.text("nqn"), "nqn")
        return _changes(await self.target.port_link(self._port(request), nqn))

    async def port_unlink(self, request: Request) -> Response:
        nqn: str = request.path_params["nqn"]
        return _changes(await self.target.port_unlink(self._port(request), nqn))

    async def referral_add(self, request: Request) -> Response:
        referral = native_referral(await _body(request, REFERRAL_KEYS))
        changes = await self.target.referral_add(self._port(request), referral)
        return _changes(changes, 201)

    async def referral_remove(self, request: Request) -> Response:
        name: str = request.path_params["name"]
        return _changes(await self.target.referral_remove(self._port(request), name))

    async def ana(self, request: Request) -> Response:
        body = await _body(request, ("port", "group", "state", "via", "after_ms"))
        port_id = _required(body.integer("port"), "port")
        group = _required(body.integer("group"), "group")
        label = _required(body.text("state"), "state")
        via, after_ms = body.text("via"), body.integer("after_ms")
        if port_id not in self.target.ports:
            raise NotFound(f"no port {port_id} (ports: {sorted(self.target.ports)})")
        if via not in (None, "change"):
            raise HttpError(400, f"request: via: must be 'change', got {via!r}")
        if after_ms is not None and (via is None or after_ms < 0):
            raise HttpError(400, "request: after_ms: needs via=change and must be >= 0")
        if via is None:
            count = self.target.set_ana(port_id, group, label)
            label = self.target.ports[port_id].ana_state(group).label
            return JSONResponse({"port": port_id, "group": group, "state": label,
                                 "ana_change_count": count})  # fmt: skip
        try:  # check everything now: the background task must not fail
            state = AnaState.from_label(label)
        except ValueError as err:
            raise HttpError(400, str(err)) from None
        if not 1 <= group <= MAX_ANA_GROUPS:
            raise HttpError(400, f"ANA group {group} outside 1..{MAX_ANA_GROUPS}")
        after_ms = DEFAULT_CHANGE_MS if after_ms is None else after_ms
        before = self.target.state.ana_chgcnt
        self.spawn(self.target.set_ana_via_change, port_id, group, state, after_ms)
        # Answer once "change" is in place: the task's first step, done at its first run (the
        # target has no event for it; a few checkpoints suffice).
        with trio.move_on_after(1):
            while self.target.state.ana_chgcnt == before:
                await trio.lowlevel.checkpoint()
        return JSONResponse({"port": port_id, "group": group, "state": state.label,
                             "via": "change", "after_ms": after_ms}, status_code=202)  # fmt: skip

    async def ana_group_remove(self, request: Request) -> Response:
        group: int = request.path_params["group"]
        return _changes(await self.target.ana_group_remove(self._port(request), group))

    # -- subsystems, hosts, namespaces ----------------------------------------------------------

    async def subsystem_add(self, request: Request) -> Response:
        data = await _json(request)
        ports = data.pop("ports", [])
        if not isinstance(ports, list) or not all(
            isinstance(p, int) and not isinstance(p, bool) for p in ports
        ):
            raise HttpError(400, "request: ports: must be an array of port ids")
        cfg = native_subsystem(Table(data, "request", "", SUBSYSTEM_KEYS))
        changes = await self.target.subsystem_add(cfg, ports)
        return _changes(changes, 201, nqn=cfg.nqn)

    async def subsystem_remove(self, request: Request) -> Response:
        return _changes(await self.target.subsystem_remove(request.path_params["nqn"]))

    async def subsystem_update(self, request: Request) -> Response:
        keys = SUBSYSTEM_ATTRIBUTES
        body = await _body(request, keys)
        parsed = native_subsystem(Table({"nqn": "-", **body.data}, "request", "", keys | {"nqn"}))
        changes = {name: getattr(parsed, name) for name in body.data}
        return _changes(await self.target.subsystem_update(request.path_params["nqn"], **changes))

    async def host_allow(self, request: Request) -> Response:
        body = await _body(request, ("host",))
        host = _required(body.text("host"), "host")
        changes = await self.target.host_allow(request.path_params["nqn"], host)
        return _changes(changes, 201)

    async def host_disallow(self, request: Request) -> Response:
        params = request.path_params
        return _changes(await self.target.host_disallow(params["nqn"], params["host"]))

    async def host_add(self, request: Request) -> Response:
        body = await _body(request, ("nqn", *HOST_FIELDS))
        settings = {name: body.text(name) for name in HOST_FIELDS}
        nqn = _required(body.text("nqn"), "nqn")
        return _changes(await self.target.host_add(nqn, **settings), 201)

    async def host_set_key(self, request: Request) -> Response:
        body = await _body(request, HOST_FIELDS)
        settings = {name: body.text(name) for name in HOST_FIELDS}
        return _changes(await self.target.host_set_key(request.path_params["host"], **settings))

    async def host_remove(self, request: Request) -> Response:
        return _changes(await self.target.host_remove(request.path_params["host"]))

    async def ns_add(self, request: Request) -> Response:
        cfg = native_namespace(await _body(request, NAMESPACE_KEYS))
        nqn: str = request.path_params["nqn"]
        return _changes(await self.target.ns_add(nqn, cfg), 201, nqn=nqn, nsid=cfg.nsid)

    async def ns_remove(self, request: Request) -> Response:
        params = request.path_params
        return _changes(await self.target.ns_remove(params["nqn"], params["nsid"]))

    async def ns_update(self, request: Request) -> Response:
        params = request.path_params
        keys = NAMESPACE_FIELDS
        body = await _body(request, keys)
        parsed = native_namespace(Table({"nsid": 1, **body.data}, "request", "", keys | {"nsid"}))
        changes = {name: getattr(parsed, name) for name in body.data}
        return _changes(await self.target.ns_update(params["nqn"], params["nsid"], **changes))

    # -- reservations ----------------------------------------------------------------------------

    async def reservations_show(self, request: Request) -> Response:
        params = request.path_params
        return JSONResponse(self.target.reservations(params["nqn"], params["nsid"]))

    async def reservations_clear(self, request: Request) -> Response:
        params = request.path_params
        return JSONResponse(self.target.reservations_clear(params["nqn"], params["nsid"]))

    # -- the whole configuration -----------------------------------------------------------------

    async def config_export(self, request: Request) -> Response:
        fmt = request.query_params.get("format", "toml")
        if fmt not in CONFIG_FORMATS:
            raise HttpError(400, f"format must be one of {', '.join(CONFIG_FORMATS)}, got {fmt!r}")
        config = self.target.current_config()
        show = request.query_params.get("show_secrets", "") in ("1", "true", "yes")
        if fmt == "json":
            return JSONResponse(export_native(config, show_secrets=show))
        dump = dump_native_toml if fmt == "toml" else dump_nvmetcli_json
        text = dump(config, show_secrets=show)
        return PlainTextResponse(text, media_type=CONFIG_FORMATS[fmt])

    async def config_apply(self, request: Request) -> Response:
        body = await _body(request, ("text", "format", "source"))
        text = _required(body.text("text"), "text")
        source = body.text("source") or "request"
        fmt = body.text("format") or ("nvmetcli" if text.lstrip().startswith("{") else "toml")
        try:
            if fmt == "toml":
                # an export's hidden secrets keep the target's (target.control.live)
                wanted = load_native(tomllib.loads(text), source, hidden_secrets=True)
            elif fmt == "nvmetcli":
                wanted = load_nvmetcli(json.loads(text), source, hidden_secrets=True)
            else:
                raise HttpError(400, f"request: format: must be toml or nvmetcli, got {fmt!r}")
        except tomllib.TOMLDecodeError as err:
            raise HttpError(400, f"{source}: invalid TOML: {err}") from None
        except (ValueError, RecursionError) as err:
            if isinstance(err, ConfigError):
                raise
            raise HttpError(400, f"{source}: invalid JSON: {err}") from None
        return _changes(await self.target.apply_config(wanted, source))

    # -- capture -----------------------------------------------------------------------------------

    async def capture_get(self, request: Request) -> Response:
        directory = self.target.pcap_dir
        return JSONResponse({"dir": None if directory is None else str(directory)})

    async def capture_set(self, request: Request) -> Response:
        body = await _body(request, ("dir",))
        directory = body.text("dir")
        if "dir" not in body.data:
            raise HttpError(400, "request: dir: missing (a directory, or null to stop)")
        self.target.capture_to(directory)
        self.target.record(f"capture {directory or 'off'}")
        return await self.capture_get(request)

    # -- faults, metrics -------------------------------------------------------------------------

    async def fault_list(self, request: Request) -> Response:
        return JSONResponse(self.target.fault_list())

    async def fault_add(self, request: Request) -> Response:
        body = await _body(request, FAULT_KEYS)
        kwargs = fault_rule_kwargs(body, ports=self.target.ports,
                                   nqns=self.target.state.subsystems)  # fmt: skip
        rule = self.target.fault_add(kwargs)
        return JSONResponse(rule.describe(), status_code=201)

    async def fault_clear(self, request: Request) -> Response:
        return JSONResponse({"removed": self.target.fault_clear()})

    async def fault_remove(self, request: Request) -> Response:
        rule_id: int = request.path_params["rule_id"]
        return JSONResponse({"removed": self.target.fault_clear(rule_id)})

    async def metrics(self, request: Request) -> Response:
        return metrics_response(self.registry)

    # -- the target as a whole, scenario markers -------------------------------------------------

    async def restart(self, request: Request) -> Response:
        await _body(request, ())
        return JSONResponse(await self.target.restart())

    async def event(self, request: Request) -> Response:
        body = await _body(request, ("what", "scenario", "action"))
        what = _required(body.text("what"), "what")
        scenario, action = body.text("scenario"), body.text("action")
        for name, value in (("what", what), ("scenario", scenario), ("action", action)):
            if value is not None and (not value.strip() or not value.isprintable()):
                raise HttpError(400, f"request: {name}: must be printable text, got {value!r}")
        self.target.scenario_event(what, scenario, action)
        return JSONResponse({"what": what, "scenario": scenario, "action": action},
                            status_code=201)  # fmt: skip


def metrics_response(registry: CollectorRegistry) -> Response:
    """The Prometheus text exposition of ``registry``."""
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
