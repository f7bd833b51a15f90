"""The HTTP JSON control API and the Prometheus listener of a target (Starlette on Hypercorn/Trio).

:func:`serve_control` runs two Hypercorn servers next to a :class:`~target.daemon.Target`:

* the control API (default ``127.0.0.1:9465``): the operator actions of
  :class:`~target.control.Operations` as JSON routes (see :data:`ROUTES`, or ``GET
  /openapi.json`` for the OpenAPI 3.1 document); errors are ``{"error": "<one line>"}`` with
  HTTP 400 (a bad request) or 404 (no such port, subsystem, namespace or fault rule). Binding it
  off loopback requires a bearer token; with a token every request must carry
  ``Authorization: Bearer <token>`` (401 otherwise).
* the metrics listener (default ``127.0.0.1:9464``): ``GET /metrics``, the Prometheus text of
  :func:`target.control.metrics.target_registry` (one registry per target, no global state). The
  control API serves the same text at ``/metrics`` for convenience.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, cast

import trio
import trio.lowlevel
from hypercorn.config import Config
from hypercorn.trio import serve
from hypercorn.typing import ASGIFramework
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from nvmeof.constants import AnaState
from target.config import BACKENDS, BLOCK_SIZES, ConfigError, NamespaceConfig
from target.config.validate import FAULT_KEYS, Table, fault_rule_kwargs, validate_namespace
from target.control.actions import PORT_DOWN_MODES
from target.control.ctl import (
    DEFAULT_CONTROL,
    ControlSetupError,
    Endpoint,
    format_endpoint,
    is_loopback,
    parse_endpoint,
)
from target.control.faults import ACTIONS, QUEUE_KINDS
from target.control.live import ControlError
from target.control.metrics import target_registry
from target.daemon import Target
from target.state import MAX_ANA_GROUPS

log = logging.getLogger("nvmeof.target.http")

DEFAULT_METRICS: Endpoint = ("127.0.0.1", 9464)
#: Default time in the ANA "change" state for ``POST /ana`` with ``"via": "change"``.
DEFAULT_CHANGE_MS = 1000
ANA_LABELS = tuple(state.label for state in AnaState)


class HttpError(Exception):
    """An error answered as ``{"error": message}`` with an HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class ControlEndpoints:
    """Where :func:`serve_control` listens (the bound ports when 0 was asked); None: off."""

    control: Endpoint | None
    metrics: Endpoint | None


# -- request helpers ---------------------------------------------------------------------------


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


async def _body(request: Request, known: tuple[str, ...]) -> Table:
    raw = await request.body()
    data: object = {}
    if raw.strip():
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError) as err:
            raise HttpError(400, f"the request body is not JSON: {err}") from None
    if not isinstance(data, dict):
        raise HttpError(400, "the request body must be a JSON object")
    return Table(data, "request", "", known)


def _required(value: Any, name: str) -> Any:
    if value is None:
        raise HttpError(400, f"request: {name}: missing")
    return value


Handler = Callable[["ControlApi", Request], Awaitable[Response]]


