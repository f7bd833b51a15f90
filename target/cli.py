"""``nvmeof-target``: run the target daemon and work with its configuration.

Commands:
    serve [--config FILE] [--advertise ADDR] [--log-level LEVEL]
    config export [--config FILE] [--output FILE]   (nvmetcli JSON)
    config check FILE
Bad configuration or arguments print one line naming the problem and exit with status 2.
"""

from __future__ import annotations

import argparse
import ipaddress
import sys
from collections.abc import Sequence

import trio

from target.config import ConfigError, TargetConfig, default_config
from target.config_files import dump_nvmetcli_json, load_config
from target.daemon import Target, run_until_signalled
from target.logs import LEVELS, first_leaf, setup_logging

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
    config = sub.add_parser("config", help="configuration tools")
    config_sub = config.add_subparsers(dest="config_command", required=True, parser_class=_Parser)
    export = config_sub.add_parser("export", help="write the configuration as nvmetcli JSON")
    export.add_argument("--config", metavar="FILE")
    export.add_argument("--output", "-o", metavar="FILE", help="default: standard output")
    check = config_sub.add_parser("check", help="validate a configuration file")
    check.add_argument("file")
    return parser  # fmt: skip


def _load(path: str | None) -> TargetConfig:
    return load_config(path) if path else default_config()


def _serve(target: Target) -> int:
    status = 0
    try:
        trio.run(run_until_signalled, target)
    except* OSError as group:  # typically an address already in use
        print(f"nvmeof-target: cannot listen: {first_leaf(group)}", file=sys.stderr)
        status = 1
    return status


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "serve":
            config = _load(args.config)
            setup_logging(args.log_level)
            return _serve(Target(config, advertise=args.advertise))
        if args.config_command == "export":
            text = dump_nvmetcli_json(_load(args.config))
            if args.output:
                with open(args.output, "w", encoding="utf-8") as out:
                    out.write(text + "\n")
            else:
                print(text)
            return 0
        load_config(args.file)
        print(f"{args.file}: OK")
        return 0
    except ConfigError as err:
        print(f"nvmeof-target: {err}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as err:
        print(f"nvmeof-target: {err.filename or ''}: {err.strerror}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
