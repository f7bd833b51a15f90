"""``nvmeof``: the initiator's command line, with nvme-cli's habits.

    nvmeof discover -a 127.0.0.1 -s 8009
    nvmeof connect-all -a 127.0.0.1 -s 8009            # stays attached, prints path changes
    nvmeof list-subsys -a 127.0.0.1 -s 8009
    nvmeof id-ctrl --path 127.0.0.1:4420 -n NQN
    nvmeof bench -a 127.0.0.1 -s 8009 --rw randread --bs 4k --iodepth 32 --runtime 10
    nvmeof gen-dhchap-key --hmac 1                      # then connect with -S DHHC-1:01:...
    nvmeof gen-tls-key --hmac 1                         # then connect with --tls-key NVMeTLSkey-1:..

Paths come from discovery (``-a``/``-s``), or are given directly with ``--path ADDR:PORT``
(repeatable; needed where the discovery log shows addresses this host cannot reach).
A bad argument prints one line naming it and exits with status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

import trio

from initiator.bench import ENGINES, RW_MODES
from initiator.policy import IOPOLICIES
from initiator.resv_cli import add_resv_parsers
from logfmt import first_leaf, reader_went_away, setup_logging
from nvmeof.constants import DISCOVERY_PORT, IO_PORT

EXIT_USAGE = 2
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def size_arg(text: str) -> int:
    """``4096``, ``4k``, ``1M``, ``256MiB`` -> bytes (binary units)."""
    value = offset_arg(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"size must be positive: {text!r}")
    return value


def offset_arg(text: str) -> int:
    """A size that may be 0 (an offset)."""
    raw = text.strip().lower().removesuffix("ib").removesuffix("b")
    unit = raw[-1:] if raw[-1:] in _UNITS else ""
    number = raw[: len(raw) - len(unit)]
    try:
        value = int(number) * _UNITS[unit]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"cannot be negative: {text!r}")
    return value


def path_arg(text: str) -> tuple[str, int]:
    addr, sep, port = text.rpartition(":")
    if not sep or not addr or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected ADDR:PORT, got {text!r}")
    return addr.strip("[]"), int(port)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value < 0 and value != -1:
        raise argparse.ArgumentTypeError(f"must be >= 0 (or -1): {text!r}")
    return value


def _connection_args(parser: argparse.ArgumentParser, *, discovery: bool = True,
                     short_taken: frozenset[str] = frozenset()) -> None:  # fmt: skip
    """The connection options; ``short_taken``: short flags the command itself means otherwise
    (nvme-cli's ``resv-*`` use ``-c``, ``-k``, ``-t``...), which keep only their long form."""
    group = parser.add_argument_group("connection (nvme-cli style)")

    def add(*flags: str, **kwargs: Any) -> None:
        group.add_argument(*(f for f in flags if f not in short_taken), **kwargs)

    add("-t", "--transport", default="tcp", choices=["tcp"])
    add("-a", "--traddr", help="discovery (or target) address")
    add(
        "-s",
        "--trsvcid",
        type=int,
        help=f"port (default {DISCOVERY_PORT} for discovery, {IO_PORT} for I/O)",
    )
    add("-n", "--nqn", help="subsystem NQN (default: every one discovered)")
    add(
        "--path",
        action="append",
        type=path_arg,
        default=[],
        metavar="ADDR:PORT",
        help="connect this path directly instead of discovering (repeatable)",
    )
    add("-q", "--hostnqn", default="", help="host NQN (default: a fresh uuid NQN)")
    add("-k", "--keep-alive-tmo", type=_positive_float, default=5.0, metavar="SECONDS")
    add("-c", "--reconnect-delay", type=_positive_float, default=2.0, metavar="SECONDS")
    add(
        "-l",
        "--ctrl-loss-tmo",
        type=_positive_float,
        default=600.0,
        metavar="SECONDS",
        help="-1 = reconnect forever",
    )
    add(
        "--fast-io-fail-tmo", type=_positive_float, default=-1.0, metavar="SECONDS", help="-1 = off"
    )
    add("-g", "--hdr-digest", action="store_true")
    add("-G", "--data-digest", action="store_true")
    add("-i", "--nr-io-queues", type=int, default=2)
    add("-Q", "--queue-size", type=int, default=128)
    add("--iopolicy", choices=IOPOLICIES, default="numa")
    add("--timeout", type=float, default=30.0, metavar="SECONDS", help="command timeout")
    add("-S", "--dhchap-secret", default="", metavar="DHHC-1:..",
        help="DH-HMAC-CHAP host secret, used when the controller requires authentication")  # fmt: skip
    add("-C", "--dhchap-ctrl-secret", default="", metavar="DHHC-1:..",
        help="DH-HMAC-CHAP controller secret: authenticate the controller too")  # fmt: skip
    _tls_args(group)


#: nvmeof.tls.psk.PSK_DERIVATIONS (not imported here: it loads the crypto library).
TLS_DERIVATIONS = ("compat", "rfc8446")


def _tls_args(group: Any) -> None:
    """TLS 1.3 with a PSK (TP 8011, docs/TLS.md), nvme-cli's flags without the keyring."""
    group.add_argument("--tls", action="store_true",
                       help="TLS 1.3 with a pre-shared key on every queue (needs --tls-key)")  # fmt: skip
    group.add_argument("--tls-key", "--tls_key", dest="tls_key", default="",
                       metavar="NVMeTLSkey-1:..",
                       help="the PSK in interchange format (nvme gen-tls-key); implies --tls")  # fmt: skip
    group.add_argument("--tls-identity-version", type=int, choices=(0, 1), default=0,
                       help="PSK identity NVMe0R0x (0, what Linux 6.12 uses) or NVMe1R0x (1)")  # fmt: skip
    group.add_argument("--tls-psk-derivation", choices=TLS_DERIVATIONS, default="compat",
                       help="TLS PSK derivation: compat (nvme-cli 2.13, Debian 13) or rfc8446 "
                            "(newer nvme-cli); default compat")  # fmt: skip
    group.add_argument("--tls-sha384-r02", dest="tls_r02_sha256", action="store_false",
                       help="an 02 (SHA-384) key uses TLS_AES_256_GCM_SHA384 as TP 8011 says, "
                            "not the SHA-256 suite tlshd 1.0.0 needs")  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="nvmeof", description="NVMe/TCP initiator (nvmeof-emu)")
    parser.add_argument(
        "--log-level", choices=("debug", "info", "warning", "error"), default="warning"
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name, text in (
        ("discover", "read a discovery log"),
        ("connect-all", "connect every path and stay attached, printing path changes"),
        ("list-subsys", "subsystems, their paths, ANA states and iopolicy"),
        ("id-ctrl", "Identify Controller"),
        ("id-ns", "Identify Namespace"),
        ("ana-log", "the ANA log page of each path"),
    ):
        cmd = sub.add_parser(name, help=text)
        _connection_args(cmd)
        cmd.add_argument("-o", "--output-format", choices=("normal", "json"), default="normal")
        if name == "id-ns":
            cmd.add_argument("-N", "--namespace-id", type=int, default=1)
        if name == "connect-all":
            cmd.add_argument(
                "--duration",
                type=float,
                default=0.0,
                help="detach after this many seconds (default: until Ctrl-C)",
            )
    for name in ("read", "write"):
        cmd = sub.add_parser(name, help=f"{name} blocks (pattern write / verify)")
        _connection_args(cmd)
        cmd.add_argument("-N", "--namespace-id", type=int, default=1)
        cmd.add_argument("--slba", "-z", type=int, default=0)
        cmd.add_argument("--blocks", type=int, default=8, help="number of blocks")
        cmd.add_argument(
            "--pattern",
            type=lambda v: int(v, 0),
            default=0xA5,
            help="byte pattern to write / expect (default 0xa5)",
        )
        if name == "read":
            cmd.add_argument("--verify", action="store_true", help="check the pattern")
            cmd.add_argument("--data", metavar="FILE", help="write the data read to FILE")
    bench = sub.add_parser("bench", help="fio-like load over the multipath head")
    _connection_args(bench)
    bench.add_argument("-N", "--namespace-id", type=int, default=None,
                       help="default 1 (with --verify-only: the state file's)")  # fmt: skip
    bench.add_argument("--rw", choices=RW_MODES, default="randread")
    bench.add_argument("--bs", type=size_arg, default=4096)
    bench.add_argument("--iodepth", type=int, default=32)
    bench.add_argument("--numjobs", type=int, default=1)
    bench.add_argument("--runtime", type=float, default=10.0, metavar="SECONDS")
    bench.add_argument("--size", type=size_arg, default=64 << 20, help="bytes per job")
    bench.add_argument("--offset", type=offset_arg, default=0,
                       help="where job 0's region starts, in bytes (fio's offset; default 0)")  # fmt: skip
    bench.add_argument("--offset-increment", "--offset_increment", dest="offset_increment",
                       type=offset_arg, default=None, metavar="BYTES",
                       help="job N starts at offset + N * this (fio's offset_increment); "
                            "default --size: jobs back to back (fio's default 0 overlaps them, "
                            "which --verify refuses)")  # fmt: skip
    bench.add_argument("--engine", choices=ENGINES, default="block",
                       help="block: the ring's prep_read/prep_write; passthrough: raw 64-byte "
                            "NVM Read/Write commands through prep_cmd (fio's io_uring_cmd)")  # fmt: skip
    bench.add_argument("--rwmixread", type=int, default=50)
    bench.add_argument("--verify", action="store_true", help="write patterns and check reads")
    bench.add_argument("--verify-state-save", metavar="FILE",
                       help="record in FILE which blocks had a completed write and of which "
                            "generation, for a --verify-only pass after a crash (fio's "
                            "verify_state_save); saved atomically at the start, every "
                            "--verify-state-interval, on a lost path and at the end; "
                            "needs --verify")  # fmt: skip
    bench.add_argument("--verify-state-interval", type=float, default=1.0, metavar="SECONDS",
                       help="seconds between periodic saves of --verify-state-save (default 1)")  # fmt: skip
    bench.add_argument("--verify-only", action="store_true",
                       help="write nothing: read every block the --verify-state-load FILE "
                            "claims and check it holds the claimed generation (fio's "
                            "verify_only); status 1 on any bad block")  # fmt: skip
    bench.add_argument("--verify-state-load", metavar="FILE",
                       help="the state a --verify-state-save run left (fio's "
                            "verify_state_load)")  # fmt: skip
    bench.add_argument("--continue-on-error", action="store_true",
                       help="keep going after an I/O error (fio's continue_on_error); by "
                            "default the first error ends the run")  # fmt: skip
    bench.add_argument("--json", action="store_true", help="fio-style JSON on stdout")
    bench.add_argument("--quiet", action="store_true", help="no live per-path view")
    bench.add_argument(
        "--timeline",
        metavar="FILE.html|FILE.png",
        help="plot per-path IOPS over time with path and ANA events marked",
    )
    bench.add_argument(
        "--events",
        metavar="STEPS.jsonl",
        help="also mark the steps of a scenario's step log on the timeline (written by "
        "nvmeof-target ctl scenario run --log, read when the run ends)",
    )
    bench.add_argument("--metrics", type=path_arg, metavar="ADDR:PORT",
                       help="serve Prometheus metrics on http://ADDR:PORT/metrics while it runs")  # fmt: skip
    bench.add_argument("--metrics-linger", type=float, default=0.0, metavar="SECONDS",
                       help="with --metrics: once the report is out, keep serving the final "
                            "values for SECONDS (a scraper gets them; stderr says when)")  # fmt: skip
    add_resv_parsers(sub, _connection_args)
    gen = sub.add_parser("gen-dhchap-key", help="a DH-HMAC-CHAP secret, like nvme-cli's")
    gen.add_argument("-l", "--key-length", type=int, choices=(32, 48, 64),
                     help="key bytes (default: the hash's digest size, 32 without one)")  # fmt: skip
    gen.add_argument("-m", "--hmac", type=int, choices=range(4), default=0,
                     help="transform hash: 0 none, 1 SHA-256, 2 SHA-384, 3 SHA-512")  # fmt: skip
    gen.add_argument("-n", "--nqn", help="host NQN: transform the key with it (nvme-cli 2.x)")
    gen.add_argument("-s", "--secret", metavar="HEX", help="the key in hex instead of random")
    gen_tls = sub.add_parser("gen-tls-key", help="a TLS PSK (NVMeTLSkey-1), like nvme-cli's")
    gen_tls.add_argument("-m", "--hmac", type=int, choices=(1, 2), default=1,
                         help="1 SHA-256 (32-byte key, default), 2 SHA-384 (48 bytes)")  # fmt: skip
    gen_tls.add_argument("-s", "--secret", metavar="HEX",
                         help="the configured PSK in hex instead of random")  # fmt: skip
    check = sub.add_parser("check-tls-key",
                           help="parse an NVMeTLSkey-1 key and print its PSK identity")  # fmt: skip
    check.add_argument("-d", "--key", "--keydata", dest="key", required=True,
                       metavar="NVMeTLSkey-1:..")  # fmt: skip
    check.add_argument("-q", "--hostnqn", required=True)
    check.add_argument("-n", "--subsysnqn", required=True)
    check.add_argument("-I", "--identity", type=int, choices=(0, 1), default=0,
                       help="identity version (default 0)")  # fmt: skip
    check.add_argument("--tls-psk-derivation", choices=TLS_DERIVATIONS, default="compat",
                       help="as for connecting (default compat); it changes a version 1 "
                            "identity's digest")  # fmt: skip
    check.add_argument("-C", "--compat", dest="tls_psk_derivation", action="store_const",
                       const="compat", help="nvme-cli's flag: the compat derivation")  # fmt: skip
    check.add_argument("--tls-sha384-r02", dest="tls_r02_sha256", action="store_false",
                       help="the suite an 02 key is used under: as for connecting")  # fmt: skip
    return parser  # fmt: skip


def _validate(args: argparse.Namespace) -> str | None:
    if args.command in _LOCAL_COMMANDS:
        return None
    if args.dhchap_secret or args.dhchap_ctrl_secret:
        from initiator.auth import parse_secrets

        try:
            parse_secrets(args.dhchap_secret, args.dhchap_ctrl_secret)
        except ValueError as exc:
            return str(exc)
    if args.tls and not args.tls_key:
        return "--tls needs --tls-key (there is no kernel keyring here)"
    if args.tls_key:
        from initiator.tls import parse_tls_key

        try:
            parse_tls_key(args.tls_key)
        except ValueError as exc:
            return str(exc)
    resv = args.command.startswith("resv-")  # -a and -n mean other things there
    if not args.path and not args.traddr:
        return f"give {'' if resv else '-a/'}--traddr (discovery) or --path ADDR:PORT"
    if args.path and not args.nqn and args.command != "discover":
        return f"--path needs {'' if resv else '-n/'}--nqn"
    if args.command == "bench":
        if args.iodepth < 1 or args.numjobs < 1 or args.runtime <= 0:
            return "--iodepth, --numjobs and --runtime must be positive"
        if not 0 <= args.rwmixread <= 100:
            return "--rwmixread must be 0..100"
        if args.timeline and not args.timeline.lower().endswith((".html", ".png")):
            return "--timeline wants a .html or .png file"
        if args.events and not args.timeline:
            return "--events needs --timeline (the steps are drawn on it)"
        if args.verify_only and args.verify_state_save:
            return "--verify-only writes nothing: no --verify-state-save"
        if args.verify_state_save and not args.verify:
            return "--verify-state-save needs --verify (the blocks must carry their header)"
        if args.verify_state_interval <= 0:
            return "--verify-state-interval must be positive"
        if args.verify_only and not args.verify_state_load:
            return "--verify-only needs --verify-state-load FILE (what to verify)"
        if args.verify_state_load and not args.verify_only:
            return "--verify-state-load needs --verify-only"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    problem = _validate(args)
    if problem:
        print(f"nvmeof {args.command}: error: {problem}", file=sys.stderr)
        return EXIT_USAGE
    if args.command in _LOCAL_COMMANDS:
        return _LOCAL_COMMANDS[args.command](args)
    from initiator import commands, resv_commands  # after argument checks: keeps --help fast

    run = resv_commands.run if args.command in resv_commands.RESV_COMMANDS else commands.run

    setup_logging(args.log_level)
    status = 1
    try:
        status = trio.run(run, args)
    except* KeyboardInterrupt:
        status = 130
    except* BrokenPipeError:
        status = reader_went_away()
    except* Exception as group:  # one clear line, not a traceback
        print(f"nvmeof {args.command}: {first_leaf(group)}", file=sys.stderr)
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        status = reader_went_away()
    return status


def _gen_dhchap_key(args: argparse.Namespace) -> int:
    from initiator.auth import gen_dhchap_key

    try:
        print(gen_dhchap_key(args.key_length, args.hmac, nqn=args.nqn, secret_hex=args.secret))
    except ValueError as exc:
        print(f"nvmeof gen-dhchap-key: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return 0


def _gen_tls_key(args: argparse.Namespace) -> int:
    from initiator.tls import gen_tls_key

    try:
        print(gen_tls_key(args.hmac, secret_hex=args.secret))
    except ValueError as exc:
        print(f"nvmeof gen-tls-key: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return 0


def _check_tls_key(args: argparse.Namespace) -> int:
    from initiator.tls import describe_tls_key

    try:
        print(describe_tls_key(args.key, args.hostnqn, args.subsysnqn,
                               identity_version=args.identity,
                               derivation=args.tls_psk_derivation,
                               r02_sha256=args.tls_r02_sha256))  # fmt: skip
    except ValueError as exc:
        print(f"nvmeof check-tls-key: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return 0


#: Commands that connect to nothing (and take no connection options).
_LOCAL_COMMANDS = {
    "gen-dhchap-key": _gen_dhchap_key,
    "gen-tls-key": _gen_tls_key,
    "check-tls-key": _check_tls_key,
}


if __name__ == "__main__":
    sys.exit(main())