def _guarded(api: ControlApi, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        try:
            return await handler(api, request)
        except HttpError as err:
            return _error(err.status, str(err))
        except (ControlError, ConfigError) as err:
            return _error(400, str(err))
        except OSError as err:  # e.g. a file backend that cannot be opened
            return _error(400, f"{err.filename or ''}: {err.strerror or err}".lstrip(": "))

    return endpoint


# -- the routes ----------------------------------------------------------------------------------


@dataclass
class ControlApi:
    """The route handlers, over one target; ``spawn`` runs background work (ANA transitions)."""

    target: Target
    registry: CollectorRegistry
    spawn: Callable[..., object] = field(repr=False)

    def _port(self, request: Request) -> int:
        port_id: int = request.path_params["port_id"]
        if port_id not in self.target.ports:
            raise HttpError(404, f"no port {port_id} (ports: {sorted(self.target.ports)})")
        return port_id

    def _subsystem(self, nqn: str) -> str:
        if nqn not in self.target.state.subsystems:
            raise HttpError(404, f"no subsystem {nqn!r}")
        return nqn

    def _namespace(self, nqn: str, nsid: int) -> None:
        if nsid not in self.target.state.subsystems[self._subsystem(nqn)].namespaces:
            raise HttpError(404, f"{nqn} has no namespace {nsid}")

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

    async def ana(self, request: Request) -> Response:
        body = await _body(request, ("port", "group", "state", "via", "after_ms"))
        port_id = _required(body.integer("port"), "port")
        group = _required(body.integer("group"), "group")
        label = _required(body.text("state"), "state")
        via, after_ms = body.text("via"), body.integer("after_ms")
        if port_id not in self.target.ports:
            raise HttpError(404, f"no port {port_id} (ports: {sorted(self.target.ports)})")
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

    async def ns_add(self, request: Request) -> Response:
        keys = ("nqn", "nsid", "size", "block_size", "backend", "path", "ana_group")
        body = await _body(request, keys)
        nqn = self._subsystem(_required(body.text("nqn"), "nqn"))
        kwargs: dict[str, Any] = {"nsid": _required(body.integer("nsid"), "nsid"),
                                  "size": _required(body.size("size"), "size")}  # fmt: skip
        for name in ("block_size", "ana_group"):
            if (number := body.integer(name)) is not None:
                kwargs[name] = number
        for name in ("backend", "path"):
            if (text := body.text(name)) is not None:
                kwargs[name] = text
        cfg = NamespaceConfig(**kwargs)
        validate_namespace(cfg, "request")
        self.target.ns_add(nqn, cfg)
        return JSONResponse({"nqn": nqn, "nsid": cfg.nsid, "size": cfg.size,
                             "block_size": cfg.block_size, "backend": cfg.backend,
                             "ana_group": cfg.ana_group}, status_code=201)  # fmt: skip

    async def ns_remove(self, request: Request) -> Response:
        nsid: int = request.path_params["nsid"]
        nqn = _required(request.query_params.get("nqn"), "nqn (query parameter)")
        self._namespace(nqn, nsid)
        self.target.ns_remove(nqn, nsid)
        return JSONResponse({"nqn": nqn, "nsid": nsid, "removed": True})

    async def ns_resize(self, request: Request) -> Response:
        nsid: int = request.path_params["nsid"]
        body = await _body(request, ("nqn", "size"))
        nqn = _required(body.text("nqn"), "nqn")
        size = _required(body.size("size"), "size")
        self._namespace(nqn, nsid)
        self.target.ns_resize(nqn, nsid, size)
        return JSONResponse({"nqn": nqn, "nsid": nsid, "size": size})

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
        if all(rule.id != rule_id for rule in self.target.state.faults.rules):
            raise HttpError(404, f"no fault rule {rule_id}")
        return JSONResponse({"removed": self.target.fault_clear(rule_id)})

    async def metrics(self, request: Request) -> Response:
        return metrics_response(self.registry)

    async def openapi(self, request: Request) -> Response:
        return JSONResponse(openapi_document())


def metrics_response(registry: CollectorRegistry) -> Response:
    """The Prometheus text exposition of ``registry``."""
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


# -- route table and OpenAPI document ----------------------------------------------------------

_INT = {"type": "integer", "minimum": 0}
_STR = {"type": "string"}
_CODE = {"oneOf": [_INT, {"type": "string", "pattern": r"^\s*(0[xX][0-9a-fA-F]+|[0-9]+)\s*$"}]}
_SIZE = {"oneOf": [_INT, {"type": "string", "examples": ["64M", "1GiB"]}]}


def _object(required: tuple[str, ...], **props: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "required": list(required), "additionalProperties": False,
            "properties": props}  # fmt: skip


_FAULT_BODY = _object(
    ("action",), action={"enum": list(ACTIONS)}, port=_INT, subsystem=_STR, nsid=_INT,
    opcode=_CODE, host=_STR, queue={"enum": list(QUEUE_KINDS)},
    probability={"type": "number", "minimum": 0, "maximum": 1}, every=_INT, count=_INT,
    delay_ms=_INT, status=_CODE, dnr={"type": "boolean"}, after=_INT,
    direction={"enum": ["rx", "tx"]}, duration_ms=_INT,
)  # fmt: skip


@dataclass(frozen=True)
class RouteSpec:
    """One route: what serves it and what the OpenAPI document says about it."""

    method: str
    path: str  # Starlette syntax: {name:int} for integer path parameters
    handler: Handler
    summary: str
    body: dict[str, Any] | None = None
    query: tuple[str, ...] = ()
    ok: int = 200


#: Every route of the control API.
ROUTES = (
    RouteSpec("GET", "/status", ControlApi.status,
              "Ports, subsystems, controllers, queues, connections, ANA states, faults, changes"),
    RouteSpec("POST", "/ports/{port_id:int}/down", ControlApi.port_down,
              "Take a path down (reset = TCP RST, close = FIN, blackhole, refuse new connections)",
              _object((), mode={"enum": list(PORT_DOWN_MODES), "default": "reset"})),
    RouteSpec("POST", "/ports/{port_id:int}/up", ControlApi.port_up,
              "Restore a path: accept again, resume blackholed connections"),
    RouteSpec("POST", "/ana", ControlApi.ana,
              "Set the ANA state of a group on a port (AEN to every affected controller); with "
              "via=change go through the change state for after_ms first (answered at once, 202)",
              _object(("port", "group", "state"), port=_INT, group=_INT,
                      state={"enum": list(ANA_LABELS)}, via={"enum": ["change"]},
                      after_ms=_INT)),
    RouteSpec("POST", "/namespaces", ControlApi.ns_add, "Add a namespace to a subsystem",
              _object(("nqn", "nsid", "size"), nqn=_STR, nsid=_INT, size=_SIZE,
                      block_size={"enum": list(BLOCK_SIZES)}, backend={"enum": list(BACKENDS)},
                      path=_STR, ana_group=_INT), ok=201),
    RouteSpec("DELETE", "/namespaces/{nsid:int}", ControlApi.ns_remove,
              "Remove a namespace", query=("nqn",)),
    RouteSpec("POST", "/namespaces/{nsid:int}/resize", ControlApi.ns_resize,
              "Resize a namespace (bytes, a multiple of its block size)",
              _object(("nqn", "size"), nqn=_STR, size=_SIZE)),
    RouteSpec("GET", "/faults", ControlApi.fault_list, "The active fault rules"),
    RouteSpec("POST", "/faults", ControlApi.fault_add, "Add a fault rule", _FAULT_BODY, ok=201),
    RouteSpec("DELETE", "/faults", ControlApi.fault_clear, "Remove every fault rule"),
    RouteSpec("DELETE", "/faults/{rule_id:int}", ControlApi.fault_remove,
              "Remove one fault rule"),
    RouteSpec("GET", "/metrics", ControlApi.metrics, "Prometheus metrics of the target"),
    RouteSpec("GET", "/openapi.json", ControlApi.openapi, "This OpenAPI document"),
)  # fmt: skip

_PARAM = re.compile(r"\{(\w+)(?::(\w+))?\}")


def _operation(spec: RouteSpec) -> dict[str, Any]:
    error = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    text = "text/plain" if spec.path == "/metrics" else "application/json"
    op: dict[str, Any] = {
        "summary": spec.summary,
        "operationId": spec.handler.__name__,
        "responses": {
            str(spec.ok): {"description": "done", "content": {text: {"schema": {}}}},
            "400": {"description": "bad request", **error},
            "401": {"description": "missing or wrong bearer token", **error},
            "404": {"description": "no such port, subsystem, namespace or rule", **error},
        },
    }
    params = [{"name": name, "in": "path", "required": True,
               "schema": {"type": "integer"} if kind == "int" else {"type": "string"}}
              for name, kind in _PARAM.findall(spec.path)]  # fmt: skip
    params += [{"name": name, "in": "query", "required": True, "schema": _STR}
               for name in spec.query]  # fmt: skip
    if params:
        op["parameters"] = params
    if spec.body is not None:
        op["requestBody"] = {"required": bool(spec.body["required"]),
                             "content": {"application/json": {"schema": spec.body}}}  # fmt: skip
    if spec.method == "POST" and spec.path == "/ana":
        op["responses"]["202"] = {"description": "transition started (via=change)"}
    return op


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 description of every route in :data:`ROUTES`."""
    paths: dict[str, dict[str, Any]] = {}
    for spec in ROUTES:
        path = _PARAM.sub(r"{\1}", spec.path)
        paths.setdefault(path, {})[spec.method.lower()] = _operation(spec)
    return {
        "openapi": "3.1.0",
        "info": {"title": "nvmeof-emu target control API", "version": "1",
                 "description": "Operate a running NVMe/TCP target: paths, ANA, namespaces, "
                                "faults. Off loopback every request needs the bearer token."},
        "paths": paths,
        "components": {
            "schemas": {"Error": _object(("error",), error=_STR)},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{}, {"bearer": []}],
    }  # fmt: skip


# -- application and servers --------------------------------------------------------------------


class BearerAuth:
    """ASGI middleware: every HTTP request must carry ``Authorization: Bearer <token>``."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.expected = f"Bearer {token}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            given = Headers(scope=scope).get("authorization", "").encode()
            if not hmac.compare_digest(given, self.expected):
                response = JSONResponse({"error": "missing or wrong bearer token"},
                                        status_code=401,
                                        headers={"WWW-Authenticate": "Bearer"})  # fmt: skip
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return _error(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}")


def build_app(api: ControlApi, *, token: str | None = None) -> Starlette:
    """The control API application (:data:`ROUTES`), behind :class:`BearerAuth` with a token."""
    routes = [Route(spec.path, _guarded(api, spec.handler), methods=[spec.method])
              for spec in ROUTES]  # fmt: skip
    middleware = [Middleware(BearerAuth, token=token)] if token else []
    return Starlette(routes=routes, middleware=middleware,
                     exception_handlers={HTTPException: _http_error})  # fmt: skip


def build_metrics_app(registry: CollectorRegistry) -> Starlette:
    """The metrics listener's application: ``GET /metrics``."""

    async def metrics(request: Request) -> Response:
        return metrics_response(registry)

    return Starlette(routes=[Route("/metrics", metrics, methods=["GET"])],
                     exception_handlers={HTTPException: _http_error})  # fmt: skip


def _hypercorn_config(endpoint: Endpoint) -> Config:
    config = Config()
    config.bind = [format_endpoint(endpoint)]
    config.errorlog = log
    config.accesslog = None
    config.graceful_timeout = 1.0
    config.include_server_header = False
    return config


def _server(app: Starlette, endpoint: Endpoint, stopping: trio.Event) -> Callable[..., Any]:
    config = _hypercorn_config(endpoint)
    return partial(serve, cast(ASGIFramework, app), config, shutdown_trigger=stopping.wait)


def _bound(binds: list[str]) -> Endpoint:
    endpoint = parse_endpoint(binds[0].split("://", 1)[-1])
    assert endpoint is not None
    return endpoint


async def _background(stopping: trio.Event, *, task_status: trio.TaskStatus[trio.Nursery]) -> None:
    async with trio.open_nursery() as nursery:
        task_status.started(nursery)
        await stopping.wait()
        nursery.cancel_scope.cancel()


async def serve_control(
    target: Target,
    *,
    control: Endpoint | None = DEFAULT_CONTROL,
    metrics: Endpoint | None = DEFAULT_METRICS,
    token: str | None = None,
    shutdown_trigger: Callable[[], Awaitable[object]] | None = None,
    task_status: trio.TaskStatus[ControlEndpoints] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the control API and the metrics listener of ``target`` (a serving target).

    ``control`` / ``metrics``: where to bind (port 0: any free port), None for off. Binding the
    control API off loopback without ``token`` raises :class:`ControlSetupError`. Runs until
    cancelled or until ``shutdown_trigger`` returns (e.g. an event set when the target
    stops: both servers then stop gracefully). ``task_status.started`` reports the bound
    :class:`ControlEndpoints`.
    """
    if control is not None and not token and not is_loopback(control[0]):
        raise ControlSetupError(
            f"the control API on {format_endpoint(control)} (not loopback) needs a bearer "
            "token: give --control-token-file"
        )
    registry = target_registry(target)
    stopping = trio.Event()
    async with trio.open_nursery() as nursery:
        background: trio.Nursery = await nursery.start(_background, stopping)
        bound_control = bound_metrics = None
        if control is not None:
            app = build_app(ControlApi(target, registry, background.start_soon), token=token)
            bound_control = _bound(await nursery.start(_server(app, control, stopping)))
            log.info("control API on http://%s", format_endpoint(bound_control))
        if metrics is not None:
            metrics_app = build_metrics_app(registry)
            bound_metrics = _bound(await nursery.start(_server(metrics_app, metrics, stopping)))
            log.info("metrics on http://%s/metrics", format_endpoint(bound_metrics))
        task_status.started(ControlEndpoints(bound_control, bound_metrics))
        if shutdown_trigger is not None:
            await shutdown_trigger()
            stopping.set()
