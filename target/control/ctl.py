"""``nvmeof-target ctl``: operate a running target through its HTTP control API.

Only the standard library (``http.client``) is used here, so the client stays light; the API
itself is :mod:`target.control.httpapi`. Usage (``--control ADDR:PORT`` and ``--token-file
FILE`` may come before or after the command; the default address is 127.0.0.1:9465)::

    nvmeof-target ctl status [--json]
    nvmeof-target ctl port down PORT [--mode reset|close|blackhole|refuse]
    nvmeof-target ctl port up PORT
    nvmeof-target ctl ana set --port P --group G --state STATE [--via change [--after MS]]
    nvmeof-target ctl ns add --nqn NQN --nsid N --size 64M [--block-size 4096]
                             [--backend ram|file|null] [--path P] [--ana-group G]
    nvmeof-target ctl ns remove --nqn NQN --nsid N
    nvmeof-target ctl ns resize --nqn NQN --nsid N --size S
    nvmeof-target ctl fault add ACTION [--port P] [--nqn NQN] [--nsid N] [--opcode 0x02] ...
    nvmeof-target ctl fault list [--json]
    nvmeof-target ctl fault clear [ID]

Exit status: 0 done, 1 the API refused (its one-line error is printed) or cannot be reached,
2 bad arguments.
"""

from __future__ import annotations

import argparse
import http.client
import ipaddress
import json
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlencode

from nvmeof.constants import AnaState
from target.config import BACKENDS, BLOCK_SIZES
from target.config.validate import parse_size
from target.control.actions import PORT_DOWN_MODES
from target.control.faults import ACTIONS, QUEUE_KINDS

Endpoint = tuple[str, int]
DEFAULT_CONTROL: Endpoint = ("127.0.0.1", 9465)
EXIT_FAILED, EXIT_USAGE = 1, 2


class CtlError(Exception):
    """The control API refused a request or cannot be reached: one line."""


class ControlSetupError(ValueError):
    """The control API (or a client of it) cannot be set up as asked: one line."""


def parse_endpoint(text: str) -> Endpoint | None:
    """``ADDR:PORT`` (``[v6]:PORT`` for IPv6) to ``(addr, port)``; ``off`` is None."""
    if text.strip().lower() == "off":
        return None
    match = re.fullmatch(r"\[([0-9a-fA-F:.]+)\]:(\d+)|([^:\[\]\s]+):(\d+)", text.strip())
    if match is None or int(match[2] or match[4]) > 65535:
        raise ValueError(f"not ADDR:PORT (or off): {text!r}")
    return match[1] or match[3], int(match[2] or match[4])


