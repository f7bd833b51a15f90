"""``nvmeof-target ctl resv``: look at and clear a namespace's persistent reservations.

    nvmeof-target ctl resv show NQN NSID [--json]
    nvmeof-target ctl resv clear NQN NSID

Kept apart from :mod:`target.control.ctl` (which adds these through :func:`add_resv_parser`) so
that neither file grows past what a reader takes in at once.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

from target.control.client import ControlClient
from target.control.ctlformat import format_reservations, reservation_type_abbreviation

Command = Callable[[ControlClient, argparse.Namespace], str]
#: ``leaf(parent, name, command, help)`` and ``group(name, help)`` of ``add_ctl_parser``.
Leaf = Callable[[Any, str, Command, str], argparse.ArgumentParser]
Group = Callable[[str, str], Any]


def _resv_show(client: ControlClient, args: argparse.Namespace) -> str:
    info = client.reservations(args.nqn, args.nsid)
    return json.dumps(info, indent=2) if args.json else format_reservations(dict(info))


def _resv_clear(client: ControlClient, args: argparse.Namespace) -> str:
    done = client.reservations_clear(args.nqn, args.nsid)
    released = done["released_type"]
    what = (f"{reservation_type_abbreviation(released)} reservation released"
            if released else "no reservation was held")  # fmt: skip
    count = done["removed"]
    return (f"cleared namespace {args.nsid} of {args.nqn}: {count} "
            f"registrant{'s' if count != 1 else ''} removed, {what}, "
            f"{done['notified']} controllers notified (generation {done['generation']})")  # fmt: skip


def add_resv_parser(group: Group, leaf: Leaf) -> None:
    """Add ``ctl resv show`` and ``ctl resv clear``."""
    resv = group("resv", "persistent reservations of a namespace")
    show = leaf(resv, "show", _resv_show,
                "registrants, holder, type, generation, PTPL, conflicts")  # fmt: skip
    clear = leaf(resv, "clear", _resv_clear,
                 "drop every registration and the reservation (registrants are notified)")  # fmt: skip
    for parser in (show, clear):
        parser.add_argument("nqn", metavar="NQN")
        parser.add_argument("nsid", metavar="NSID", type=int)
    show.add_argument("--json", action="store_true", help="the raw JSON document")
