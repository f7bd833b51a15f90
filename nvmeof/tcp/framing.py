"""Incremental NVMe/TCP framing: bytes in, validated PDUs out (docs/PROTOCOL.md §1.1-1.5).

Rules of this module:
- It frames and validates; it never interprets commands. Lengths (hlen, pdo, plen), the
  digest flags against what was negotiated, the maximum PDU size and the header digest are all
  checked *before* a PDU is handed out, so later parsing never sees a short buffer.
- Any framing violation raises :class:`TransportError` carrying the TermReq FES and the byte
  offset of the offending header field (FEI); the caller terminates the connection.
- Two modes. *Strict* (the host side, and a target port with ``strict = true``) checks every
  common-header rule of the transport specification. *Tolerant* (a target port by default)
  checks only what nvmet-tcp checks in ``nvmet_tcp_try_recv_pdu``: the PDU type, the exact
  header length, a header digest where one was negotiated and the data digest flag on a PDU
  with data; PDO is ignored (data starts right after the header and its digest, where nvmet
  reads it) and digest flags that were not negotiated are ignored (docs/TOLERANCE.md).
- A data digest mismatch is not fatal here: the PDU is returned with ``data_digest_ok`` False and
  the receiver fails only that command (what the Linux host does, docs/PROTOCOL.md §7.3).
- Bytes live in one preallocated buffer (``recv_into`` friendly), 64 KiB at first, grown only
  while larger PDUs arrive (up to room for two of the largest legal ones). The views a :class:`Pdu`
  holds are valid until the next :meth:`PduReader.get_buffer`, :meth:`PduReader.feed` or
  :meth:`PduReader.commit`: copy what you keep.
"""

from __future__ import annotations

import struct

from nvmeof.constants import (
    CH_SIZE,
    FLAG_DDGSTF,
    FLAG_HDGSTF,
    PDU_C2H_DATA,
    PDU_C2H_TERM_REQ,
    PDU_CAPSULE_CMD,
    PDU_CAPSULE_RESP,
    PDU_H2C_DATA,
    PDU_H2C_TERM_REQ,
    PDU_ICREQ,
    PDU_ICRESP,
    PDU_R2T,
    TERMREQ_HLEN,
    TERMREQ_MAX_DATA,
    FatalErrorStatus as Fes,
)
from nvmeof.digest import crc32c
from nvmeof.errors import TransportError

#: The common header as (type | flags << 8 | hlen << 16 | pdo << 24, plen).
_SIGNATURE = struct.Struct("<II")

#: Exact header length of each PDU type.
HLEN: dict[int, int] = {
    PDU_ICREQ: 128,
    PDU_ICRESP: 128,
    PDU_H2C_TERM_REQ: TERMREQ_HLEN,
    PDU_C2H_TERM_REQ: TERMREQ_HLEN,
    PDU_CAPSULE_CMD: 72,
    PDU_CAPSULE_RESP: 24,
    PDU_H2C_DATA: 24,
    PDU_C2H_DATA: 24,
    PDU_R2T: 24,
}
#: PDU types that carry a header digest when it was negotiated.
HEADER_DIGEST_TYPES = frozenset(
    {PDU_CAPSULE_CMD, PDU_CAPSULE_RESP, PDU_H2C_DATA, PDU_C2H_DATA, PDU_R2T}
)
#: PDU types that may carry data (and then a data digest when negotiated).
DATA_TYPES = frozenset({PDU_CAPSULE_CMD, PDU_H2C_DATA, PDU_C2H_DATA})
#: What each side may receive.
CONTROLLER_RECEIVES = frozenset({PDU_ICREQ, PDU_H2C_TERM_REQ, PDU_CAPSULE_CMD, PDU_H2C_DATA})
HOST_RECEIVES = frozenset({PDU_ICRESP, PDU_C2H_TERM_REQ, PDU_CAPSULE_RESP, PDU_C2H_DATA, PDU_R2T})

