"""``nvmeof-target ctl``: operate and configure a running target through its control API.

A thin layer over :class:`target.control.client.ControlClient`: each command is one client call
and a line (or a table) of output, so the CLI, the Python client and the pytest plugin cannot
drift. Usage (``--control ADDR:PORT`` and ``--token-file FILE`` may come before or after the
command; the default address is 127.0.0.1:9465)::

    nvmeof-target ctl status [--json]
    nvmeof-target ctl config apply FILE              # native TOML or nvmetcli JSON
    nvmeof-target ctl config export [--format toml|nvmetcli] [--output FILE]
    nvmeof-target ctl subsystem add NQN [--port P]... [--serial S] [--model M]
                                        [--no-allow-any-host] [--allowed-host HOST]...
                                        [--max-io-queues N] [--queue-size N]
                                        [--cntlid-min N] [--cntlid-max N] [--max-namespaces N]
    nvmeof-target ctl subsystem remove NQN
    nvmeof-target ctl host allow|disallow NQN HOST   # a subsystem's allowed hosts
    nvmeof-target ctl host add|remove HOST           # the target's host list
    nvmeof-target ctl host set-key HOST [--dhchap-key K] [--dhchap-ctrl-key K]
                                        [--dhchap-hash H] [--dhchap-dhgroup G]
                                        [--tls-key K] [--tls-psk-derivation D]
    nvmeof-target ctl port add ID [--addr A] [--trsvcid N] [--subsystem NQN]...
                                  [--ana GROUP=STATE]... [--advertise A] [--strict]
                                  [--tls required|allowed]
    nvmeof-target ctl port remove ID
    nvmeof-target ctl port link|unlink ID NQN
    nvmeof-target ctl port down PORT [--mode reset|close|blackhole|refuse]
    nvmeof-target ctl port up PORT
    nvmeof-target ctl referral add PORT NAME ADDR [--trsvcid N] [--portid N]
    nvmeof-target ctl referral remove PORT NAME
    nvmeof-target ctl ana set --port P --group G --state STATE [--via change [--after MS]]
    nvmeof-target ctl ana forget --port P --group G
    nvmeof-target ctl ns add --nqn NQN --nsid N [--size 64M] [--block-size 4096]
                             [--backend ram|file|null] [--path P] [--ana-group G] [--uuid U]
                             [--no-reservations] [--sync flush|always|none]
    nvmeof-target ctl ns remove --nqn NQN --nsid N
    nvmeof-target ctl ns resize --nqn NQN --nsid N --size S
    nvmeof-target ctl ns enable|disable --nqn NQN --nsid N
    nvmeof-target ctl ns set --nqn NQN --nsid N --ana-group G
    nvmeof-target ctl resv show NQN NSID [--json]       # registrants, holder, type, conflicts
    nvmeof-target ctl resv clear NQN NSID
    nvmeof-target ctl fault add ACTION [--port P] [--nqn NQN] [--nsid N] [--opcode 0x02] ...
    nvmeof-target ctl fault list [--json]
    nvmeof-target ctl fault clear [ID]
    nvmeof-target ctl scenario run FILE [--seed N] [--log STEPS.jsonl] [--keep-going]
                                        [--dry-run]       # docs/SCENARIOS.md

Exit status: 0 done, 1 the API refused (its one-line error is printed) or cannot be reached,
2 bad arguments.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from functools import partial
from typing import Any

import trio

from nvmeof.constants import AnaState
from target.config import (
    BACKENDS,
    BLOCK_SIZES,
    DHCHAP_DHGROUPS,
    DHCHAP_HASHES,
    SYNC_MODES,
    TLS_MODES,
    TLS_PSK_DERIVATIONS,
    ConfigError,
)
from target.config.validate import parse_size
from target.control.actions import PORT_DOWN_MODES
from target.control.client import ControlClient
from target.control.clientbase import (
    DEFAULT_CONTROL,
    ControlApiError,
    ControlSetupError,
    Endpoint,
    compact,
    parse_endpoint,
    read_token,
)
from target.control.ctlformat import describe_fault, format_faults, format_status, human_size
from target.control.ctlresv import add_resv_parser
from target.control.faults import ACTIONS, QUEUE_KINDS
from target.control.scenario import format_schedule, load_scenario
from target.control.scenario_run import (
    ScenarioFailed,
    failure_message,
    first_failure,
    run_scenario,
)

EXIT_FAILED, EXIT_USAGE = 1, 2
ANA_LABELS = [s.label for s in AnaState]

Command = Callable[[ControlClient, argparse.Namespace], str]


def _changes(changes: list[str], nothing: str = "nothing to change") -> str:
    return "\n".join(changes) or nothing


# -- commands ------------------------------------------------------------------------------------


def _status(client: ControlClient, args: argparse.Namespace) -> str:
    status = client.status()
    return json.dumps(status, indent=2) if args.json else format_status(dict(status))


def _config_apply(client: ControlClient, args: argparse.Namespace) -> str:
    return _changes(client.config_apply_file(args.file), "already in that state")


def _config_export(client: ControlClient, args: argparse.Namespace) -> str:
    text = client.config_export(args.format, show_secrets=args.show_secrets)
    if args.output is None:
        return text.rstrip("\n")
    with open(args.output, "w", encoding="utf-8") as handle:
        handle.write(text)
    return f"wrote {args.output}"


def _subsystem_add(client: ControlClient, args: argparse.Namespace) -> str:
    attributes = compact(serial=args.serial, model=args.model,
                         allow_any_host=False if args.no_allow_any_host else None,
                         allowed_hosts=args.allowed_host or None,
                         max_io_queues=args.max_io_queues, queue_size=args.queue_size,
                         cntlid_min=args.cntlid_min, cntlid_max=args.cntlid_max,
                         max_namespaces=args.max_namespaces, cqt_ms=args.cqt_ms)  # fmt: skip
    return _changes(client.subsystem_add(args.nqn, ports=args.port or (), **attributes))


def _subsystem_remove(client: ControlClient, args: argparse.Namespace) -> str:
    return _changes(client.subsystem_remove(args.nqn))


def _host(client: ControlClient, args: argparse.Namespace) -> str:
    action = args.host_command
    if action in ("allow", "disallow"):
        call = client.host_allow if action == "allow" else client.host_disallow
        return _changes(call(args.nqn, args.host))
    if action == "remove":
        return _changes(client.host_remove(args.host))
    settings = {name: getattr(args, name) for name in
                ("dhchap_key", "dhchap_ctrl_key", "dhchap_hash", "dhchap_dhgroup", "tls_key",
                 "tls_psk_derivation")}  # fmt: skip
    if action == "add":
        return _changes(client.host_add(args.host, **settings))
    return _changes(client.host_set_key(args.host, **settings))


def _port_add(client: ControlClient, args: argparse.Namespace) -> str:
    ana = dict(args.ana or [])
    port = client.port_add(args.id, addr=args.addr, port=args.trsvcid,
                           subsystems=args.subsystem or (), ana=ana or None,
                           advertise=args.advertise, strict=args.strict or None,
                           tls=args.tls)  # fmt: skip
    return f"port {port['id']} listening on {port['addr']}:{port['port']}"


def _port_remove(client: ControlClient, args: argparse.Namespace) -> str:
    return _changes(client.port_remove(args.id))


def _port_link(client: ControlClient, args: argparse.Namespace) -> str:
    call = client.port_link if args.port_command == "link" else client.port_unlink
    return _changes(call(args.id, args.nqn))


def _port_down(client: ControlClient, args: argparse.Namespace) -> str:
    count = client.port_down(args.port, args.mode)
    if args.mode == "refuse":
        return f"port {args.port} down (refuse): new connections refused, existing ones kept"
    return f"port {args.port} down ({args.mode}): {count} connections affected"


def _port_up(client: ControlClient, args: argparse.Namespace) -> str:
    client.port_up(args.port)
    return f"port {args.port} up"


def _referral(client: ControlClient, args: argparse.Namespace) -> str:
    if args.referral_command == "remove":
        return _changes(client.referral_remove(args.port, args.name))
    return _changes(client.referral_add(args.port, args.name, args.addr, port=args.trsvcid,
                                        portid=args.portid))  # fmt: skip


def _ana_set(client: ControlClient, args: argparse.Namespace) -> str:
    via_ms = (1000 if args.after is None else args.after) if args.via else None
    done = client.set_ana(args.port, args.group, args.state, via_change_ms=via_ms)
    where = f"port {args.port} group {args.group}"
    if args.via:
        return f"{where}: change, then {done['state']} in {done['after_ms']} ms"
    return f"{where}: {done['state']} (ANA change count {done['ana_change_count']})"


def _ana_forget(client: ControlClient, args: argparse.Namespace) -> str:
    return _changes(client.ana_group_remove(args.port, args.group))


def _ns_add(client: ControlClient, args: argparse.Namespace) -> str:
    fields = compact(size=args.size, block_size=args.block_size, backend=args.backend,
                     path=args.path, ana_group=args.ana_group, uuid=args.uuid,
                     reservations=False if args.no_reservations else None,
                     sync=args.sync)  # fmt: skip
    return _changes(client.ns_add(args.nqn, args.nsid, **fields))


def _ns_remove(client: ControlClient, args: argparse.Namespace) -> str:
    client.ns_remove(args.nqn, args.nsid)
    return f"removed namespace {args.nsid} from {args.nqn}"


def _ns_resize(client: ControlClient, args: argparse.Namespace) -> str:
    client.ns_resize(args.nqn, args.nsid, args.size)
    return f"namespace {args.nsid} of {args.nqn} resized to {human_size(args.size)}"


def _ns_update(client: ControlClient, args: argparse.Namespace) -> str:
    if args.ns_command in ("enable", "disable"):
        fields: dict[str, Any] = {"enabled": args.ns_command == "enable"}
    else:
        fields = {"ana_group": args.ana_group}
    return _changes(client.ns_update(args.nqn, args.nsid, **fields))


_FAULT_OPTIONS = {"port": "port", "nqn": "subsystem", "nsid": "nsid", "opcode": "opcode",
                  "fctype": "fctype",
                  "host": "host", "queue": "queue", "probability": "probability",
                  "every": "every", "count": "count", "delay_ms": "delay_ms",
                  "status": "status", "after": "after", "direction": "direction",
                  "duration_ms": "duration_ms"}  # fmt: skip


def _fault_add(client: ControlClient, args: argparse.Namespace) -> str:
    fields = {key: getattr(args, option) for option, key in _FAULT_OPTIONS.items()
              if getattr(args, option) is not None}  # fmt: skip
    if args.dnr:
        fields["dnr"] = True
    rule = client.fault_add(args.action, **fields)
    return f"fault rule {rule['id']} added: {rule['action']} {describe_fault(rule)}"


def _fault_list(client: ControlClient, args: argparse.Namespace) -> str:
    rules = client.faults()
    return json.dumps(rules, indent=2) if args.json else "\n".join(format_faults(rules))


def _fault_clear(client: ControlClient, args: argparse.Namespace) -> str:
    removed = client.fault_clear() if args.id is None else client.fault_remove(args.id)
    return f"removed {removed} fault rule{'s' if removed != 1 else ''}"


def _scenario_run(client: ControlClient, args: argparse.Namespace) -> str:
    """Print each step as it is done; the last line sums up. The runner is async (it keeps
    time with Trio): it runs here in its own event loop with its own client."""
    scenario = load_scenario(args.file)
    schedule = scenario.schedule(args.seed)
    seed = scenario.seed if args.seed is None else args.seed
    length = max((o.time for o in schedule), default=0.0)
    steps = f"{len(scenario.steps)} step{'s' if len(scenario.steps) != 1 else ''}"
    heading = (f"scenario {scenario.name}: {steps}, {len(schedule)} occurrences over "
               f"{length:.3f}s, seed {seed}")  # fmt: skip
    if args.dry_run:
        return "\n".join([heading + " (dry run)", *format_schedule(schedule)])
    print(heading, flush=True)
    token = read_token(args.token_file) if args.token_file else None
    run = partial(run_scenario, args.control, scenario, token=token, seed=args.seed,
                  keep_going=args.keep_going, log_path=args.log,
                  on_step=lambda result: print(result.line(), flush=True))  # fmt: skip
    results = trio.run(run)
    failed = first_failure(results)
    if failed is not None and not args.keep_going:
        raise ScenarioFailed(failure_message(scenario, failed))
    bad = sum(1 for r in results if not r.ok)
    summary = f"scenario {scenario.name}: {len(results)} steps done, {bad} failed"
    if bad:
        raise ScenarioFailed(summary)
    return summary


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


def _ana_pair(text: str) -> tuple[int, str]:
    group, _, state = text.partition("=")
    if not group.isdigit() or state not in ANA_LABELS:
        raise argparse.ArgumentTypeError(f"not GROUP=STATE ({'|'.join(ANA_LABELS)}): {text!r}")
    return int(group), state


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

    config = group("config", "the whole configuration")
    leaf(config, "apply", _config_apply, "bring the target to a configuration file "
         "(native TOML or nvmetcli JSON)").add_argument("file", metavar="FILE")  # fmt: skip
    export = leaf(config, "export", _config_export, "write the live configuration")
    export.add_argument("--format", choices=("toml", "nvmetcli"), default="toml")
    export.add_argument("--output", "-o", metavar="FILE", help="write to FILE, not stdout")
    export.add_argument("--show-secrets", action="store_true",
                        help="write DH-HMAC-CHAP secrets (hidden by default)")  # fmt: skip

    subsystems = group("subsystem", "create or remove subsystems")
    add_sub = leaf(subsystems, "add", _subsystem_add, "create a subsystem")
    add_sub.add_argument("nqn", metavar="NQN")
    add_sub.add_argument("--port", type=int, action="append", help="expose it on this port")
    add_sub.add_argument("--no-allow-any-host", action="store_true",
                         help="only the --allowed-host hosts may connect")  # fmt: skip
    add_sub.add_argument("--allowed-host", action="append", metavar="HOSTNQN")
    for option in ("serial", "model"):
        add_sub.add_argument(f"--{option}")
    for option in ("max-io-queues", "queue-size", "cntlid-min", "cntlid-max", "max-namespaces",
                   "cqt-ms"):  # fmt: skip
        add_sub.add_argument(f"--{option}", type=int)
    leaf(subsystems, "remove", _subsystem_remove,
         "remove a subsystem (its controllers are dropped)").add_argument("nqn", metavar="NQN")  # fmt: skip

    hosts = group("host", "allowed hosts and the host list")
    for name, text in (("allow", "let a host connect to a subsystem"),
                       ("disallow", "stop allowing a host (live controllers stay)")):  # fmt: skip
        parser = leaf(hosts, name, _host, text)
        parser.add_argument("nqn", metavar="NQN")
        parser.add_argument("host", metavar="HOSTNQN")
    for name, text in (("add", "add a host to the host list (DH-HMAC-CHAP settings optional)"),
                       ("set-key", "rotate a host's DH-HMAC-CHAP settings or TLS PSK (new connections)"),
                       ("remove", "remove a host NQN from the host list")):  # fmt: skip
        parser = leaf(hosts, name, _host, text)
        parser.add_argument("host", metavar="HOSTNQN")
        if name != "remove":
            parser.add_argument("--dhchap-key", metavar="DHHC-1:..",
                                help="the host's secret ('' removes it)")  # fmt: skip
            parser.add_argument("--dhchap-ctrl-key", metavar="DHHC-1:..",
                                help="the controller's secret: bidirectional authentication")  # fmt: skip
            parser.add_argument("--dhchap-hash", choices=DHCHAP_HASHES)
            parser.add_argument("--dhchap-dhgroup", choices=DHCHAP_DHGROUPS)
            parser.add_argument("--tls-key", metavar="NVMeTLSkey-1:..",
                                help="the host's TLS PSK, for TLS ports ('' removes it)")  # fmt: skip
            parser.add_argument("--tls-psk-derivation", choices=TLS_PSK_DERIVATIONS,
                                help="how the host derives its TLS PSK (compat: nvme-cli 2.13)")  # fmt: skip

    ports = group("port", "create, remove, link ports; take a path down or up")
    add_port = leaf(ports, "add", _port_add, "create a port and listen on it")
    add_port.add_argument("id", metavar="ID", type=int)
    add_port.add_argument("--addr", default="127.0.0.1")
    add_port.add_argument("--trsvcid", type=int, default=0, help="TCP port (0: any free one)")
    add_port.add_argument("--subsystem", action="append", metavar="NQN")
    add_port.add_argument("--ana", type=_ana_pair, action="append", metavar="GROUP=STATE")
    add_port.add_argument("--advertise", metavar="ADDR")
    add_port.add_argument("--strict", action="store_true")
    add_port.add_argument("--tls", choices=TLS_MODES,
                          help="TLS 1.3 with a PSK: required, or allowed beside plaintext")  # fmt: skip
    leaf(ports, "remove", _port_remove, "remove a port").add_argument("id", metavar="ID", type=int)
    for name, text in (("link", "expose a subsystem on the port"),
                       ("unlink", "stop exposing a subsystem on the port")):  # fmt: skip
        parser = leaf(ports, name, _port_link, text)
        parser.add_argument("id", metavar="ID", type=int)
        parser.add_argument("nqn", metavar="NQN")
    down = leaf(ports, "down", _port_down, "take a path down")
    down.add_argument("port", metavar="PORT", type=int)
    down.add_argument("--mode", choices=PORT_DOWN_MODES, default="reset")
    leaf(ports, "up", _port_up, "restore a path").add_argument("port", metavar="PORT", type=int)

    referrals = group("referral", "referrals in a port's discovery log")
    add_ref = leaf(referrals, "add", _referral, "add (or replace) a referral")
    remove_ref = leaf(referrals, "remove", _referral, "remove a referral")
    for parser in (add_ref, remove_ref):
        parser.add_argument("port", metavar="PORT", type=int)
        parser.add_argument("name", metavar="NAME")
    add_ref.add_argument("addr", metavar="ADDR")
    add_ref.add_argument("--trsvcid", type=int)
    add_ref.add_argument("--portid", type=int)

    anas = group("ana", "ANA states")
    ana = leaf(anas, "set", _ana_set, "set the ANA state of a group")
    forget = leaf(anas, "forget", _ana_forget, "forget a group's state (optimized again)")
    for parser in (ana, forget):
        parser.add_argument("--port", type=int, required=True)
        parser.add_argument("--group", type=int, required=True)
    ana.add_argument("--state", required=True, choices=ANA_LABELS)
    ana.add_argument("--via", choices=["change"], help="go through the change state first")
    ana.add_argument("--after", metavar="MS", type=int, help="time in change (default 1000)")

    namespaces = group("ns", "add, remove, resize, enable or disable namespaces")
    ns_add = leaf(namespaces, "add", _ns_add, "add a namespace")
    ns_resize = leaf(namespaces, "resize", _ns_resize, "resize a namespace")
    ns_set = leaf(namespaces, "set", _ns_update, "move a namespace to another ANA group")
    for parser in (ns_add, ns_resize, ns_set,
                   leaf(namespaces, "remove", _ns_remove, "remove a namespace"),
                   leaf(namespaces, "enable", _ns_update, "make a namespace visible"),
                   leaf(namespaces, "disable", _ns_update, "hide a namespace")):  # fmt: skip
        parser.add_argument("--nqn", required=True)
        parser.add_argument("--nsid", type=int, required=True)
    ns_add.add_argument("--size", type=_size, help="bytes, or e.g. 64M (default 64MiB)")
    ns_resize.add_argument("--size", type=_size, required=True, help="bytes, or e.g. 64M")
    ns_add.add_argument("--block-size", type=int, choices=BLOCK_SIZES)
    ns_add.add_argument("--backend", choices=BACKENDS)
    ns_add.add_argument("--path", help="backing file (file backend)")
    ns_add.add_argument("--ana-group", type=int)
    ns_add.add_argument("--uuid", help="namespace UUID (default: derived from NQN and NSID)")
    ns_add.add_argument("--no-reservations", action="store_true",
                        help="reservation commands are Invalid Opcode (nvmet resv_enable 0)")  # fmt: skip
    ns_add.add_argument("--sync", choices=SYNC_MODES,
                        help="file backend: when writes reach stable storage (default flush: on "
                        "Flush and FUA; always: every write; none: never, unsafe)")  # fmt: skip
    ns_set.add_argument("--ana-group", type=int, required=True)

    add_resv_parser(group, leaf)

    faults = group("fault", "fault injection rules")
    add = leaf(faults, "add", _fault_add, "add a fault rule")
    add.add_argument("action", choices=ACTIONS)
    for option, kind in (("port", int), ("nqn", str), ("nsid", int), ("opcode", _code),
                         ("fctype", _code),
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

    scenarios = group("scenario", "fault scenarios (docs/SCENARIOS.md)")
    run = leaf(scenarios, "run", _scenario_run, "run a scenario file's timeline")
    run.add_argument("file", metavar="FILE")
    run.add_argument("--seed", type=int, help="seed for the jitter (default: the file's seed)")
    run.add_argument("--log", metavar="STEPS.jsonl",
                     help="write each step as a JSON line (nvmeof bench --events reads it)")  # fmt: skip
    run.add_argument("--keep-going", action="store_true",
                     help="go on after a refused step (exit 1 at the end)")  # fmt: skip
    run.add_argument("--dry-run", action="store_true",
                     help="print the expanded schedule; do not touch the target")  # fmt: skip


def run_ctl(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Run a parsed ``ctl`` command: print its result, or one error line on stderr."""
    if args.ctl_command == "ana" and getattr(args, "after", None) is not None and not args.via:
        parser.error("--after needs --via change")
    try:
        token = read_token(args.token_file) if args.token_file else None
    except ControlSetupError as err:
        print(f"nvmeof-target: {err}", file=sys.stderr)
        return EXIT_USAGE
    try:
        with ControlClient(args.control, token=token) as client:
            output = args.ctl_handler(client, args)
    except (ControlApiError, ControlSetupError, ConfigError, ScenarioFailed) as err:
        print(f"nvmeof-target: {err}", file=sys.stderr)
        return EXIT_FAILED
    print(output)
    return 0
