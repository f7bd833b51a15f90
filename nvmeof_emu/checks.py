"""What counts as a broken target, and the small translations the context managers share.

**The internal-error rule.** A target under test may refuse, reset, drop and fail commands on
purpose: those are log records at info or warning level (and some error-level ones such as
``storage error``, ``accept failed`` or ``capture stopped``, which report the environment, not
a bug). An *internal error* is a bug in the emulator itself, and fails the test that saw it:

* an error-level (or critical) record that carries a traceback: ``log.exception(...)``, as in
  ``handler failed`` (a command handler raised), ``connection failed`` (a connection task
  raised) or an exception in the control API (hypercorn logs it with its traceback); in the
  daemon's logfmt log such a line has ``level=error`` and an ``exc="Traceback ...`` field;
* a Python traceback printed outside logging (``Traceback (most recent call last):`` at the
  start of a line), e.g. an exception that escaped the daemon's main.

The words "internal error" alone do not count: they are also the name of an NVMe status
(0x06) a host may legitimately be answered with.
"""

from __future__ import annotations

import logging
import re
import signal
from collections.abc import Mapping, Sequence
from typing import Any

from nvmeof.constants import IoOpcode
from target.control.clientbase import TargetStatus

_LOGFMT_ERROR = re.compile(r"\blevel=(error|critical)\b.*\bexc=\"Traceback")
_BARE_TRACEBACK = re.compile(r"^Traceback \(most recent call last\):", re.MULTILINE)

#: Opcode names a fault rule may use instead of numbers (NVM command set, I/O queues).
OPCODES: dict[str, int] = {op.name.lower().replace("_", "-"): int(op) for op in IoOpcode}


class TargetFailed(AssertionError):
    """The emulated target crashed, did not stop, or logged an internal error."""


def internal_errors(log_text: str) -> list[str]:
    """The lines of a daemon log (logfmt) that show an internal error (the rule above)."""
    found = []
    for line in log_text.splitlines():
        if _LOGFMT_ERROR.search(line) or _BARE_TRACEBACK.match(line):
            found.append(line)
    return found


def is_internal_error(record: logging.LogRecord) -> bool:
    """Whether an in-process log record is an internal error (the rule above)."""
    return record.levelno >= logging.ERROR and bool(record.exc_info)


def describe_exit(returncode: int) -> str:
    """``status 3`` or ``signal SIGKILL`` for a subprocess return code."""
    if returncode < 0:
        try:
            return f"signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"signal {-returncode}"
    return f"status {returncode}"


def opcode_number(opcode: int | str) -> int:
    """An opcode given as a number, ``"0x02"``, or a name such as ``"read"``, ``"write"``,
    ``"flush"``, ``"write-zeroes"``."""
    if isinstance(opcode, int):
        return opcode
    text = opcode.strip().lower().replace("_", "-")
    if text in OPCODES:
        return OPCODES[text]
    try:
        return int(text, 0)
    except ValueError:
        raise ValueError(f"unknown opcode {opcode!r} (a number or one of "
                         f"{', '.join(sorted(OPCODES))})") from None  # fmt: skip


def fault_fields(opcode: int | str | None, fields: Mapping[str, Any]) -> dict[str, Any]:
    """The body fields of a fault rule, with ``opcode`` as a number."""
    body = dict(fields)
    if opcode is not None:
        body["opcode"] = opcode_number(opcode)
    return body


def ana_state_on(status: TargetStatus, port_id: int, group: int) -> str | None:
    """A group's ANA state on a port as the target reports it; None when the port does not
    list the group (it is then optimized by default)."""
    for port in status["ports"]:
        if port["id"] == port_id:
            return port["ana"].get(str(group))
    raise ValueError(f"no port {port_id} on the target")


def io_ports(port_subsystems: Mapping[int, Sequence[str]]) -> list[int]:
    """The ports that expose a subsystem (every port when none does): where a subsystem
    created by a test goes when it does not name its ports."""
    exposing = sorted(pid for pid, nqns in port_subsystems.items() if nqns)
    return exposing or sorted(port_subsystems)
