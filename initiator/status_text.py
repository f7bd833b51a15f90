"""A failed command's status in nvme-cli's words: ``NVMe status: <text>(<value>)``.

nvme-cli prints ``libnvme_status_to_string`` followed by the status value the kernel hands
back (the CQE status field shifted right by one: DNR shows as 0x4000, More as 0x2000), e.g.
``NVMe status: Reservation Conflict: The command was aborted due to a conflict with a
reservation held on the accessed namespace(0x4083)``. The texts below are libnvme's
(``src/nvme/util.c``) for the statuses an NVM I/O command over Fabrics can meet; another code
gets libnvme's own fallback, ``unrecognized``, followed by the kernel's name for it.
"""

from __future__ import annotations

from collections.abc import Mapping

from nvmeof.status import Sct, Status, StatusCode

_TEXTS: Mapping[int, str] = {
    StatusCode.INVALID_OPCODE: "Invalid Command Opcode: A reserved coded value or an "
    "unsupported value in the command opcode field",
    StatusCode.INVALID_FIELD: "Invalid Field in Command: A reserved coded value or an "
    "unsupported value in a defined field",
    StatusCode.DATA_XFER_ERROR: "Data Transfer Error: Transferring the data or metadata "
    "associated with a command experienced an error",
    StatusCode.INTERNAL: "Internal Error: The command was not completed successfully due to an "
    "internal error",
    StatusCode.ABORT_REQ: "Command Abort Requested: The command was aborted due to an Abort "
    "command",
    StatusCode.INVALID_NS: "Invalid Namespace or Format: The namespace or the format of that "
    "namespace is invalid",
    StatusCode.SGL_INVALID_DATA: "Data SGL Length Invalid: The length of a Data SGL is too "
    "short or too long and the controller does not support SGL transfers longer than the "
    "amount of data to be transferred",
    StatusCode.HOST_ID_INCONSIST: "Host Identifier Inconsistent Format: The NVM subsystem "
    "detected the simultaneous use of 64- bit and 128-bit Host Identifier values on different "
    "controllers",
    StatusCode.ABORTED_PREEMPT_ABORT: "Command Aborted due to Preempt and Abort: The command "
    "was aborted due to a Reservation Acquire command",
    StatusCode.CMD_INTERRUPTED: "Command Interrupted: Command processing was interrupted and the "
    "controller is unable to successfully complete the command",
    StatusCode.TRANSIENT_TR_ERR: "Transient Transport Error: A transient transport error was "
    "detected",
    StatusCode.LBA_RANGE: "LBA Out of Range: The command references an LBA that exceeds the size "
    "of the namespace",
    StatusCode.NS_NOT_READY: "Namespace Not Ready: The namespace is not ready to be accessed",
    StatusCode.RESERVATION_CONFLICT: "Reservation Conflict: The command was aborted due to a "
    "conflict with a reservation held on the accessed namespace",
    StatusCode.ANA_PERSISTENT_LOSS: "Asymmetric Access Persistent Loss: The controller is in a "
    "persistent loss state with the requested namespace",
    StatusCode.ANA_INACCESSIBLE: "Asymmetric Access Inaccessible: The controller is in an "
    "inaccessible state with the requested namespace",
    StatusCode.ANA_TRANSITION: "Asymmetric Access Transition: The controller is currently "
    "transitioning states with the requested namespace",
    StatusCode.HOST_PATH_ERROR: "Host Pathing Error: A pathing error was detected by the host",
    StatusCode.HOST_ABORTED_CMD: "Command Aborted By Host: The command was aborted as a result "
    "of host action",
}


def nvme_cli_text(status: Status) -> str:
    """libnvme's text for ``status`` (nvme-cli's ``NVMe status:`` line without its value)."""
    text = _TEXTS.get(status.code)
    if text is not None:
        return text
    if status.sct == Sct.VENDOR:
        return "Vendor Specific Status"
    return f"unrecognized ({status.name})"


def nvme_status_line(status_word: int) -> str:
    """``NVMe status: <text>(<value>)`` for a CQE status word, as nvme-cli prints it."""
    value = (status_word >> 1) & 0x7FFF
    return f"NVMe status: {nvme_cli_text(Status.from_word(status_word))}({value:#x})"
