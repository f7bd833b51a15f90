"""The host library's error for a command that completed with an error status.

Its own module so that the head (:mod:`initiator.multipath`) and the commands layered on it
(:mod:`initiator.reservations`) share it without importing each other.
"""

from __future__ import annotations

from nvmeof.errors import NvmeofError
from nvmeof.status import Status


class IoError(NvmeofError):
    """An I/O completed with an error status (after any retries and failovers)."""

    def __init__(self, status_word: int, message: str) -> None:
        super().__init__(message)
        self.status_word = status_word

    @property
    def status(self) -> Status:
        """The completion status (code, DNR, More, CRD), parsed from :attr:`status_word`."""
        return Status.from_word(self.status_word)
