"""Events produced by the NVMe/TCP connection state machines (past tense, like h2/aioquic).

Not frozen: one is created per PDU, and a frozen dataclass costs twice as much to build.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class ConnectionEstablished:
    """ICReq/ICResp exchange finished; digests and limits are now in force."""

    header_digest: bool
    data_digest: bool
    #: Host: the controller's MAXH2CDATA. Controller: the host's MAXR2T + 1.
    limit: int


@dataclass(slots=True)
class CommandReceived:
    """Controller side: a command capsule arrived.

    ``sqe`` is a private 64-byte copy. ``data`` holds the in-capsule data (a copy) or None.
    If the command moves data host-to-controller through R2T (``transfer_length`` > 0 and
    ``data`` None), call :meth:`ControllerConnection.request_data` once it is validated.
    ``data_digest_ok`` is False when the in-capsule data failed its digest.
    """

    cid: int
    sqe: bytes
    data: bytes | None
    transfer_length: int
    data_digest_ok: bool = True


@dataclass(slots=True)
class DataReceived:
    """Controller side: all data requested by :meth:`request_data` for ``cid`` arrived;
    ``ttag`` is the tag :meth:`request_data` returned (a CID may be reused meanwhile)."""

    cid: int
    data_digest_ok: bool
    ttag: int = 0


@dataclass(slots=True)
class ResponseReceived:
    """Host side: a command completed (CapsuleResp, or C2HData with the SUCCESS flag)."""

    cid: int
    status: int  # the 16-bit CQE status word
    dw0: int
    dw1: int
    sqhd: int
    sqid: int


@dataclass(slots=True)
class TermReqReceived:
    """The peer terminated the connection with a TermReq."""

    fes: int
    fei: int