# Offsets of the common header fields, for FEI.
_OFF_TYPE, _OFF_FLAGS, _OFF_HLEN, _OFF_PDO, _OFF_PLEN = 0, 1, 2, 3, 4
_DIGEST = 4
#: Most bytes :meth:`PduReader.feed` will hold unframed.
MAX_FEED_BUFFER = 64 << 20
#: A reader's receive buffer at first. It grows (doubling, see :meth:`PduReader.get_buffer`)
#: only while PDUs larger than its free space arrive: a connection that never sees one keeps
#: 64 KiB, where allocating (and zeroing, so resident) room for the largest legal PDU at once
#: cost every host queue 2 MiB, again at every reconnect (the soak's host RSS grew with each
#: reconnect burst, as freed megabyte blocks stayed in the C heap).
INITIAL_BUFFER = 65536
#: Less free than this after compaction, and :meth:`PduReader.get_buffer` grows the buffer.
MIN_FREE = 16384


class Pdu:
    """One complete, validated PDU. ``header`` is CH+PSH (hlen bytes); ``data`` the payload."""

    __slots__ = ("data", "data_digest_ok", "flags", "header", "plen", "type")

    def __init__(
        self, pdu_type: int, flags: int, plen: int, header: memoryview, data: memoryview, ok: bool
    ) -> None:
        self.type = pdu_type
        self.flags = flags
        self.plen = plen
        self.header = header
        self.data = data
        self.data_digest_ok = ok

    def __repr__(self) -> str:
        return f"Pdu(type={self.type:#x}, flags={self.flags:#x}, plen={self.plen})"


