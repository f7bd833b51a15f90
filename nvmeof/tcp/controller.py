"""Controller (target) side of one NVMe/TCP connection, sans-IO.

Rules of this module:
- Owns the PDU layer of one queue: ICReq/ICResp negotiation (docs/PROTOCOL.md §1.6), command
  capsules, R2T + H2CData for host-to-controller data (§2.4), C2HData with the SUCCESS
  optimisation (§2.5, §2.6), CapsuleResp, and C2HTermReq on fatal errors (§1.7).
- Knows nothing about NVMe semantics beyond the data direction and length of a command: the
  caller validates commands and decides when to ask for data (nvmet's parse -> execute split).
- Bytes in through :meth:`receive_data` (or ``reader.get_buffer()``/``reader.commit()``),
  events out through :meth:`next_event`, bytes out through :meth:`data_to_send`.
"""

from __future__ import annotations

from enum import Enum

from nvmeof.constants import (
    CH_SIZE,
    FLAG_DDGSTF,
    FLAG_HDGSTF,
    FLAG_LAST_PDU,
    FLAG_SUCCESS,
    PDU_C2H_DATA,
    PDU_C2H_TERM_REQ,
    PDU_CAPSULE_CMD,
    PDU_CAPSULE_RESP,
    PDU_H2C_DATA,
    PDU_H2C_TERM_REQ,
    PDU_ICREQ,
    PDU_ICRESP,
    PDU_R2T,
    SGL_IN_CAPSULE,
    SGL_TRANSPORT,
    SQE_SIZE,
    AdminOpcode,
    DigestFlags,
    FatalErrorStatus as Fes,
    is_host_to_controller,
)
from nvmeof.digest import crc32c
from nvmeof.errors import LocalProtocolError, TransportError
from nvmeof.tcp.events import (
    CommandReceived,
    ConnectionEstablished,
    DataReceived,
    TermReqReceived,
)
from nvmeof.tcp.framing import CONTROLLER_RECEIVES, Pdu, PduReader
from nvmeof.wire.fast import (
    CAPSULE_RESP,
    CH,
    DATA_PDU,
    R2T,
    RW_CAPSULE,
    SGL,
    SGL_OFFSET,
    TERM_REQ,
)

Event = ConnectionEstablished | CommandReceived | DataReceived | TermReqReceived

_ICREQ_PFV_OFFSET = 8
_ICREQ_HPDA_OFFSET = 10
_DATA_TTAG_OFFSET = 10
_DATA_DATAO_OFFSET = 12
_CAPSULE_HLEN = CH_SIZE + SQE_SIZE
_READ, _WRITE = 0x02, 0x01  # NVM opcodes
_PSDT_SGL = 0x40  # SQE flags: SGLs for data (PSDT 01b), no fused operation
#: What :meth:`ControllerConnection.peek_plain_rw` returns: opcode, cid, nsid, SLBA, NLB (0's
#: based), control (CDW12 bits 16-31), SGL length, the in-capsule data of a write (None for a
#: read), and the PDU's size in bytes.
PlainRw = tuple[int, int, int, int, int, int, int, "memoryview | None", int]


class ConnState(Enum):
    AWAIT_ICREQ = "await-icreq"
    ESTABLISHED = "established"
    TERMINATED = "terminated"


class _H2CTransfer:
    """Host-to-controller data requested by one R2T (nvmet sends one R2T per command)."""

    __slots__ = ("buffer", "cid", "digest_ok", "received", "total", "ttag")

    def __init__(self, cid: int, ttag: int, buffer: memoryview) -> None:
        self.cid = cid
        self.ttag = ttag
        self.buffer = buffer
        self.total = len(buffer)
        self.received = 0
        self.digest_ok = True


