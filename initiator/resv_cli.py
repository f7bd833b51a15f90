"""The ``nvmeof resv-*`` arguments: nvme-cli's ``resv-register``/``-acquire``/``-release``/
``-report`` names and flags (``plugins/resv/resv-plugin.c``; ``nvme resv <action>`` in
nvme-cli 3, where the dashed names stay as aliases).

nvme-cli's reservation flags reuse short letters that our connection options (``nvme
connect``'s) also use: ``-n`` (namespace), ``-c``, ``-k``, ``-t``, ``-a``, ``-i``. In these
commands the reservation meaning wins and those connection options keep only their long form
(``--nqn``, ``--traddr``, ``--transport``, ``--reconnect-delay``, ``--keep-alive-tmo``,
``--nr-io-queues``); ``-N`` also names the namespace, as in ``read``/``write``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

#: Short flags the reservation commands mean otherwise than the connection options do.
RESV_SHORT_FLAGS = frozenset({"-n", "-c", "-k", "-t", "-a", "-i"})
#: nvme-cli's Report size: NUMD 0 or too large means 4 KiB, less than 3 means 3 (16 bytes).
REPORT_NUMD_MAX = (0x1000 >> 2) - 1
REPORT_NUMD_MIN = 3

ConnectionArgs = Callable[..., None]


def _number(limit: int, what: str) -> Callable[[str], int]:
    """A decimal or 0x-hex integer below ``limit`` (nvme-cli's OPT_BYTE/OPT_UINT/OPT_SUFFIX)."""

    def parse(text: str) -> int:
        try:
            value = int(text, 0)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not 0 <= value < limit:
            raise argparse.ArgumentTypeError(f"{what} must be 0..{limit - 1}: {text!r}")
        return value

    return parse


_key = _number(1 << 64, "a reservation key")
_byte = _number(1 << 8, "a byte")
_u32 = _number(1 << 32, "a 32-bit value")


def _action(name: str, limit: int = 8) -> Callable[[str], int]:
    """nvme-cli refuses an action above 7 (``invalid racqa:8``) and a CPTPL above 3."""

    def parse(text: str) -> int:
        value = _byte(text)
        if value >= limit:
            raise argparse.ArgumentTypeError(f"invalid {name}:{value}")
        return value

    return parse


def add_resv_parsers(sub: Any, connection_args: ConnectionArgs) -> None:
    """The four ``resv-*`` subcommands, on ``build_parser``'s subparsers."""
    register = sub.add_parser("resv-register", help="Reservation Register (nvme resv-register)")
    acquire = sub.add_parser("resv-acquire", help="Reservation Acquire (nvme resv-acquire)")
    release = sub.add_parser("resv-release", help="Reservation Release (nvme resv-release)")
    report = sub.add_parser("resv-report", help="Reservation Report (nvme resv-report)")
    for cmd in (register, acquire, release, report):
        connection_args(cmd, short_taken=RESV_SHORT_FLAGS)
        cmd.add_argument("-n", "-N", "--namespace-id", type=_u32, default=1,
                         help="namespace (default 1)")  # fmt: skip
        cmd.add_argument("-o", "--output-format", choices=("normal", "json"), default="normal")
        cmd.add_argument("-v", "--verbose", action="store_true",
                         help="say so when the command succeeds (nvme-cli's verbose result)")  # fmt: skip
    for cmd in (register, acquire, release):
        cmd.add_argument("-c", "--crkey", type=_key, default=0, help="current reservation key")
        cmd.add_argument("-i", "--iekey", action="store_true", help="ignore existing res. key")
    register.add_argument("-k", "--nrkey", type=_key, default=0, help="new reservation key")
    register.add_argument("-r", "--rrega", type=_action("rrega"), default=0,
                          help="reservation registration action: 0 register, 1 unregister, "
                               "2 replace")  # fmt: skip
    register.add_argument("-p", "--cptpl", type=_action("cptpl", 4), default=0,
                          help="change persistence through power loss setting: 0 no change, "
                               "2 clear, 3 persist")  # fmt: skip
    acquire.add_argument("-p", "--prkey", type=_key, default=0, help="pre-empt reservation key")
    for cmd in (acquire, release):
        cmd.add_argument("-t", "--rtype", type=_byte, default=0, help="reservation type (1-6)")
    acquire.add_argument("-a", "--racqa", type=_action("racqa"), default=0,
                         help="reservation acquire action: 0 acquire, 1 preempt, "
                              "2 preempt and abort")  # fmt: skip
    release.add_argument("-a", "--rrela", type=_action("rrela"), default=0,
                         help="reservation release action: 0 release, 1 clear")  # fmt: skip
    report.add_argument("-d", "--numd", type=_u32, default=0,
                        help="number of dwords to transfer (default: 4 KiB)")  # fmt: skip
    report.add_argument("-e", "--eds", action="store_true",
                        help="request extended data structure (128-bit Host IDs; needed over "
                             "Fabrics unless the controller says so in CTRATT)")  # fmt: skip
    report.add_argument("-b", "--raw-binary", action="store_true",
                        help="dump output in binary format")  # fmt: skip


def report_length(numd: int) -> int:
    """Bytes a ``resv-report -d NUMD`` reads, clamped as nvme-cli clamps it."""
    if not numd or numd >= REPORT_NUMD_MAX + 1:
        numd = REPORT_NUMD_MAX
    numd = max(numd, REPORT_NUMD_MIN)
    return (numd + 1) * 4
