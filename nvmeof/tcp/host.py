"""Host (initiator) side of one NVMe/TCP connection, sans-IO.

Rules of this module:
- Owns the PDU layer of one queue from the host's point of view: ICReq and the ICResp checks the
  Linux host makes (docs/PROTOCOL.md §1.6), command capsules with in-capsule data when it fits
  (§2.3), H2CData in answer to R2T (§2.4), C2HData reassembly into the caller's buffer (§2.5),
  the SUCCESS flag (§2.6), CapsuleResp.
- Sets the SGL descriptor of every command (the transport's job, as in ``nvme_tcp_map_data``);
  the caller owns everything else in the 64-byte SQE, including the CID.
- No NVMe semantics, no clocks, no sockets.
"""

from __future__ import annotations

from nvmeof.constants import (
    FLAG_DDGSTF,
    FLAG_HDGSTF,
    FLAG_LAST_PDU,
    FLAG_SUCCESS,
    MIN_MAXH2CDATA,
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
    DigestFlags,
    FatalErrorStatus as Fes,
)
from nvmeof.digest import crc32c
from nvmeof.errors import LocalProtocolError, TransportError
from nvmeof.status import StatusCode, status_word
from nvmeof.tcp.controller import build_term_req
from nvmeof.tcp.events import ConnectionEstablished, ResponseReceived, TermReqReceived
from nvmeof.tcp.framing import HOST_RECEIVES, Pdu, PduReader
from nvmeof.tcp.hostcompletion import CompletionPath, Event as Event  # re-exported
from nvmeof.tcp.hostrecord import CommandRecord, HostState as HostState, bytes_view
from nvmeof.wire.fast import CAPSULE_RESP, CH, DATA_PDU, R2T, SGL, SGL_OFFSET, TERM_REQ

_DATA_XFER_ERROR = status_word(StatusCode.DATA_XFER_ERROR)


# An enum member looked up on its class costs ~0.2 us in CPython 3.11 (EnumType.__getattr__):
# the per-command code compares against these module constants instead.
_ESTABLISHED = HostState.ESTABLISHED
_TERMINATED = HostState.TERMINATED
#: SQE byte 9 (flags): PSDT 01b, SGLs, as nvme_tcp_setup_cmd_pdu sets it.
_PSDT_SGL = 0x40


