"""The HTTP JSON control API and the Prometheus listener of a target (Starlette on Hypercorn/Trio).

:func:`serve_control` runs two Hypercorn servers next to a :class:`~target.daemon.Target`:

* the control API (default ``127.0.0.1:9465``): the operator actions of
  :class:`~target.control.Operations` as JSON routes (:mod:`target.control.routes`, listed in
  :data:`target.control.openapi.ROUTES`; ``GET /openapi.json`` for the OpenAPI 3.1 document);
  errors are ``{"error": "<one line>"}`` with HTTP 400 (a bad request) or 404 (no such port,
  subsystem, namespace, host or fault rule). Binding it
  off loopback requires a bearer token; with a token every request must carry
  ``Authorization: Bearer <token>`` (401 otherwise).
* the metrics listener (default ``127.0.0.1:9464``): ``GET /metrics``, the Prometheus text of
  :func:`target.control.metrics.target_registry` (one registry per target, no global state). The
  control API serves the same text at ``/metrics`` for convenience.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, cast

import trio
import trio.lowlevel
from hypercorn.config import Config
from hypercorn.trio import serve
from hypercorn.typing import ASGIFramework
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from target.control.clientbase import (
    DEFAULT_CONTROL,
    ControlSetupError,
    Endpoint,
    format_endpoint,
    is_loopback,
    parse_endpoint,
)
from target.control.metrics import target_registry
from target.control.openapi import ROUTES, openapi_document
from target.control.routes import ControlApi, error_response, guarded, metrics_response
from target.daemon import Target

log = logging.getLogger("nvmeof.target.http")

DEFAULT_METRICS: Endpoint = ("127.0.0.1", 9464)


@dataclass(frozen=True)
class ControlEndpoints:
    """Where :func:`serve_control` listens (the bound ports when 0 was asked); None: off."""

    control: Endpoint | None
    metrics: Endpoint | None


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
    return error_response(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}")


def build_app(api: ControlApi, *, token: str | None = None) -> Starlette:
    """The control API application (:data:`ROUTES`), behind :class:`BearerAuth` with a token."""
    routes = [Route(spec.path, guarded(api, spec.handler), methods=[spec.method])
              for spec in ROUTES]  # fmt: skip
    document = openapi_document()

    async def openapi(request: Request) -> Response:
        return JSONResponse(document)

    routes.append(Route("/openapi.json", openapi, methods=["GET"]))
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