def format_endpoint(endpoint: Endpoint) -> str:
    """``(addr, port)`` back to ``ADDR:PORT`` (brackets around an IPv6 address)."""
    host, port = endpoint
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` only accepts local connections."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def read_token(path: str) -> str:
    """The bearer token in the file ``path`` (surrounding whitespace removed)."""
    try:
        with open(path, encoding="utf-8") as handle:
            token = handle.read().strip()
    except (OSError, UnicodeDecodeError) as err:
        reason = getattr(err, "strerror", None) or str(err)
        raise ControlSetupError(f"cannot read the token file {path}: {reason}") from None
    if not token or any(c.isspace() or not c.isprintable() for c in token):
        raise ControlSetupError(f"the token file {path} must hold one token without spaces")
    return token


class ControlClient:
    """A blocking JSON client of the control API (one connection per request)."""

    def __init__(self, endpoint: Endpoint, token: str | None = None, timeout: float = 10.0):
        self.endpoint = endpoint
        self.token = token
        self.timeout = timeout

    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """Send one request; the decoded JSON answer, or CtlError with the API's error line."""
        where = format_endpoint(self.endpoint)
        headers = {"Accept": "application/json"}
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        conn = http.client.HTTPConnection(*self.endpoint, timeout=self.timeout)
        try:
            try:
                conn.connect()
            except ConnectionRefusedError:
                raise CtlError(f"cannot reach the control API at {where} "
                               "(is the target running with --control?)") from None  # fmt: skip
            except OSError as err:
                raise CtlError(f"cannot reach the control API at {where}: {err}") from None
            conn.request(method, path, body=payload, headers=headers)
            response = conn.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException) as err:
            raise CtlError(f"control API at {where}: {err or type(err).__name__}") from None
        finally:
            conn.close()
        try:
            answer = json.loads(data) if data else None
        except ValueError:
            answer = None
        if response.status >= 400:
            error = answer.get("error") if isinstance(answer, dict) else None
            raise CtlError(str(error or f"HTTP {response.status} {response.reason}"))
        return answer


# -- formatting ----------------------------------------------------------------------------------


def human_size(size: int) -> str:
    """Bytes as the largest exact binary unit (``64MiB``), or plain bytes."""
    for shift, unit in ((60, "EiB"), (50, "PiB"), (40, "TiB"), (30, "GiB"), (20, "MiB"),
                        (10, "KiB")):  # fmt: skip
        if size >= 1 << shift and not size % (1 << shift):
            return f"{size >> shift}{unit}"
    return f"{size}B"


def _table(rows: Sequence[Sequence[object]], indent: str = "") -> list[str]:
    cells = [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    return [indent + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
            for row in cells]  # fmt: skip


def describe_fault(rule: dict[str, Any]) -> str:
    """What a fault rule matches, how often it fires and what it does, on one line."""
    parts = []
    for key in ("port", "subsystem", "nsid", "host"):
        if rule.get(key) is not None:
            parts.append(f"{key}={rule[key]}")
    if rule.get("opcode") is not None:
        parts.append(f"opcode={rule['opcode']:#04x}")
    parts.append(f"queue={rule.get('queue', 'io')}")
    if rule.get("probability", 1.0) < 1.0:
        parts.append(f"probability={rule['probability']}")
    if rule.get("every", 1) > 1:
        parts.append(f"every={rule['every']}")
    if rule.get("count") is not None:
        parts.append(f"count={rule['count']}")
    action = rule["action"]
    if action in ("delay", "ghost-write"):
        parts.append(f"delay_ms={rule['delay_ms']}")
    elif action == "status":
        parts.append(f"status={rule['status']:#05x}" + (" dnr" if rule.get("dnr") else ""))
    elif action == "close":
        parts.append(f"after={rule['after']}")
    elif action == "stall":
        parts.append(f"direction={rule['direction']} duration_ms={rule['duration_ms']}")
    return " ".join(parts)


def format_faults(rules: list[dict[str, Any]], indent: str = "") -> list[str]:
    """The fault rules as a table."""
    if not rules:
        return [indent + "no fault rules"]
    rows: list[Sequence[object]] = [("ID", "ACTION", "MATCHED", "FIRED", "RULE")]
    rows += [(r["id"], r["action"], r["matched"], r["fired"], describe_fault(r)) for r in rules]
    return _table(rows, indent)


def format_status(status: dict[str, Any]) -> str:
    """``GET /status`` as tables: ports, subsystems (namespaces, controllers), faults."""
    rows: list[Sequence[object]] = [("PORT", "ADDRESS", "MODE", "LISTENING", "CONNECTIONS",
                                     "ANA", "SUBSYSTEMS")]  # fmt: skip
    for p in status["ports"]:
        conns = f"{p['connections']}" + (f" ({p['blackholed']} blackholed)"
                                         if p["blackholed"] else "")  # fmt: skip
        ana = " ".join(f"{g}={s}" for g, s in p["ana"].items()) or "-"
        rows.append((p["id"], format_endpoint((p["addr"], p["port"])), p["mode"],
                     "yes" if p["listening"] else "no", conns, ana,
                     len(p["subsystems"]) or "discovery"))  # fmt: skip
    lines = _table(rows)
    for sub in status["subsystems"]:
        lines += ["", f"subsystem {sub['nqn']} (serial {sub['serial']})"]
        ns_rows: list[Sequence[object]] = [("NSID", "SIZE", "BLOCK", "BACKEND", "ANA GROUP",
                                            "ENABLED")]  # fmt: skip
        ns_rows += [(n["nsid"], human_size(n["size"]), n["block_size"], n["backend"],
                     n["ana_group"], "yes" if n["enabled"] else "no")
                    for n in sub["namespaces"]]  # fmt: skip
        lines += _table(ns_rows, "  ") if sub["namespaces"] else ["  no namespaces"]
        if sub["controllers"]:
            ctrl_rows: list[Sequence[object]] = [("CNTLID", "PORT", "KATO MS", "QUEUES", "HOST")]
            ctrl_rows += [(c["cntlid"], c["port"], c["kato_ms"],
                           ",".join(map(str, c["queues"])), c["host"])
                          for c in sub["controllers"]]  # fmt: skip
            lines += _table(ctrl_rows, "  ")
        else:
            lines.append("  no controllers")
    lines += ["", "faults", *format_faults(status["faults"], "  "), ""]
    lines.append(f"ANA change count {status['ana_change_count']}, "
                 f"{status['connections']} connections, "
                 f"{status['discovery_controllers']} discovery controllers")  # fmt: skip
    return "\n".join(lines)


# -- commands ------------------------------------------------------------------------------------

Command = Callable[[ControlClient, argparse.Namespace], str]


def _status(client: ControlClient, args: argparse.Namespace) -> str:
    status = client.request("GET", "/status")
    return json.dumps(status, indent=2) if args.json else format_status(status)


def _port_down(client: ControlClient, args: argparse.Namespace) -> str:
    done = client.request("POST", f"/ports/{args.port}/down", {"mode": args.mode})
    if args.mode == "refuse":
        return f"port {args.port} down (refuse): new connections refused, existing ones kept"
    return f"port {args.port} down ({args.mode}): {done['connections']} connections affected"


def _port_up(client: ControlClient, args: argparse.Namespace) -> str:
    client.request("POST", f"/ports/{args.port}/up", {})
    return f"port {args.port} up"


def _ana_set(client: ControlClient, args: argparse.Namespace) -> str:
    body: dict[str, Any] = {"port": args.port, "group": args.group, "state": args.state}
    if args.via:
        body["via"] = args.via
        if args.after is not None:
            body["after_ms"] = args.after
    done = client.request("POST", "/ana", body)
    where = f"port {args.port} group {args.group}"
    if args.via:
        return f"{where}: change, then {done['state']} in {done['after_ms']} ms"
    return f"{where}: {done['state']} (ANA change count {done['ana_change_count']})"


def _ns_add(client: ControlClient, args: argparse.Namespace) -> str:
    body: dict[str, Any] = {"nqn": args.nqn, "nsid": args.nsid, "size": args.size}
    for key in ("block_size", "backend", "path", "ana_group"):
        if getattr(args, key) is not None:
            body[key] = getattr(args, key)
    done = client.request("POST", "/namespaces", body)
    return (f"added namespace {done['nsid']} to {done['nqn']}: {human_size(done['size'])}, "
            f"{done['block_size']}-byte blocks, {done['backend']}, "
            f"ANA group {done['ana_group']}")  # fmt: skip


def _ns_remove(client: ControlClient, args: argparse.Namespace) -> str:
    client.request("DELETE", f"/namespaces/{args.nsid}?{urlencode({'nqn': args.nqn})}")
    return f"removed namespace {args.nsid} from {args.nqn}"


def _ns_resize(client: ControlClient, args: argparse.Namespace) -> str:
    client.request("POST", f"/namespaces/{args.nsid}/resize", {"nqn": args.nqn, "size": args.size})
    return f"namespace {args.nsid} of {args.nqn} resized to {human_size(args.size)}"


_FAULT_OPTIONS = {"port": "port", "nqn": "subsystem", "nsid": "nsid", "opcode": "opcode",
                  "host": "host", "queue": "queue", "probability": "probability",
                  "every": "every", "count": "count", "delay_ms": "delay_ms",
                  "status": "status", "after": "after", "direction": "direction",
                  "duration_ms": "duration_ms"}  # fmt: skip


def _fault_add(client: ControlClient, args: argparse.Namespace) -> str:
    body: dict[str, Any] = {"action": args.action}
    for option, key in _FAULT_OPTIONS.items():
        if getattr(args, option) is not None:
            body[key] = getattr(args, option)
    if args.dnr:
        body["dnr"] = True
    rule = client.request("POST", "/faults", body)
    return f"fault rule {rule['id']} added: {rule['action']} {describe_fault(rule)}"


def _fault_list(client: ControlClient, args: argparse.Namespace) -> str:
    rules = client.request("GET", "/faults")
    return json.dumps(rules, indent=2) if args.json else "\n".join(format_faults(rules))


def _fault_clear(client: ControlClient, args: argparse.Namespace) -> str:
    path = "/faults" if args.id is None else f"/faults/{args.id}"
    removed = client.request("DELETE", path)["removed"]
    return f"removed {removed} fault rule{'s' if removed != 1 else ''}"


# -- arguments -----------------------------------------------------------------------------------


def _endpoint(text: str) -> Endpoint:
    try:
        endpoint = parse_endpoint(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    if endpoint is None:
        raise argparse.ArgumentTypeError("ctl needs the control API's ADDR:PORT")
    return endpoint


def _code(text: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r} (e.g. 2, 0x02)") from None


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def add_ctl_parser(commands: Any, parser_class: type[argparse.ArgumentParser]) -> None:
    """Add ``ctl`` and its subcommands to the ``nvmeof-target`` subparsers ``commands``."""

    def common(parser: argparse.ArgumentParser, top: bool) -> None:
        # On ``ctl`` and on every command, so they may come before or after it.
        parser.add_argument(
            "--control",
            metavar="ADDR:PORT",
            type=_endpoint,
            default=DEFAULT_CONTROL if top else argparse.SUPPRESS,
            help="control API (default 127.0.0.1:9465)",
        )
        parser.add_argument("--token-file", metavar="FILE",
                            default=None if top else argparse.SUPPRESS,
                            help="file holding the bearer token")  # fmt: skip

    ctl = commands.add_parser("ctl", help="operate a running target")
    common(ctl, True)
    sub = ctl.add_subparsers(dest="ctl_command", required=True, parser_class=parser_class)

    def leaf(parent: Any, name: str, command: Command, text: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = parent.add_parser(name, help=text)
        common(parser, False)
        parser.set_defaults(ctl_handler=command)
        return parser

    def group(name: str, text: str) -> Any:
        return sub.add_parser(name, help=text).add_subparsers(
            dest=f"{name}_command", required=True, parser_class=parser_class
        )

    status = leaf(sub, "status", _status, "ports, subsystems, controllers, ANA, faults")
    status.add_argument("--json", action="store_true", help="the raw JSON document")
    ports = group("port", "take a path down or up")
    down = leaf(ports, "down", _port_down, "take a path down")
    down.add_argument("port", metavar="PORT", type=int)
    down.add_argument("--mode", choices=PORT_DOWN_MODES, default="reset")
    leaf(ports, "up", _port_up, "restore a path").add_argument("port", metavar="PORT", type=int)
    ana = leaf(group("ana", "ANA states"), "set", _ana_set, "set the ANA state of a group")
    ana.add_argument("--port", type=int, required=True)
    ana.add_argument("--group", type=int, required=True)
    ana.add_argument("--state", required=True, choices=[s.label for s in AnaState])
    ana.add_argument("--via", choices=["change"], help="go through the change state first")
    ana.add_argument("--after", metavar="MS", type=int, help="time in change (default 1000)")
    namespaces = group("ns", "add, remove or resize namespaces")
    ns_add = leaf(namespaces, "add", _ns_add, "add a namespace")
    ns_remove = leaf(namespaces, "remove", _ns_remove, "remove a namespace")
    ns_resize = leaf(namespaces, "resize", _ns_resize, "resize a namespace")
    for parser in (ns_add, ns_remove, ns_resize):
        parser.add_argument("--nqn", required=True)
        parser.add_argument("--nsid", type=int, required=True)
    for parser in (ns_add, ns_resize):
        parser.add_argument("--size", type=_size, required=True, help="bytes, or e.g. 64M")
    ns_add.add_argument("--block-size", type=int, choices=BLOCK_SIZES)
    ns_add.add_argument("--backend", choices=BACKENDS)
    ns_add.add_argument("--path", help="backing file (file backend)")
    ns_add.add_argument("--ana-group", type=int)
    faults = group("fault", "fault injection rules")
    add = leaf(faults, "add", _fault_add, "add a fault rule")
    add.add_argument("action", choices=ACTIONS)
    for option, kind in (("port", int), ("nqn", str), ("nsid", int), ("opcode", _code),
                         ("host", str), ("probability", float), ("every", int), ("count", int),
                         ("delay-ms", int), ("status", _code), ("after", int),
                         ("duration-ms", int)):  # fmt: skip
        add.add_argument(f"--{option}", type=kind)
    add.add_argument("--queue", choices=QUEUE_KINDS)
    add.add_argument("--direction", choices=("rx", "tx"))
    add.add_argument("--dnr", action="store_true", help="set Do Not Retry in the status")
    listing = leaf(faults, "list", _fault_list, "list the fault rules")
    listing.add_argument("--json", action="store_true")
    clear = leaf(faults, "clear", _fault_clear, "remove one rule, or all")
    clear.add_argument("id", metavar="ID", type=int, nargs="?")


def run_ctl(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Run a parsed ``ctl`` command: print its result, or one error line on stderr."""
    if args.ctl_command == "ana" and args.after is not None and not args.via:
        parser.error("--after needs --via change")
    try:
        token = read_token(args.token_file) if args.token_file else None
    except ControlSetupError as err:
        print(f"nvmeof-target: {err}", file=sys.stderr)
        return EXIT_USAGE
    try:
        output = args.ctl_handler(ControlClient(args.control, token), args)
    except CtlError as err:
        print(f"nvmeof-target: {err}", file=sys.stderr)
        return EXIT_FAILED
    print(output)
    return 0
