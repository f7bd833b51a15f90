"""``nvmeof-target``: run the target daemon and work with its configuration.

Commands:
    serve [--config FILE] [--advertise ADDR] [--log-level LEVEL]
          [--control ADDR:PORT|off] [--control-token-file FILE] [--metrics ADDR:PORT|off]
          [--pcap DIR] [--ready-file FILE] [--drain-timeout SECONDS]
    config export [--config FILE] [--output FILE] [--show-secrets]   (nvmetcli JSON)
    config check FILE
    ctl ...   (operate a running target: see :mod:`target.control.ctl`)
Bad configuration or arguments print one line naming the problem and exit with status 2.

``serve`` runs the control API (default 127.0.0.1:9465; off loopback it needs
``--control-token-file``) and the Prometheus listener (default 127.0.0.1:9464) next to the
target, and installs the configuration's ``[[fault]]`` rules before serving. With
``--ready-file`` it writes where everything listens, once it does (:mod:`target.ready`): how a
test harness learns the ports bound for ports configured as 0.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import signal
import sys
from collections.abc import Sequence
from functools import partial

import trio

from logfmt import LEVELS, first_leaf, setup_logging
from target.config import ConfigError, TargetConfig, default_config
from target.config.export import dump_nvmetcli_json
from target.config.files import load_config
from target.control.clientbase import (
    DEFAULT_CONTROL,
    ControlSetupError,
    Endpoint,
    format_endpoint,
    is_loopback,
    parse_endpoint,
    read_token,
)
from target.control.ctl import add_ctl_parser, run_ctl
from target.control.httpapi import DEFAULT_METRICS, serve_control
from target.daemon import DEFAULT_DRAIN_TIMEOUT, Target, log_stop_signal
from target.ready import ReadyFileError, ready_document, write_ready_file

log = logging.getLogger("nvmeof.target")

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        # One clear line and exit 2, instead of argparse's usage dump.
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _address(text: str) -> str:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an IP address: {text!r}") from None
    return text


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 <= value < 3600:
        raise argparse.ArgumentTypeError(f"must be 0 <= seconds < 3600, got {text}")
    return value


def _endpoint(text: str) -> Endpoint | None:
    try:
        return parse_endpoint(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="nvmeof-target", description="NVMe/TCP target emulator")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    serve = sub.add_parser("serve", help="run the target (embedded demo default without --config)")
    serve.add_argument("--config", metavar="FILE", help="TOML or nvmetcli JSON configuration")
    serve.add_argument(
        "--advertise",
        metavar="ADDR",
        type=_address,
        help="address written into discovery log entries (e.g. 10.0.2.2)",
    )
    serve.add_argument("--log-level", choices=LEVELS, default="info")
    serve.add_argument(
        "--control",
        metavar="ADDR:PORT",
        type=_endpoint,
        default=DEFAULT_CONTROL,
        help="HTTP control API (default 127.0.0.1:9465; off to disable)",
    )
    serve.add_argument(
        "--control-token-file",
        metavar="FILE",
        help="bearer token for the control API (required off loopback)",
    )
    serve.add_argument(
        "--metrics",
        metavar="ADDR:PORT",
        type=_endpoint,
        default=DEFAULT_METRICS,
        help="Prometheus /metrics listener (default 127.0.0.1:9464; off)",
    )
    serve.add_argument(
        "--pcap",
        metavar="DIR",
        help="write each connection's traffic to DIR as pcapng (for Wireshark's NVMe/TCP)",
    )
    serve.add_argument(
        "--drain-timeout",
        metavar="SECONDS",
        type=_seconds,
        default=DEFAULT_DRAIN_TIMEOUT,
        help="on SIGTERM/SIGINT, how long commands being executed may take to finish and be "
        f"answered before their connections close (default {DEFAULT_DRAIN_TIMEOUT:g})",
    )
    serve.add_argument(
        "--ready-file",
        metavar="FILE",
        help="once everything listens, write the bound ports and endpoints there as JSON",
    )
    config = sub.add_parser("config", help="configuration tools")
    config_sub = config.add_subparsers(dest="config_command", required=True, parser_class=_Parser)
    export = config_sub.add_parser("export", help="write the configuration as nvmetcli JSON")
    export.add_argument("--config", metavar="FILE")
    export.add_argument("--output", "-o", metavar="FILE", help="default: standard output")
    export.add_argument("--show-secrets", action="store_true",
                        help="write DH-HMAC-CHAP secrets (hidden by default)")  # fmt: skip
    check = config_sub.add_parser("check", help="validate a configuration file")
    check.add_argument("file")
    add_ctl_parser(sub, _Parser)
    return parser  # fmt: skip


def _load(path: str | None) -> TargetConfig:
    if not path:
        return default_config()
    warnings: list[str] = []
    config = load_config(path, warnings)
    for line in warnings:
        print(f"nvmeof-target: warning: {line}", file=sys.stderr)
    return config


def add_config_faults(target: Target, config: TargetConfig) -> None:
    """Install the configuration's fault rules (``[[fault]]``) on a new target."""
    for rule in config.faults:
        target.fault_add(dict(rule))


