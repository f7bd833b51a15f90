"""The control API's route table and its OpenAPI 3.1 description (``GET /openapi.json``).

:data:`ROUTES` is the one list of routes: the application is built from it
(:func:`target.control.httpapi.build_app`), the OpenAPI document is generated from it, and the
client's tests check that every route has a client method.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from nvmeof.constants import AnaState
from target.config import BACKENDS, BLOCK_SIZES, SYNC_MODES
from target.control.actions import PORT_DOWN_MODES
from target.control.faults import ACTIONS, QUEUE_KINDS
from target.control.routes import CONFIG_FORMATS, HOST_FIELDS, ControlApi, Handler

ANA_LABELS = tuple(state.label for state in AnaState)

_INT = {"type": "integer", "minimum": 0}
_BOOL = {"type": "boolean"}
_STR = {"type": "string"}
_STRS = {"type": "array", "items": _STR}
_CODE = {"oneOf": [_INT, {"type": "string", "pattern": r"^\s*(0[xX][0-9a-fA-F]+|[0-9]+)\s*$"}]}
_SIZE = {"oneOf": [_INT, {"type": "string", "examples": ["64M", "1GiB"]}]}


def _object(required: tuple[str, ...], **props: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "required": list(required), "additionalProperties": False,
            "properties": props}  # fmt: skip


_FAULT_BODY = _object(
    ("action",), action={"enum": list(ACTIONS)}, port=_INT, subsystem=_STR, nsid=_INT,
    opcode=_CODE, fctype=_CODE, host=_STR, queue={"enum": list(QUEUE_KINDS)},
    probability={"type": "number", "minimum": 0, "maximum": 1}, every=_INT, count=_INT,
    delay_ms=_INT, status=_CODE, dnr=_BOOL, after=_INT,
    direction={"enum": ["rx", "tx"]}, duration_ms=_INT,
)  # fmt: skip
_NAMESPACE_FIELDS: dict[str, dict[str, Any]] = dict(
    size=_SIZE, block_size={"enum": list(BLOCK_SIZES)}, backend={"enum": list(BACKENDS)},
    path=_STR, uuid=_STR, nguid=_STR, eui64=_STR, ana_group=_INT, enabled=_BOOL,
    reservations=_BOOL, sync={"enum": list(SYNC_MODES)},
)  # fmt: skip
_NAMESPACE_BODY = _object(("nsid",), nsid=_INT, **_NAMESPACE_FIELDS)
_SUBSYSTEM_ATTRIBUTES: dict[str, dict[str, Any]] = dict(
    serial=_STR, model=_STR, allow_any_host=_BOOL, allowed_hosts=_STRS, max_io_queues=_INT,
    queue_size=_INT, cntlid_min=_INT, cntlid_max=_INT, max_namespaces=_INT, cqt_ms=_INT,
)  # fmt: skip
_REFERRAL_BODY = _object(("name", "addr"), name=_STR, addr=_STR, port=_INT, portid=_INT)
_PORT_BODY = _object(
    ("id",), id=_INT, addr=_STR, port=_INT, advertise=_STR, subsystems=_STRS,
    inline_data_size=_INT, strict=_BOOL, tls={"enum": ["required", "allowed"]},
    ana={"type": "object", "additionalProperties": {"enum": list(ANA_LABELS)}},
    referral={"type": "array", "items": _REFERRAL_BODY},
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


_NQN = "/subsystems/{nqn}"
_PORT = "/ports/{port_id:int}"

#: Every route of the control API.
ROUTES = (
    RouteSpec("GET", "/status", ControlApi.status,
              "Ports, subsystems, controllers, queues, connections, ANA states, faults, changes"),
    # -- the whole configuration
    RouteSpec("GET", "/config", ControlApi.config_export,
              "The live configuration: native TOML (format=toml, default), nvmetcli JSON "
              "(format=nvmetcli) or the native document as JSON (format=json); DH-HMAC-CHAP "
              "secrets read (hidden) unless show_secrets=1 (applied back, (hidden) keeps them)",
              query=("format", "show_secrets")),
    RouteSpec("PUT", "/config", ControlApi.config_apply,
              "Bring the target to a configuration (native TOML or nvmetcli JSON text) by "
              "adding and removing the difference; answers the changes made",
              _object(("text",), text=_STR, format={"enum": ["toml", "nvmetcli"]}, source=_STR)),
    # -- subsystems, hosts, namespaces
    RouteSpec("POST", "/subsystems", ControlApi.subsystem_add,
              "Create a subsystem (a [[subsystem]] table as JSON, namespaces under "
              "\"namespace\"), exposed on the ports listed in \"ports\"",
              _object(("nqn",), nqn=_STR, ports={"type": "array", "items": _INT},
                      namespace={"type": "array", "items": _NAMESPACE_BODY},
                      **_SUBSYSTEM_ATTRIBUTES), ok=201),
    RouteSpec("DELETE", _NQN, ControlApi.subsystem_remove,
              "Remove a subsystem: its controllers are dropped, no port exposes it"),
    RouteSpec("PATCH", _NQN, ControlApi.subsystem_update,
              "Change subsystem attributes (for controllers created afterwards)",
              _object((), **_SUBSYSTEM_ATTRIBUTES)),
    RouteSpec("POST", f"{_NQN}/hosts", ControlApi.host_allow, "Allow a host NQN to connect",
              _object(("host",), host=_STR), ok=201),
    RouteSpec("DELETE", f"{_NQN}/hosts/{{host}}", ControlApi.host_disallow,
              "Stop allowing a host (its live controllers stay, as with nvmet)"),
    RouteSpec("POST", f"{_NQN}/namespaces", ControlApi.ns_add,
              "Add a namespace (a [[subsystem.namespace]] table as JSON)", _NAMESPACE_BODY,
              ok=201),
    RouteSpec("DELETE", f"{_NQN}/namespaces/{{nsid:int}}", ControlApi.ns_remove,
              "Remove a namespace"),
    RouteSpec("PATCH", f"{_NQN}/namespaces/{{nsid:int}}", ControlApi.ns_update,
              "Change a namespace: size (resize), enabled, ana_group in place; other fields "
              "replace it under the same NSID", _object((), **_NAMESPACE_FIELDS)),
    RouteSpec("GET", f"{_NQN}/namespaces/{{nsid:int}}/reservations",
              ControlApi.reservations_show,
              "A namespace's reservation: registrants (Host ID, key, holding), holder, type, "
              "generation, PTPL, reservation conflicts answered"),
    RouteSpec("DELETE", f"{_NQN}/namespaces/{{nsid:int}}/reservations",
              ControlApi.reservations_clear,
              "Clear a namespace's registrations and reservation (registrants are notified: "
              "Reservation Preempted); PTPL state is saved"),
    RouteSpec("POST", "/hosts", ControlApi.host_add,
              "Add a host to the target's host list, with its DH-HMAC-CHAP settings if any "
              "(secrets as nvme gen-dhchap-key writes them)",
              _object(("nqn",), nqn=_STR, **dict.fromkeys(HOST_FIELDS, _STR)), ok=201),
    RouteSpec("PATCH", "/hosts/{host}", ControlApi.host_set_key,
              "Change a host's DH-HMAC-CHAP settings (key rotation): new connections use them, "
              "live ones keep theirs until they re-authenticate; an empty key removes it",
              _object((), **dict.fromkeys(HOST_FIELDS, _STR))),
    RouteSpec("DELETE", "/hosts/{host}", ControlApi.host_remove,
              "Remove a host NQN from the target's host list"),
    # -- ports, ANA
    RouteSpec("POST", "/ports", ControlApi.port_add,
              "Create a port (a [[port]] table as JSON) and listen on it; port 0 picks a free "
              "TCP port (answered in \"port\")", _PORT_BODY, ok=201),
    RouteSpec("DELETE", _PORT, ControlApi.port_remove,
              "Remove a port: listener closed, connections closed"),
    RouteSpec("POST", f"{_PORT}/down", ControlApi.port_down,
              "Take a path down (reset = TCP RST, close = FIN, blackhole, refuse new connections)",
              _object((), mode={"enum": list(PORT_DOWN_MODES), "default": "reset"})),
    RouteSpec("POST", f"{_PORT}/up", ControlApi.port_up,
              "Restore a path: accept again; connections left blackholed are reset (their "
              "queued commands are stale by now)"),
    RouteSpec("POST", f"{_PORT}/subsystems", ControlApi.port_link,
              "Expose a subsystem on the port", _object(("nqn",), nqn=_STR)),
    RouteSpec("DELETE", f"{_PORT}/subsystems/{{nqn}}", ControlApi.port_unlink,
              "Stop exposing a subsystem on the port (its controllers there are dropped)"),
    RouteSpec("POST", f"{_PORT}/referrals", ControlApi.referral_add,
              "Add (or replace, by name) a referral in the port's discovery log",
              _REFERRAL_BODY, ok=201),
    RouteSpec("DELETE", f"{_PORT}/referrals/{{name}}", ControlApi.referral_remove,
              "Remove a referral"),
    RouteSpec("POST", "/ana", ControlApi.ana,
              "Set the ANA state of a group on a port (AEN to every affected controller); with "
              "via=change go through the change state for after_ms first (answered at once, 202)",
              _object(("port", "group", "state"), port=_INT, group=_INT,
                      state={"enum": list(ANA_LABELS)}, via={"enum": ["change"]},
                      after_ms=_INT)),
    RouteSpec("DELETE", f"{_PORT}/ana/{{group:int}}", ControlApi.ana_group_remove,
              "Forget an ANA group's state on the port (optimized again)"),
    # -- capture
    RouteSpec("GET", "/capture", ControlApi.capture_get,
              "Where new connections are captured (pcapng, one file each), or null"),
    RouteSpec("PUT", "/capture", ControlApi.capture_set,
              "Capture connections accepted from now on into a directory (null: stop)",
              _object(("dir",), dir={"type": ["string", "null"]})),
    # -- faults, metrics
    RouteSpec("GET", "/faults", ControlApi.fault_list, "The active fault rules"),
    RouteSpec("POST", "/faults", ControlApi.fault_add, "Add a fault rule", _FAULT_BODY, ok=201),
    RouteSpec("DELETE", "/faults", ControlApi.fault_clear, "Remove every fault rule"),
    RouteSpec("DELETE", "/faults/{rule_id:int}", ControlApi.fault_remove,
              "Remove one fault rule"),
    RouteSpec("GET", "/metrics", ControlApi.metrics, "Prometheus metrics of the target"),
    # -- the target as a whole, scenario markers
    RouteSpec("POST", "/restart", ControlApi.restart,
              "Soft restart: every connection closed and controller dropped, listeners bound "
              "again on the same ports, every port up; configuration and data kept"),
    RouteSpec("POST", "/events", ControlApi.event,
              "Record a marker (a scenario's step) in the audit trail and count it in "
              "nvmeof_target_scenario_steps_total{scenario,action}",
              _object(("what",), what=_STR, scenario=_STR, action=_STR), ok=201),
)  # fmt: skip

_PARAM = re.compile(r"\{(\w+)(?::(\w+))?\}")
_TEXT_ROUTES = {("GET", "/metrics"): "text/plain", ("GET", "/config"): "application/toml"}


def _operation(spec: RouteSpec) -> dict[str, Any]:
    error = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    text = _TEXT_ROUTES.get((spec.method, spec.path), "application/json")
    op: dict[str, Any] = {
        "summary": spec.summary,
        "operationId": spec.handler.__name__,
        "responses": {
            str(spec.ok): {"description": "done", "content": {text: {"schema": {}}}},
            "400": {"description": "bad request", **error},
            "401": {"description": "missing or wrong bearer token", **error},
            "404": {"description": "no such port, subsystem, namespace, host or rule", **error},
        },
    }
    params = [{"name": name, "in": "path", "required": True,
               "schema": {"type": "integer"} if kind == "int" else {"type": "string"}}
              for name, kind in _PARAM.findall(spec.path)]  # fmt: skip
    params += [{"name": name, "in": "query", "required": False,
                "schema": {"enum": list(CONFIG_FORMATS)} if name == "format" else _STR}
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
    paths["/openapi.json"] = {"get": {
        "summary": "This OpenAPI document", "operationId": "openapi",
        "responses": {"200": {"description": "done",
                              "content": {"application/json": {"schema": {}}}}},
    }}  # fmt: skip
    return {
        "openapi": "3.1.0",
        "info": {"title": "nvmeof-emu target control API", "version": "2",
                 "description": "Operate and configure a running NVMe/TCP target: subsystems, "
                                "namespaces, hosts, ports, referrals, ANA, paths, faults, "
                                "reservations. Off loopback every request needs the bearer "
                                "token."},
        "paths": paths,
        "components": {
            "schemas": {"Error": _object(("error",), error=_STR)},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{}, {"bearer": []}],
    }  # fmt: skip
