"""Exceptions that carry the wire answer (TermReq FES/FEI, or an NVMe status)."""

from __future__ import annotations

from nvmeof.constants import FatalErrorStatus
from nvmeof.status import Status


class NvmeofError(Exception):
    """Base class of every error raised by this package."""


class TransportError(NvmeofError):
    """A fatal NVMe/TCP transport error: the connection must be terminated.

    Attributes:
        fes: the Fatal Error Status to put in a TermReq.
        fei: Fatal Error Information (the offset of the bad header field for FES 0x01/0x06).
        header: up to 128 bytes of the offending PDU header, echoed in the TermReq.
    """

    def __init__(
        self, fes: FatalErrorStatus, message: str, *, fei: int = 0, header: bytes = b""
    ) -> None:
        super().__init__(message)
        self.fes = fes
        self.fei = fei
        self.header = bytes(header[:128])

    def __str__(self) -> str:
        return f"{self.args[0]} (FES {self.fes.name}, FEI {self.fei})"


class LocalProtocolError(NvmeofError):
    """We were asked to do something the protocol does not allow in the current state."""


class RemoteTerminated(NvmeofError):
    """The peer sent a TermReq."""

    def __init__(self, fes: int, fei: int) -> None:
        super().__init__(f"peer terminated the connection: FES 0x{fes:02x}, FEI 0x{fei:x}")
        self.fes = fes
        self.fei = fei


class CommandError(NvmeofError):
    """A command failed with an NVMe status (raised by handlers, turned into a CQE).

    ``loc`` is the byte offset in the SQE of the field at fault (the error log's Parameter
    Error Location). Like nvmet (``nvmet_set_error``), a controller logs an error that has a
    location and then sets the More bit in the completion.
    """

    def __init__(
        self, status: Status, message: str = "", *, result: int = 0, loc: int | None = None
    ) -> None:
        super().__init__(message or str(status))
        self.status = status
        self.result = result
        self.loc = loc