class HostConnection(CompletionPath):
    """One queue's NVMe/TCP connection as seen by the host.

    Args:
        header_digest: ask for header digests.
        data_digest: ask for data digests.
        max_c2h_data: the largest C2HData payload accepted in one PDU.
    """

    def __init__(
        self, *, header_digest: bool = False, data_digest: bool = False,
        max_c2h_data: int = 1 << 20,
    ) -> None:  # fmt: skip
        self.want_header_digest = bool(header_digest)
        self.want_data_digest = bool(data_digest)
        self.reader = PduReader(HOST_RECEIVES, max_c2h_data)
        self.state = HostState.IDLE
        self.header_digest = False
        self.data_digest = False
        self.max_h2c_data = 0
        self._h2c_align = 4
        self._out: list[bytes | bytearray | memoryview] = []
        self._cmds: dict[int, CommandRecord] = {}
        self._pool: list[CommandRecord] = []  # records of completed commands, for reuse
        self._flushes = 0  # data_to_send() calls so far
        #: What :meth:`next_completion` returns for a completion: one object, refilled.
        self._completion = ResponseReceived(0, 0, 0, 0, 0, 0)

    # -- setup -------------------------------------------------------------------------------

    def initiate(self) -> None:
        """Queue the ICReq (HPDA 0, MAXR2T 0: what nvmet requires)."""
        if self.state is not HostState.IDLE:
            raise LocalProtocolError("ICReq already sent")
        icreq = bytearray(128)
        CH.pack_into(icreq, 0, PDU_ICREQ, 0, 128, 0, 128)
        icreq[11] = (DigestFlags.HEADER if self.want_header_digest else 0) | (
            DigestFlags.DATA if self.want_data_digest else 0
        )
        self._out.append(bytes(icreq))
        self.state = HostState.AWAIT_ICRESP

    def _handle_icresp(self, pdu: Pdu) -> Event:
        hdr = pdu.header
        pfv = int.from_bytes(hdr[8:10], "little")
        cpda, digest = hdr[10], hdr[11]
        maxh2cdata = int.from_bytes(hdr[12:16], "little")
        wanted = (DigestFlags.HEADER if self.want_header_digest else 0) | (
            DigestFlags.DATA if self.want_data_digest else 0
        )
        raw = bytes(hdr)
        if pfv != 0:
            raise TransportError(Fes.UNSUPPORTED_PARAMETER, f"ICResp PFV {pfv}", fei=8, header=raw)
        if cpda > 31:
            raise TransportError(Fes.UNSUPPORTED_PARAMETER, f"ICResp CPDA {cpda}", fei=10,
                                 header=raw)  # fmt: skip
        if digest & 0x3 != wanted:
            raise TransportError(Fes.UNSUPPORTED_PARAMETER, f"ICResp digests {digest:#x}, asked "
                                 f"for {wanted:#x}", fei=11, header=raw)  # fmt: skip
        if maxh2cdata < MIN_MAXH2CDATA or maxh2cdata % 4:
            raise TransportError(Fes.UNSUPPORTED_PARAMETER, f"ICResp MAXH2CDATA {maxh2cdata}",
                                 fei=12, header=raw)  # fmt: skip
        self.header_digest = self.want_header_digest
        self.data_digest = self.want_data_digest
        self.reader.header_digest = self.header_digest
        self.reader.data_digest = self.data_digest
        self.max_h2c_data = maxh2cdata
        self._h2c_align = (cpda + 1) * 4
        self.state = HostState.ESTABLISHED
        return ConnectionEstablished(self.header_digest, self.data_digest, maxh2cdata)

    # -- input -------------------------------------------------------------------------------

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        self.reader.feed(data)

    def next_event(self) -> Event | None:
        """Process buffered PDUs until one yields an event; None when more bytes are needed.

        Raises:
            TransportError: fatal protocol error; the connection must be closed.
        """
        if self.state is _TERMINATED:
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
            self._terminate(err)
            raise

    def _terminate(self, err: TransportError) -> None:
        """A fatal error: queue the H2CTermReq (once) and stop processing input."""
        if not self.terminated:
            self.state = HostState.TERMINATED
            self._out.append(build_term_req(PDU_H2C_TERM_REQ, err))

    def _handle(self, pdu: Pdu) -> Event | None:
        kind = pdu.type
        if kind == PDU_C2H_TERM_REQ:
            _, _, _, _, _, fes, fei = TERM_REQ.unpack_from(pdu.header)
            self.state = HostState.TERMINATED
            return TermReqReceived(fes, fei)
        if self.state is HostState.AWAIT_ICRESP:
            if kind != PDU_ICRESP:
                raise TransportError(Fes.PDU_SEQUENCE_ERROR, "PDU before ICResp",
                                     header=bytes(pdu.header))  # fmt: skip
            return self._handle_icresp(pdu)
        if kind == PDU_CAPSULE_RESP:
            return self._handle_response(pdu)
        if kind == PDU_C2H_DATA:
            return self._handle_c2h_data(pdu)
        if kind == PDU_R2T:
            self._handle_r2t(pdu)
            return None
        raise TransportError(Fes.PDU_SEQUENCE_ERROR, "unexpected ICResp", header=bytes(pdu.header))

    def _lookup(self, cid: int, pdu: Pdu) -> CommandRecord:
        cmd = self._cmds.get(cid)
        if cmd is None:
            raise TransportError(Fes.INVALID_PDU_HEADER_FIELD, f"PDU for unknown CID {cid}",
                                 fei=8, header=bytes(pdu.header))  # fmt: skip
        return cmd

    def _handle_response(self, pdu: Pdu) -> Event:
        _, _, _, _, _, dw0, dw1, sqhd, sqid, cid, status = CAPSULE_RESP.unpack_from(pdu.header)
        cmd = self._lookup(cid, pdu)
        if status & 0xFFFE == 0 and cmd.read is not None and cmd.received != len(cmd.read):
            # nvme_tcp_data_in_short: a successful read must have delivered all its data.
            raise TransportError(Fes.PDU_SEQUENCE_ERROR, f"successful read for CID {cid} got "
                                 f"{cmd.received} of {len(cmd.read)} bytes",
                                 header=bytes(pdu.header))  # fmt: skip
        del self._cmds[cid]
        self._recycle(cmd)
        if not cmd.digest_ok and status == 0:
            status = _DATA_XFER_ERROR
        return ResponseReceived(cid, status, dw0, dw1, sqhd, sqid)

    def _handle_c2h_data(self, pdu: Pdu) -> Event | None:
        _, flags, _, _, _, cid, _, datao, datal = DATA_PDU.unpack_from(pdu.header)
        cmd = self._lookup(cid, pdu)
        read = cmd.read
        raw = bytes(pdu.header)
        if read is None:
            raise TransportError(Fes.PDU_SEQUENCE_ERROR, f"C2HData for CID {cid} without a read "
                                 "buffer", header=raw)  # fmt: skip
        if datal != len(pdu.data) or datao != cmd.received or datao + datal > len(read):
            raise TransportError(Fes.DATA_TRANSFER_OUT_OF_RANGE, f"C2HData {datao}+{datal} for "
                                 f"CID {cid}, expected offset {cmd.received} of {len(read)}",
                                 header=raw)  # fmt: skip
        read[datao : datao + datal] = pdu.data
        cmd.received += datal
        if not pdu.data_digest_ok:
            cmd.digest_ok = False
        if not flags & FLAG_SUCCESS:
            return None
        if not flags & FLAG_LAST_PDU:
            raise TransportError(Fes.INVALID_PDU_HEADER_FIELD, "SUCCESS without LAST_PDU", fei=1,
                                 header=raw)  # fmt: skip
        if cmd.received != len(read):
            raise TransportError(Fes.PDU_SEQUENCE_ERROR, f"short successful read for CID {cid}",
                                 header=raw)  # fmt: skip
        del self._cmds[cid]
        self._recycle(cmd)
        return ResponseReceived(cid, 0 if cmd.digest_ok else _DATA_XFER_ERROR, 0, 0, 0, 0)

    def _handle_r2t(self, pdu: Pdu) -> None:
        _, _, _, _, _, cid, ttag, r2to, r2tl = R2T.unpack_from(pdu.header)
        cmd = self._lookup(cid, pdu)
        write = cmd.write
        raw = bytes(pdu.header)
        if write is None:
            raise TransportError(Fes.PDU_SEQUENCE_ERROR, f"R2T for non-write CID {cid}", header=raw)
        if r2tl == 0 or r2to < cmd.sent or r2to + r2tl > len(write):
            raise TransportError(Fes.DATA_TRANSFER_OUT_OF_RANGE, f"R2T {r2to}+{r2tl} for CID "
                                 f"{cid} ({cmd.sent} of {len(write)} sent)", header=raw)  # fmt: skip
        self._send_h2c_data(cid, ttag, write, r2to, r2tl)
        cmd.sent = r2to + r2tl

    # -- output ------------------------------------------------------------------------------

    def send_command(
        self,
        sqe: bytes | bytearray | memoryview,
        *,
        write_data: bytes | bytearray | memoryview | None = None,
        read_buffer: bytearray | memoryview | None = None,
        in_capsule_limit: int = 0,
        cid: int | None = None,
    ) -> int:
        """Queue a command capsule; returns its CID.

        The CID is SQE bytes 2-3 unless ``cid`` is given, in which case it is written into the
        capsule only (the caller's SQE is never modified). Data to write goes in-capsule when it
        fits ``in_capsule_limit``, otherwise it waits for R2T. A ``read_buffer`` receives the
        C2HData. The caller must keep both buffers alive and unchanged until completion.
        """
        if self.state is not _ESTABLISHED:
            raise LocalProtocolError(f"connection is {self.state.value}")
        if len(sqe) != SQE_SIZE:
            raise ValueError("an SQE is 64 bytes")
        if cid is None:
            cid = sqe[2] | (sqe[3] << 8)
        cmds = self._cmds
        if cid in cmds:
            raise LocalProtocolError(f"CID {cid} is already outstanding")
        # bytes_view, with its usual case (a flat byte view: what ring slots give) inline
        write = read = None
        if write_data is not None:
            if (
                type(write_data) is memoryview
                and write_data.format == "B"
                and write_data.c_contiguous
            ):
                write = write_data
            else:
                write = bytes_view(write_data)
        if read_buffer is not None:
            if (
                type(read_buffer) is memoryview
                and read_buffer.format == "B"
                and read_buffer.c_contiguous
            ):
                read = read_buffer
            else:
                read = bytes_view(read_buffer)
        hd = 4 if self.header_digest else 0
        pool = self._pool
        if pool and pool[-1].flush != self._flushes:
            cmd = pool.pop()  # _new_record's usual case, without the call
        else:
            cmd = self._new_record(72 + hd)
        capsule = cmd.capsule
        capsule[8:72] = sqe
        capsule[10] = cid & 0xFF
        capsule[11] = cid >> 8
        capsule[9] = (capsule[9] & 0x3F) | _PSDT_SGL  # as nvme_tcp_setup_cmd_pdu sets it
        flags = FLAG_HDGSTF if hd else 0
        out = self._out
        if write is not None and 0 < len(write) <= in_capsule_limit:
            SGL.pack_into(capsule, 8 + SGL_OFFSET, 0, len(write), SGL_IN_CAPSULE)
            dd = 4 if self.data_digest else 0
            pdo = -(-(72 + hd) // self._h2c_align) * self._h2c_align
            flags |= FLAG_DDGSTF if dd else 0
            CH.pack_into(capsule, 0, PDU_CAPSULE_CMD, flags, 72, pdo, pdo + len(write) + dd)
            self._append_header(capsule, hd)
            if pdo > 72 + hd:
                out.append(bytes(pdo - 72 - hd))
            out.append(write)
            if dd:
                out.append(crc32c(write).to_bytes(4, "little"))
            cmd.sent = len(write)
        else:
            length = len(write) if write is not None else len(read) if read is not None else 0
            SGL.pack_into(capsule, 8 + SGL_OFFSET, 0, length, SGL_TRANSPORT)
            CH.pack_into(capsule, 0, PDU_CAPSULE_CMD, flags, 72, 0, 72 + hd)
            if hd:
                self._append_header(capsule, hd)
            else:
                out.append(capsule)  # _append_header without a digest, without the call
            cmd.sent = 0
        cmd.write = write
        cmd.read = read
        cmd.received = 0
        cmd.digest_ok = True
        cmd.flush = self._flushes
        cmds[cid] = cmd
        return cid

    def _new_record(self, capsule_size: int) -> CommandRecord:
        """A record for a new command: a completed command's, or a new one."""
        if not self._pool:
            return CommandRecord(capsule_size)
        cmd = self._pool.pop()
        if cmd.flush == self._flushes:
            # Its capsule is still queued, not yet handed out by data_to_send(): the command
            # was answered before it was sent (a broken target). Never rewrite queued bytes.
            cmd.capsule = bytearray(capsule_size)
        return cmd

    def _recycle(self, cmd: CommandRecord) -> None:
        """Keep a completed command's record for reuse, without the caller's buffers (held, a
        view of a bytearray would keep it from being resized)."""
        cmd.write = cmd.read = None
        self._pool.append(cmd)

    def _append_header(self, header: bytearray, hd: int) -> None:
        """Queue a PDU header whose last ``hd`` bytes are room for its header digest."""
        if hd:
            header[-4:] = crc32c(memoryview(header)[:-4]).to_bytes(4, "little")
        self._out.append(header)

    def _send_h2c_data(
        self, cid: int, ttag: int, data: memoryview, offset: int, length: int
    ) -> None:
        hd = 4 if self.header_digest else 0
        dd = 4 if self.data_digest else 0
        pdo = -(-(24 + hd) // self._h2c_align) * self._h2c_align
        end = offset + length
        while offset < end:
            n = min(self.max_h2c_data, end - offset)
            chunk = data[offset : offset + n]
            flags = (FLAG_HDGSTF if hd else 0) | (FLAG_DDGSTF if dd else 0)
            if offset + n == end:
                flags |= FLAG_LAST_PDU
            hdr = bytearray(24 + hd)
            DATA_PDU.pack_into(hdr, 0, PDU_H2C_DATA, flags, 24, pdo, pdo + n + dd, cid, ttag,
                               offset, n)  # fmt: skip
            self._append_header(hdr, hd)
            if pdo > 24 + hd:
                self._out.append(bytes(pdo - 24 - hd))
            self._out.append(chunk)
            if dd:
                self._out.append(crc32c(chunk).to_bytes(4, "little"))
            offset += n

    def abort_all(self) -> list[int]:
        """Forget every outstanding command (connection lost); returns their CIDs."""
        cids = list(self._cmds)
        self._cmds.clear()
        self.state = HostState.TERMINATED
        return cids

    def data_to_send(self) -> list[bytes | bytearray | memoryview]:
        """Everything queued to send, in order. Send (or copy) it before feeding more input:
        a command's capsule buffer is reused for a later command once it completed."""
        self._flushes += 1
        out, self._out = self._out, []
        return out

    @property
    def has_output(self) -> bool:
        """Whether :meth:`data_to_send` has anything."""
        return bool(self._out)

    @property
    def terminated(self) -> bool:
        return self.state is HostState.TERMINATED

    @property
    def outstanding(self) -> int:
        return len(self._cmds)