class ControllerConnection:
    """One queue's NVMe/TCP connection as seen by the controller.

    Args:
        max_h2c_data: MAXH2CDATA advertised in ICResp (bytes per H2CData PDU).
        max_in_capsule: largest in-capsule data accepted in a CapsuleCmd.
        max_c2h_data: largest payload put in one C2HData PDU.
        strict: check every transport rule (:class:`~nvmeof.tcp.framing.PduReader`); off, only
            what nvmet-tcp checks (docs/TOLERANCE.md).
    """

    def __init__(
        self,
        *,
        max_h2c_data: int = 131072,
        max_in_capsule: int = 8192,
        max_c2h_data: int = 131072,
        strict: bool = True,
    ) -> None:
        if max_h2c_data < 4096 or max_h2c_data % 4:
            raise ValueError("MAXH2CDATA must be a multiple of 4 and at least 4096")
        self.max_h2c_data = max_h2c_data
        self.max_c2h_data = max_c2h_data
        self.strict = strict
        self.reader = PduReader(CONTROLLER_RECEIVES, max(max_h2c_data, max_in_capsule),
                                strict=strict, in_capsule_limit=max_in_capsule)  # fmt: skip
        self.state = ConnState.AWAIT_ICREQ
        self.header_digest = False
        self.data_digest = False
        self._c2h_align = 4  # (HPDA + 1) * 4
        self._c2h_layout = (24, b"", 0)
        self._out: list[bytes | memoryview] = []
        self._transfers: dict[int, _H2CTransfer] = {}  # by ttag
        self._next_ttag = 0
        #: Established, no digests, tolerant: peek_plain_rw may frame capsules itself.
        self._plain = False

    # -- input -------------------------------------------------------------------------------

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Feed bytes received from the host."""
        self.reader.feed(data)

    def next_event(self) -> Event | None:
        """Process buffered PDUs until one yields an event; None when more bytes are needed.

        Raises:
            TransportError: fatal protocol error. A C2HTermReq is already queued in
                :meth:`data_to_send`; send it and close the connection.
        """
        if self.state is ConnState.TERMINATED:
            return None
        try:
            while True:
                pdu = self.reader.next_pdu()
                if pdu is None:
                    return None
                event = self._handle(pdu)
                if event is not None:
                    return event
        except TransportError as err:
            self.terminate(err)
            raise

    def peek_plain_rw(self) -> PlainRw | None:
        """The next PDU, without consuming it, when it is a complete Read or Write CapsuleCmd in
        the shape a Linux host sends on an I/O queue; else None (more bytes are needed, or it
        is anything else: take it with :meth:`next_event`). Call :meth:`consume_plain_rw` with
        its size once it is served.

        The shape: no digests negotiated and not strict (the connection's setting), CH flags 0,
        HLEN 72, SQE flags PSDT 01b without fusing; a Read with PDO 0, PLEN 72 and a transport
        SGL; a Write with its data in the capsule (an offset SGL of 1 to ``max_in_capsule``
        bytes, PDO 72, PLEN 72 + length). For exactly these :meth:`next_event` would give a
        :class:`CommandReceived` with the same fields, the data digest good, and consume the
        same bytes: framing them here only skips the general checks they pass anyway (the
        test of this equivalence: tests/nvmeof/test_plain_rw.py). The write's data is a view
        into the receive buffer, valid until the next receive.
        """
        if not self._plain:
            return None
        view, start, end = self.reader.pending()
        if end - start < _CAPSULE_HLEN:
            return None
        (pdu_type, flags, hlen, pdo, plen, opcode, sqe_flags, cid, nsid, length, sgl_type,
         slba, nlb, control) = RW_CAPSULE.unpack_from(view, start)  # fmt: skip
        if pdu_type != PDU_CAPSULE_CMD or flags or hlen != _CAPSULE_HLEN or sqe_flags != _PSDT_SGL:
            return None
        if opcode == _READ:
            if pdo or plen != _CAPSULE_HLEN or sgl_type != SGL_TRANSPORT:
                return None
            return opcode, cid, nsid, slba, nlb, control, length, None, _CAPSULE_HLEN
        if (opcode != _WRITE or sgl_type != SGL_IN_CAPSULE or pdo != _CAPSULE_HLEN
                or not 0 < length <= self.reader.in_capsule_limit
                or plen != _CAPSULE_HLEN + length or end - start < plen):  # fmt: skip
            return None
        data = view[start + _CAPSULE_HLEN : start + plen]
        return opcode, cid, nsid, slba, nlb, control, length, data, plen

    def consume_plain_rw(self, size: int) -> None:
        """Drop the PDU :meth:`peek_plain_rw` returned (its ``size``) from the input."""
        self.reader.consume(size)

    def _handle(self, pdu: Pdu) -> Event | None:
        if pdu.type == PDU_H2C_TERM_REQ:
            _, _, _, _, _, fes, fei = TERM_REQ.unpack_from(pdu.header)
            self.state = ConnState.TERMINATED
            self._plain = False
            return TermReqReceived(fes, fei)
        if self.state is ConnState.AWAIT_ICREQ:
            if pdu.type != PDU_ICREQ:
                raise TransportError(Fes.PDU_SEQUENCE_ERROR, "PDU before ICReq",
                                     header=bytes(pdu.header))  # fmt: skip
            return self._handle_icreq(pdu)
        if pdu.type == PDU_CAPSULE_CMD:
            return self._handle_capsule(pdu)
        if pdu.type == PDU_H2C_DATA:
            return self._handle_h2c_data(pdu)
        raise TransportError(Fes.PDU_SEQUENCE_ERROR, "second ICReq", header=bytes(pdu.header))

    def _handle_icreq(self, pdu: Pdu) -> Event:
        hdr = pdu.header
        pfv = int.from_bytes(hdr[8:10], "little")
        hpda, digest = hdr[10], hdr[11]
        maxr2t = int.from_bytes(hdr[12:16], "little")
        if pdu.plen != 128:  # nvmet_tcp_handle_icreq
            raise TransportError(Fes.INVALID_PDU_HEADER_FIELD, f"ICReq plen {pdu.plen}",
                                 fei=4, header=bytes(hdr))  # fmt: skip
        if pfv != 0:
            raise TransportError(Fes.UNSUPPORTED_PARAMETER, f"ICReq PFV {pfv}",
                                 fei=_ICREQ_PFV_OFFSET, header=bytes(hdr))  # fmt: skip
        if hpda != 0:  # nvmet_tcp_handle_icreq: "unsupported hpda"
            raise TransportError(Fes.UNSUPPORTED_PARAMETER, f"ICReq HPDA {hpda}",
                                 fei=_ICREQ_HPDA_OFFSET, header=bytes(hdr))  # fmt: skip
        self.header_digest = bool(digest & DigestFlags.HEADER)
        self.data_digest = bool(digest & DigestFlags.DATA)
        self._c2h_align = (hpda + 1) * 4
        self._c2h_layout = self._compute_c2h_layout()
        resp = bytearray(128)
        CH.pack_into(resp, 0, PDU_ICRESP, 0, 128, 0, 128)
        resp[11] = digest & 0x3  # mirror the digests the host asked for
        resp[12:16] = self.max_h2c_data.to_bytes(4, "little")
        self._out.append(bytes(resp))
        self.reader.header_digest = self.header_digest
        self.reader.data_digest = self.data_digest
        self.state = ConnState.ESTABLISHED
        self._plain = not (self.strict or self.header_digest or self.data_digest)
        return ConnectionEstablished(self.header_digest, self.data_digest, maxr2t + 1)

    def _handle_capsule(self, pdu: Pdu) -> Event:
        sqe = bytes(pdu.header[CH_SIZE : CH_SIZE + SQE_SIZE])
        cid = sqe[2] | (sqe[3] << 8)
        _, length, sgl_type = SGL.unpack_from(sqe, SGL_OFFSET)
        data = bytes(pdu.data) if pdu.data else None
        if data is None and sgl_type == SGL_TRANSPORT:
            opcode = sqe[0]
            if not is_host_to_controller(opcode, sqe[4] if opcode == AdminOpcode.FABRICS else 0):
                return CommandReceived(cid, sqe, None, length)
        return CommandReceived(cid, sqe, data, length, pdu.data_digest_ok)

    def _handle_h2c_data(self, pdu: Pdu) -> Event | None:
        _, flags, _, _, _, cccid, ttag, datao, datal = DATA_PDU.unpack_from(pdu.header)
        xfer = self._transfers.get(ttag)
        # nvmet finds the command by TTAG alone and never looks at CCCID or LAST_PDU
        # (nvmet_tcp_handle_h2c_data_pdu); strict mode checks both.
        if xfer is None or (self.strict and xfer.cid != cccid):
            raise TransportError(Fes.INVALID_PDU_HEADER_FIELD, f"H2CData for unknown ttag {ttag}",
                                 fei=_DATA_TTAG_OFFSET, header=bytes(pdu.header))  # fmt: skip
        if datal != len(pdu.data) or datal == 0:
            raise TransportError(Fes.INVALID_PDU_HEADER_FIELD, "H2CData DATAL != payload",
                                 fei=16, header=bytes(pdu.header))  # fmt: skip
        if datao != xfer.received or datao + datal > xfer.total:
            raise TransportError(Fes.DATA_TRANSFER_OUT_OF_RANGE,
                                 f"H2CData offset {datao}+{datal}, expected {xfer.received} "
                                 f"of {xfer.total}", header=bytes(pdu.header))  # fmt: skip
        if datal > self.max_h2c_data:
            raise TransportError(Fes.DATA_TRANSFER_LIMIT_EXCEEDED, f"H2CData of {datal} bytes "
                                 f"exceeds MAXH2CDATA {self.max_h2c_data}",
                                 header=bytes(pdu.header))  # fmt: skip
        xfer.buffer[datao : datao + datal] = pdu.data
        xfer.received += datal
        if not pdu.data_digest_ok:
            xfer.digest_ok = False
        done = xfer.received == xfer.total
        if self.strict and bool(flags & FLAG_LAST_PDU) != done:
            raise TransportError(Fes.PDU_SEQUENCE_ERROR, "LAST_PDU does not end the R2T",
                                 header=bytes(pdu.header))  # fmt: skip
        if not done:
            return None
        del self._transfers[ttag]
        return DataReceived(xfer.cid, xfer.digest_ok, ttag)

    # -- output ------------------------------------------------------------------------------

    def request_data(self, cid: int, buffer: memoryview | bytearray) -> int:
        """Send one R2T asking for ``len(buffer)`` bytes of ``cid``'s data, received into it;
        returns the TTAG (the :class:`DataReceived` event carries it)."""
        self._require_established()
        view = memoryview(buffer)
        if len(view) == 0:
            raise LocalProtocolError("R2T for zero bytes")
        ttag = self._next_ttag
        while ttag in self._transfers:
            ttag = (ttag + 1) & 0xFFFF
        self._next_ttag = (ttag + 1) & 0xFFFF
        self._transfers[ttag] = _H2CTransfer(cid, ttag, view)
        self._out.append(self._header(PDU_R2T, R2T, 0, cid, ttag, 0, len(view)))
        return ttag

    def send_data(self, cid: int, data: memoryview | bytes | bytearray, *, success: bool,
                  corrupt_digest: bool = False) -> None:  # fmt: skip
        """Queue C2HData PDUs carrying ``data``; ``success`` sets the SUCCESS flag on the last
        one, in which case no response may follow for ``cid``. ``corrupt_digest`` sends a
        wrong data digest on the last PDU (fault injection; needs data digests)."""
        if self.state is not ConnState.ESTABLISHED:
            self._require_established()
        view = memoryview(data)
        total = len(view)
        hd = 4 if self.header_digest else 0
        dd = 4 if self.data_digest else 0
        pdo, pad, base_flags = self._c2h_layout
        out = self._out
        offset = 0
        if total <= self.max_c2h_data and not hd and not dd:
            # The common case, one PDU without digests: two appends.
            flags = base_flags | FLAG_LAST_PDU | (FLAG_SUCCESS if success else 0)
            out.append(DATA_PDU.pack(PDU_C2H_DATA, flags, 24, pdo, pdo + total, cid, 0, 0, total))
            if pad:
                out.append(pad)
            out.append(view)
            return
        while True:
            chunk = view[offset : offset + self.max_c2h_data]
            n = len(chunk)
            last = offset + n >= total
            flags = base_flags
            if last:
                flags |= FLAG_LAST_PDU | (FLAG_SUCCESS if success else 0)
            hdr = DATA_PDU.pack(PDU_C2H_DATA, flags, 24, pdo, pdo + n + dd, cid, 0, offset, n)
            self._out.append(hdr + crc32c(hdr).to_bytes(4, "little") if hd else hdr)
            if pad:
                self._out.append(pad)
            self._out.append(chunk)
            if dd:
                digest = crc32c(chunk) ^ (0xFFFFFFFF if last and corrupt_digest else 0)
                self._out.append(digest.to_bytes(4, "little"))
            offset += n
            if last:
                return

    def send_response(
        self, cid: int, status: int = 0, *, dw0: int = 0, dw1: int = 0, sqhd: int = 0,
        sqid: int = 0, corrupt_digest: bool = False,
    ) -> None:  # fmt: skip
        """Queue a CapsuleResp for ``cid`` with the 16-bit status word and result dwords.
        ``corrupt_digest`` sends a wrong header digest (fault injection; needs header digests)."""
        if self.state is not ConnState.ESTABLISHED:
            self._require_established()
        hd = 4 if self.header_digest else 0
        hdr = CAPSULE_RESP.pack(
            PDU_CAPSULE_RESP, FLAG_HDGSTF if hd else 0, 24, 0, 24 + hd,
            dw0, dw1, sqhd, sqid, cid, status,
        )  # fmt: skip
        if hd:
            digest = crc32c(hdr) ^ (0xFFFFFFFF if corrupt_digest else 0)
            hdr += digest.to_bytes(4, "little")
        self._out.append(hdr)

    def cancel_transfer(self, ttag: int) -> None:
        """Forget an outstanding R2T (its command is being completed anyway)."""
        self._transfers.pop(ttag, None)

    def terminate(self, err: TransportError) -> None:
        """Queue a C2HTermReq for ``err`` and stop processing input."""
        if self.state is ConnState.TERMINATED:
            return
        self.state = ConnState.TERMINATED
        self._plain = False
        self._out.append(build_term_req(PDU_C2H_TERM_REQ, err))

    def data_to_send(self) -> list[bytes | memoryview]:
        """Everything queued for the host since the last call, in order."""
        out, self._out = self._out, []
        return out

    def _header(self, pdu_type: int, codec: object, flags: int, *fields: int) -> bytes:
        hd = 4 if self.header_digest else 0
        hdr: bytes = codec.pack(  # type: ignore[attr-defined]
            pdu_type, flags | (FLAG_HDGSTF if hd else 0), 24, 0, 24 + hd, *fields
        )
        return hdr + crc32c(hdr).to_bytes(4, "little") if hd else hdr

    def _compute_c2h_layout(self) -> tuple[int, bytes, int]:
        """(PDO, padding, flags) of every C2HData PDU, fixed once the digests are known."""
        hd = 4 if self.header_digest else 0
        pdo = -(-(24 + hd) // self._c2h_align) * self._c2h_align
        flags = (FLAG_DDGSTF if self.data_digest else 0) | (FLAG_HDGSTF if hd else 0)
        return pdo, bytes(pdo - 24 - hd), flags

    def _require_established(self) -> None:
        if self.state is not ConnState.ESTABLISHED:
            raise LocalProtocolError(f"connection is {self.state.value}")

    @property
    def outstanding_transfers(self) -> int:
        return len(self._transfers)


def build_term_req(pdu_type: int, err: TransportError) -> bytes:
    """A TermReq PDU (never digested) echoing up to 128 bytes of the offending header."""
    data = err.header[:128]
    hdr = TERM_REQ.pack(pdu_type, 0, 24, 0, 24 + len(data), err.fes, err.fei)
    return hdr + data