async def _serve_target(
    target: Target, stopped: trio.Event, *, task_status: trio.TaskStatus[Target]
) -> None:
    try:
        await target.serve(task_status=task_status)
    finally:
        stopped.set()


async def _stop_on_signal(
    target: Target, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        task_status.started()
        async for signum in signals:
            log_stop_signal(target, signum)
            target.stop()
            return


async def run_with_control(
    target: Target,
    control: Endpoint | None,
    metrics: Endpoint | None,
    token: str | None,
    ready_file: str | None = None,
) -> None:
    """Serve ``target`` with its control API and metrics listener until SIGINT or SIGTERM
    (or until the target stops); then everything shuts down. ``ready_file`` is written once
    everything listens (:mod:`target.ready`)."""
    async with trio.open_nursery() as nursery:
        stopped = trio.Event()
        await nursery.start(_serve_target, target, stopped)
        endpoints = None
        if control is not None or metrics is not None:
            endpoints = await nursery.start(partial(
                serve_control, target, control=control, metrics=metrics, token=token,
                shutdown_trigger=stopped.wait))  # fmt: skip
        async with trio.open_nursery() as watcher:
            # The signal handler is in place before the ready file says "started": a harness
            # that stops the daemon as soon as it reads the file gets a clean shutdown.
            await watcher.start(_stop_on_signal, target)
            if ready_file is not None:
                try:
                    write_ready_file(ready_file, ready_document(target, endpoints))
                except OSError as err:
                    raise ReadyFileError(f"cannot write the ready file {ready_file}: "
                                         f"{err.strerror or err}") from None  # fmt: skip
                log.info("ready file %s written", ready_file)
            await stopped.wait()
            watcher.cancel_scope.cancel()


def _control_token(args: argparse.Namespace) -> str | None:
    token = read_token(args.control_token_file) if args.control_token_file else None
    if args.control is not None and token is None and not is_loopback(args.control[0]):
        raise ControlSetupError(f"--control {format_endpoint(args.control)} is not a loopback "
                                "address: give --control-token-file")  # fmt: skip
    return token


def _serve(args: argparse.Namespace, target: Target, token: str | None) -> int:
    status = 0
    try:
        trio.run(run_with_control, target, args.control, args.metrics, token, args.ready_file)
    except* ReadyFileError as group:
        print(f"nvmeof-target: {first_leaf(group)}", file=sys.stderr)
        status = 1
    except* OSError as group:  # typically an address already in use
        print(f"nvmeof-target: cannot listen: {first_leaf(group)}", file=sys.stderr)
        status = 1
    return status


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "ctl":
        return run_ctl(args, parser)
    try:
        if args.command == "serve":
            config = _load(args.config)
            token = _control_token(args)
            target = Target(config, advertise=args.advertise, pcap_dir=args.pcap,
                            drain_timeout=args.drain_timeout)  # fmt: skip
            add_config_faults(target, config)
            setup_logging(args.log_level)
            return _serve(args, target, token)
        if args.config_command == "export":
            text = dump_nvmetcli_json(_load(args.config), show_secrets=args.show_secrets)
            if args.output:
                with open(args.output, "w", encoding="utf-8") as out:
                    out.write(text + "\n")
            else:
                print(text)
            return 0
        warnings: list[str] = []
        load_config(args.file, warnings)
        for line in warnings:
            print(f"warning: {line}")
        plural = "s" if len(warnings) > 1 else ""
        print(f"{args.file}: OK" + (f" ({len(warnings)} warning{plural})" if warnings else ""))
        return 0
    except (ConfigError, ControlSetupError) as err:
        print(f"nvmeof-target: {err}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as err:
        print(f"nvmeof-target: {err.filename or ''}: {err.strerror}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