class PduReader:
    """Frames PDUs out of a byte stream for one side of a connection.

    Args:
        receives: the PDU types this side may receive (:data:`CONTROLLER_RECEIVES` or
            :data:`HOST_RECEIVES`).
        max_data: the largest payload any single PDU may carry; more is a
            Data Transfer Limit Exceeded error.
    """

    def __init__(self, receives: frozenset[int], max_data: int, *, strict: bool = True,
                 in_capsule_limit: int = 8192) -> None:  # fmt: skip
        self.receives = receives
        self.strict = strict
        #: Tolerant mode: the most in-capsule data a write may carry (the port's setting).
        self.in_capsule_limit = in_capsule_limit
        self.max_data = max_data
        self._header_digest = False
        self._data_digest = False
        #: Header shapes (type, flags, hlen, pdo as one u32) already validated: (header digest,
        #: fixed plen or 0 for data PDUs, data digest bytes). Skips re-checking every PDU.
        self._known: dict[int, tuple[bool, int, int]] = {}
        # Room for the largest legal PDU (header 128 + digests + data) and one more read, at
        # most: the buffer starts at INITIAL_BUFFER and grows while larger PDUs arrive.
        self._max_size = max(INITIAL_BUFFER, 2 * (max_data + 256))
        self._size = INITIAL_BUFFER
        self._buf = bytearray(self._size)
        self._view = memoryview(self._buf)
        self._start = 0  # first unconsumed byte
        self._end = 0  # one past the last received byte

    @property
    def header_digest(self) -> bool:
        return self._header_digest

    @header_digest.setter
    def header_digest(self, on: bool) -> None:
        self._header_digest = on
        self._known.clear()

    @property
    def data_digest(self) -> bool:
        return self._data_digest

    @data_digest.setter
    def data_digest(self, on: bool) -> None:
        self._data_digest = on
        self._known.clear()

    # -- input -------------------------------------------------------------------------------

    def get_buffer(self) -> memoryview:
        """Free space to ``recv_into``; follow with :meth:`commit` of the byte count.

        With less than :data:`MIN_FREE` bytes free (a PDU larger than the buffer is arriving)
        the buffer is replaced by one twice the size, up to room for two of the largest legal
        PDUs (views handed out earlier keep the old one alive)."""
        self._compact()
        if self._size - self._end < MIN_FREE and self._size < self._max_size:
            self._replace(min(self._max_size, 2 * self._size))
        return self._view[self._end :]

    def commit(self, nbytes: int) -> None:
        """Account for ``nbytes`` written into the view returned by :meth:`get_buffer`."""
        if nbytes < 0 or self._end + nbytes > self._size:
            raise ValueError("commit beyond the receive buffer")
        self._end += nbytes

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Append received bytes (for transports without ``recv_into``).

        If the bytes do not fit, the buffer is replaced by a larger one (views handed out
        earlier keep the old one alive); more than :data:`MAX_FEED_BUFFER` pending is an error.
        """
        self._compact()
        total = len(data)
        if self._end + total > self._size:
            needed = self._end + total
            if needed > MAX_FEED_BUFFER:
                raise TransportError(Fes.DATA_TRANSFER_LIMIT_EXCEEDED, "receive buffer full")
            self._replace(max(needed, 2 * self._size))
        self._view[self._end : self._end + total] = data
        self._end += total

    def _replace(self, size: int) -> None:
        """A new buffer of ``size`` bytes holding what is pending (compacted first)."""
        bigger = bytearray(size)
        bigger[: self._end] = self._view[: self._end]
        self._buf, self._view, self._size = bigger, memoryview(bigger), size

    def pending(self) -> tuple[memoryview, int, int]:
        """A view of the receive buffer and the bounds (start, end) of its unframed bytes: for a caller
        that frames one common PDU shape itself (:meth:`ControllerConnection.peek_plain_rw`),
        then :meth:`consume` what it took."""
        return self._view, self._start, self._end

    def consume(self, nbytes: int) -> None:
        """Drop ``nbytes`` framed by the caller from the front of :meth:`pending`."""
        if nbytes < 0 or self._start + nbytes > self._end:
            raise ValueError("consume beyond the received bytes")
        self._start += nbytes

    @property
    def buffered(self) -> int:
        """Bytes received but not yet framed into a PDU."""
        return self._end - self._start

    def _compact(self) -> None:
        if self._start == 0:
            return
        pending = self._end - self._start
        if pending:
            self._view[:pending] = self._view[self._start : self._end]
        self._start = 0
        self._end = pending

    # -- framing -----------------------------------------------------------------------------

    def next_pdu(self) -> Pdu | None:
        """The next complete PDU, or None if more bytes are needed.

        Raises:
            TransportError: the stream is malformed; the connection must be terminated.
        """
        avail = self._end - self._start
        if avail < CH_SIZE:
            return None
        start = self._start
        sig, plen = _SIGNATURE.unpack_from(self._buf, start)
        pdu_type, flags, hlen, pdo = sig & 0xFF, (sig >> 8) & 0xFF, (sig >> 16) & 0xFF, sig >> 24
        if not self.strict:
            return self._next_tolerant(pdu_type, flags, hlen, plen, start, avail)
        known = self._known.get(sig)
        if known is not None and (
            plen == known[1]
            if known[1]
            else pdo + known[2] < plen <= pdo + known[2] + self.max_data
        ):
            hdgst = known[0]  # a header shape validated before, with a plausible length
        else:
            hdgst = self._check_header(pdu_type, flags, hlen, pdo, plen, start)
            if pdu_type not in _TERM_TYPES:
                dd = _DIGEST if flags & FLAG_DDGSTF else 0
                self._known[sig] = (hdgst, 0 if pdo else plen, dd)
        if avail < plen:
            return None
        view = self._view
        header = view[start : start + hlen]
        if hdgst:
            expected = int.from_bytes(view[start + hlen : start + hlen + _DIGEST], "little")
            if crc32c(header) != expected:
                raise TransportError(
                    Fes.HEADER_DIGEST_ERROR, "header digest mismatch", header=bytes(header)
                )
        ok = True
        if pdo:
            ddgst = _DIGEST if flags & FLAG_DDGSTF else 0
            data = view[start + pdo : start + plen - ddgst]
            if ddgst:
                expected = int.from_bytes(view[start + plen - _DIGEST : start + plen], "little")
                ok = crc32c(data) == expected
        else:
            data = view[start + hlen : start + plen] if pdu_type in _TERM_TYPES else view[0:0]
        self._start = start + plen
        return Pdu(pdu_type, flags, plen, header, data, ok)

    def _next_tolerant(self, pdu_type: int, flags: int, hlen: int, plen: int, start: int,
                       avail: int) -> Pdu | None:  # fmt: skip
        """nvmet-tcp's framing (``nvmet_tcp_try_recv_pdu``, ``nvmet_tcp_done_recv_pdu``).

        The header is HLEN bytes (plus a header digest when negotiated). A CapsuleCmd's data
        length comes from its SGL, not from PLEN: nvmet reads in-capsule data only for a write
        whose SGL is an offset descriptor of at most the in-capsule size; whatever else the
        host put in the PDU is read as the next PDU. An H2CData carries DATAL bytes, which
        must agree with PLEN. PLEN otherwise only decides whether the DDGSTF flag must be set.
        """

        def bad(offset: int, why: str, fes: Fes = Fes.INVALID_PDU_HEADER_FIELD) -> TransportError:
            return self._error(start, hlen, offset, why, fes)

        self._check_type_and_hlen(pdu_type, hlen, start)
        if pdu_type in _TERM_TYPES:
            if not TERMREQ_HLEN <= plen <= TERMREQ_HLEN + TERMREQ_MAX_DATA:
                raise bad(_OFF_PLEN, f"TermReq plen {plen}")
            if avail < plen:
                return None
            self._start = start + plen
            view = self._view
            return Pdu(pdu_type, flags, plen, view[start : start + hlen],
                       view[start + hlen : start + plen], True)  # fmt: skip
        hd = _DIGEST if self._header_digest and pdu_type in HEADER_DIGEST_TYPES else 0
        if hd and not flags & FLAG_HDGSTF:
            raise bad(_OFF_FLAGS, "header digest negotiated, HDGSTF clear")
        data_start = hlen + hd
        if avail < data_start:
            return None
        if self._data_digest and pdu_type in DATA_TYPES:  # nvmet_tcp_check_ddgst
            # A u32 in nvmet: a PLEN shorter than the header wraps around to "data"; HDGSTF
            # counts only with the negotiated header digest length (0 when none).
            announced = (plen - hlen - (hd if flags & FLAG_HDGSTF else 0)) & 0xFFFFFFFF
            if announced and not flags & FLAG_DDGSTF:
                raise bad(_OFF_FLAGS, "data digest negotiated, DDGSTF clear on a PDU with data")
        buf = self._buf
        if pdu_type == PDU_CAPSULE_CMD:
            opcode = buf[start + 8]
            direction = buf[start + 12] if opcode == _FABRICS else opcode
            length = int.from_bytes(buf[start + 40 : start + 44], "little")
            inline = (
                buf[start + 47] == _SGL_OFFSET_DESCRIPTOR
                and direction & 1
                and 0 < length <= self.in_capsule_limit
            )
            dlen = length if inline else 0
        elif pdu_type == PDU_H2C_DATA:
            dlen = int.from_bytes(buf[start + 16 : start + 20], "little")
            expected = plen - data_start - (_DIGEST if self._data_digest else 0)
            if dlen != expected or dlen == 0:
                raise bad(16, f"H2CData DATAL {dlen}, PLEN says {expected}")
            if dlen > self.max_data:
                raise bad(16, f"H2CData of {dlen} bytes", Fes.DATA_TRANSFER_LIMIT_EXCEEDED)
        else:  # ICReq: nvmet reads its 128 bytes; a wrong PLEN is for the ICReq handler
            dlen = 0
        dd = _DIGEST if self._data_digest and dlen else 0
        total = data_start + dlen + dd
        if avail < total:
            return None
        view = self._view
        header = view[start : start + hlen]
        if hd:
            expected_hd = int.from_bytes(view[start + hlen : start + data_start], "little")
            if crc32c(header) != expected_hd:
                raise TransportError(
                    Fes.HEADER_DIGEST_ERROR, "header digest mismatch", header=bytes(header)
                )
        data = view[start + data_start : start + data_start + dlen]
        if dd:
            digest = int.from_bytes(view[start + total - _DIGEST : start + total], "little")
            if crc32c(data) != digest:
                # nvmet_tcp_try_recv_ddgst: a data digest error is fatal to the queue (the
                # spec's Transient Transport Error answer is strict mode's). The spec has no
                # FES for it, not making it fatal: the nearest one goes in our TermReq.
                raise TransportError(Fes.HEADER_DIGEST_ERROR, "data digest mismatch",
                                     header=bytes(view[start : start + hlen]))  # fmt: skip
        self._start = start + total
        return Pdu(pdu_type, flags, plen, header, data, True)

    def _error(self, start: int, hlen: int, offset: int, why: str, fes: Fes) -> TransportError:
        echo = min(max(hlen, CH_SIZE), TERMREQ_MAX_DATA, self._end - start)
        return TransportError(fes, why, fei=offset, header=bytes(self._view[start : start + echo]))

    def _check_type_and_hlen(self, pdu_type: int, hlen: int, start: int) -> None:
        """The two checks both modes make (nvmet too): a PDU type this side may receive, and
        exactly that type's header length."""
        if pdu_type not in self.receives:
            raise self._error(start, hlen, _OFF_TYPE, f"unexpected PDU type {pdu_type:#x}",
                              Fes.INVALID_PDU_HEADER_FIELD)  # fmt: skip
        if hlen != HLEN[pdu_type]:
            raise self._error(start, hlen, _OFF_HLEN, f"PDU type {pdu_type:#x} with hlen {hlen}",
                              Fes.INVALID_PDU_HEADER_FIELD)  # fmt: skip

    def _check_header(self, pdu_type: int, flags: int, hlen: int, pdo: int, plen: int,
                      start: int) -> bool:  # fmt: skip
        """Validate the common header; returns whether a header digest is present."""

        def bad(offset: int, why: str, fes: Fes = Fes.INVALID_PDU_HEADER_FIELD) -> TransportError:
            return self._error(start, hlen, offset, why, fes)

        self._check_type_and_hlen(pdu_type, hlen, start)
        hdgst = pdu_type in HEADER_DIGEST_TYPES and self.header_digest
        if bool(flags & FLAG_HDGSTF) != hdgst:
            raise bad(_OFF_FLAGS, "header digest flag does not match the negotiated digests")
        hd = _DIGEST if hdgst else 0
        if pdu_type in _TERM_TYPES:
            if not TERMREQ_HLEN <= plen <= TERMREQ_HLEN + TERMREQ_MAX_DATA:
                raise bad(_OFF_PLEN, f"TermReq plen {plen}")
            return False
        if pdu_type not in DATA_TYPES:
            if flags & FLAG_DDGSTF or pdo != 0 or plen != hlen + hd:
                field = _OFF_FLAGS if flags & FLAG_DDGSTF else _OFF_PDO if pdo else _OFF_PLEN
                raise bad(field, f"PDU type {pdu_type:#x} cannot carry data")
            return hdgst
        if plen == hlen + hd:  # a data-capable PDU without data (e.g. CapsuleCmd, no ICD)
            if pdo != 0 or flags & FLAG_DDGSTF:
                raise bad(_OFF_PDO if pdo else _OFF_FLAGS, "PDO/DDGSTF set on a PDU without data")
            if pdu_type != PDU_CAPSULE_CMD:
                raise bad(_OFF_PLEN, "data PDU without data")
            return hdgst
        if bool(flags & FLAG_DDGSTF) != self.data_digest:
            raise bad(_OFF_FLAGS, "data digest flag does not match the negotiated digests")
        dd = _DIGEST if self.data_digest else 0
        if pdo < hlen + hd or pdo + dd >= plen or pdo % 4:
            raise bad(_OFF_PDO, f"PDO {pdo} outside the PDU")
        if plen - pdo - dd > self.max_data:
            raise bad(_OFF_PLEN, f"{plen - pdo - dd} data bytes exceed the limit "
                      f"{self.max_data}", Fes.DATA_TRANSFER_LIMIT_EXCEEDED)  # fmt: skip
        return hdgst


_TERM_TYPES = frozenset({PDU_H2C_TERM_REQ, PDU_C2H_TERM_REQ})
_FABRICS = 0x7F
_SGL_OFFSET_DESCRIPTOR = 0x01
