"""The async bodies of ``nvmeof resv-*`` (arguments: :mod:`initiator.resv_cli`).

Output as nvme-cli's: Report in ``nvme_show_resv_report``'s text (``stdout_resv_report``) or
JSON shape (``json_nvme_resv_report``), the other three silent unless ``-v`` (nvme-cli's
verbose result), a refused command one ``NVMe status:`` line on stderr and exit status 1.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from initiator.commands import connect_paths, controller_options, dump_json, err, pick_head
from initiator.host import Host, open_host
from initiator.reservations import ReservationError, acquire, register, release, report_raw
from initiator.resv_cli import report_length
from initiator.status_text import nvme_status_line
from nvmeof.wire.reservations import ReservationStatus, parse_reservation_status

if TYPE_CHECKING:
    from initiator.multipath import MultipathHead

#: Identify Controller CTRATT bit 0: the controller uses 128-bit Host Identifiers, so nvme-cli
#: asks for the extended report whether ``--eds`` was given or not.
CTRATT_HOST_ID_128 = 1 << 0


async def run(args: argparse.Namespace) -> int:
    """:func:`initiator.commands.run` for the ``resv-*`` commands."""
    async with open_host(controller_options(args), iopolicy=args.iopolicy) as host:
        return await RESV_COMMANDS[args.command](host, args)


def _refused(args: argparse.Namespace, error: ReservationError) -> int:
    resent = " (sent again after a path error: the first copy may have run)" if error.resent else ""
    err(f"nvmeof {args.command}: {nvme_status_line(error.status_word)}{resent}")
    return 1


def _done(args: argparse.Namespace, what: str) -> int:
    if args.verbose:
        print(what)
    return 0


async def _send(host: Host, args: argparse.Namespace,
                command: Callable[[MultipathHead], Awaitable[object]], success: str) -> int:  # fmt: skip
    """Connect, send one reservation command through the head, report as nvme-cli does."""
    await connect_paths(host, args)
    head = pick_head(host, args)
    try:
        await command(head)
    except ReservationError as error:
        return _refused(args, error)
    return _done(args, success)


async def cmd_resv_register(host: Host, args: argparse.Namespace) -> int:
    return await _send(host, args, lambda head: register(
        head, args.rrega, crkey=args.crkey, nrkey=args.nrkey, iekey=args.iekey, cptpl=args.cptpl,
    ), "NVME Reservation success")  # fmt: skip


async def cmd_resv_acquire(host: Host, args: argparse.Namespace) -> int:
    return await _send(host, args, lambda head: acquire(
        head, args.racqa, args.rtype, crkey=args.crkey, prkey=args.prkey, iekey=args.iekey,
    ), "NVME Reservation Acquire success")  # fmt: skip


async def cmd_resv_release(host: Host, args: argparse.Namespace) -> int:
    return await _send(host, args, lambda head: release(
        head, args.rrela, args.rtype, crkey=args.crkey, iekey=args.iekey,
    ), "NVME Reservation Release success")  # fmt: skip


async def cmd_resv_report(host: Host, args: argparse.Namespace) -> int:
    sessions = await connect_paths(host, args)
    head = pick_head(host, args)
    eds = args.eds
    assoc = sessions[0].assoc
    if assoc is not None and assoc.identify.ctratt & CTRATT_HOST_ID_128:
        eds = True  # as nvme-cli: the controller says its Host IDs are 128-bit
    try:
        data = await report_raw(head, eds=eds, length=report_length(args.numd))
    except ReservationError as error:
        return _refused(args, error)
    if args.raw_binary:
        sys.stdout.buffer.write(bytes(data))
        return 0
    try:
        status = parse_reservation_status(data, extended=eds)
    except ValueError as problem:
        raise ValueError(f"reservation report: {problem}") from None
    if args.output_format == "json":
        dump_json(report_json(status))
    else:
        print(report_text(status), end="")
    return 0


def report_text(status: ReservationStatus) -> str:
    """``stdout_resv_report``: header, then one block per registrant that fit."""
    lines = ["", "NVME Reservation status:", "",
             f"gen       : {status.gen}", f"rtype     : {status.rtype}",
             f"regstrnt  : {status.regctl}", f"ptpls     : {int(status.ptpls)}"]  # fmt: skip
    for i, entry in enumerate(status.registrants):
        if status.extended:
            lines += [f"registrantext[{i}] :", f"  cntlid     : {entry.cntlid:x}",
                      f"  rcsts      : {int(entry.holds):x}", f"  rkey       : {entry.rkey:x}",
                      f"  hostid     : {entry.hostid.hex()}"]  # fmt: skip
        else:
            lines += [f"registrant[{i}] :", f"  cntlid  : {entry.cntlid:x}",
                      f"  rcsts   : {int(entry.holds):x}",
                      f"  hostid  : {int.from_bytes(entry.hostid, 'little'):x}",
                      f"  rkey    : {entry.rkey:x}"]  # fmt: skip
    return "\n".join(lines) + "\n\n"


def report_json(status: ReservationStatus) -> dict[str, Any]:
    """``json_nvme_resv_report``: ``registrantext`` with EDS (hex Host IDs), ``registrants``
    without (64-bit Host IDs as numbers)."""
    out: dict[str, Any] = {"gen": status.gen, "rtype": status.rtype, "regstrnt": status.regctl,
                           "ptpls": int(status.ptpls)}  # fmt: skip
    if status.extended:
        out["registrantext"] = [{"cntlid": r.cntlid, "rcsts": int(r.holds), "rkey": r.rkey,
                                 "hostid": r.hostid.hex()} for r in status.registrants]  # fmt: skip
    else:
        out["registrants"] = [{"cntlid": r.cntlid, "rcsts": int(r.holds),
                               "hostid": int.from_bytes(r.hostid, "little"), "rkey": r.rkey}
                              for r in status.registrants]  # fmt: skip
    return out


RESV_COMMANDS = {
    "resv-register": cmd_resv_register,
    "resv-acquire": cmd_resv_acquire,
    "resv-release": cmd_resv_release,
    "resv-report": cmd_resv_report,
}
