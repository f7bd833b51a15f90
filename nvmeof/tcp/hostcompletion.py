"""The data path of a host connection's input: :meth:`CompletionPath.next_completion`, mixed
into :class:`nvmeof.tcp.host.HostConnection`.

It gives what :meth:`~nvmeof.tcp.host.HostConnection.next_event` gives, with the same checks
and errors (tests/nvmeof/test_host_fast_path.py compares the two on recorded, mutated and
perturbed answer streams), but reads the common answers without the general handlers and,
without digests, straight from the receive buffer. Sans-IO like the rest of nvmeof.
"""

from __future__ import annotations

from nvmeof.constants import (
    FLAG_DDGSTF,
    FLAG_HDGSTF,
    FLAG_LAST_PDU,
    FLAG_SUCCESS,
    PDU_C2H_DATA,
    PDU_CAPSULE_RESP,
)
from nvmeof.errors import TransportError
from nvmeof.status import StatusCode, status_word
from nvmeof.tcp.events import ConnectionEstablished, ResponseReceived, TermReqReceived
from nvmeof.tcp.framing import Pdu, PduReader
from nvmeof.tcp.hostrecord import CommandRecord, HostState
from nvmeof.wire.fast import CAPSULE_RESP, DATA_PDU

Event = ConnectionEstablished | ResponseReceived | TermReqReceived

_DATA_XFER_ERROR = status_word(StatusCode.DATA_XFER_ERROR)
_ESTABLISHED = HostState.ESTABLISHED  # a module constant: no enum lookup per call
_HEADER = 24  # the header of a CapsuleResp and of a C2HData, and where their data starts
_DIGEST_FLAGS = FLAG_HDGSTF | FLAG_DDGSTF


class CompletionPath:
    """``next_completion`` for a host connection. It only declares what it uses of the
    connection; :class:`~nvmeof.tcp.host.HostConnection` defines all of it."""

    state: HostState
    reader: PduReader
    header_digest: bool
    data_digest: bool
    _cmds: dict[int, CommandRecord]
    _pool: list[CommandRecord]
    _completion: ResponseReceived

    def next_event(self) -> Event | None:
        raise NotImplementedError

    def _handle(self, pdu: Pdu) -> Event | None:
        raise NotImplementedError

    def _terminate(self, err: TransportError) -> None:
        raise NotImplementedError

    def next_completion(self) -> Event | None:
        """:meth:`next_event` for the data path: the same PDUs, checks, errors and events, but
        every completion comes back in one :class:`ResponseReceived` object, refilled on each
        call (read it before calling again).

        What an established queue receives for nearly every I/O is handled inline: a C2HData
        that lands exactly where its read expects it, a CapsuleResp for an outstanding
        command. Anything else, and every PDU that breaks a rule, goes to the handlers of
        :meth:`next_event`, so the checks and the errors raised are the same ones.

        Raises:
            TransportError: fatal protocol error; the connection must be closed.
        """
        if self.state is not _ESTABLISHED:
            return self.next_event()
        reader = self.reader
        next_pdu = reader.next_pdu
        cmds = self._cmds
        # Without digests the two common PDUs are read straight from the receive buffer (no
        # Pdu object, no header view) when their header has exactly the shape the framer would
        # pass: anything else is left in the buffer for next_pdu, which checks it as always.
        plain = not (self.header_digest or self.data_digest)
        max_data = reader.max_data
        try:
            while True:
                if plain:
                    view, start, stop = reader.pending()
                    if stop - start >= _HEADER:
                        kind = view[start]
                        if kind == PDU_CAPSULE_RESP:
                            (_, flags, hlen, pdo, plen, dw0, dw1, sqhd, sqid, cid,
                             status) = CAPSULE_RESP.unpack_from(view, start)  # fmt: skip
                            if (
                                not flags | pdo
                                and hlen == plen == _HEADER
                                and (cmd := cmds.get(cid)) is not None
                                and (
                                    status & 0xFFFE
                                    or cmd.read is None
                                    or cmd.received == len(cmd.read)
                                )
                            ):
                                reader.consume(_HEADER)
                                return self._completed(cmd, cid, status, dw0, dw1, sqhd, sqid)
                        elif kind == PDU_C2H_DATA:
                            (_, flags, hlen, pdo, plen, cid, _, datao,
                             datal) = DATA_PDU.unpack_from(view, start)  # fmt: skip
                            end = datao + datal
                            if (
                                not flags & _DIGEST_FLAGS
                                and hlen == pdo == _HEADER
                                and plen == _HEADER + datal
                                and 0 < datal <= max_data
                                and plen <= stop - start
                                and (cmd := cmds.get(cid)) is not None
                                and (read := cmd.read) is not None
                                and datao == cmd.received
                                and end <= (size := len(read))
                                and (
                                    not flags & FLAG_SUCCESS
                                    or (flags & FLAG_LAST_PDU and end == size)
                                )
                            ):
                                read[datao:end] = view[start + _HEADER : start + plen]
                                reader.consume(plen)
                                cmd.received = end
                                if not flags & FLAG_SUCCESS:
                                    continue
                                return self._completed(cmd, cid, 0, 0, 0, 0, 0)
                pdu = next_pdu()
                if pdu is None:
                    return None
                kind = pdu.type
                if kind == PDU_C2H_DATA:
                    _, flags, _, _, _, cid, _, datao, datal = DATA_PDU.unpack_from(pdu.header)
                    cmd = cmds.get(cid)
                    end = datao + datal
                    if (
                        cmd is None
                        or (read := cmd.read) is None
                        or datao != cmd.received
                        or datal != len(pdu.data)
                        or end > (size := len(read))
                        or (flags & FLAG_SUCCESS and (not flags & FLAG_LAST_PDU or end != size))
                    ):
                        event = self._handle(pdu)  # raises the error it breaks
                        if event is not None:
                            return event
                        continue
                    read[datao:end] = pdu.data
                    cmd.received = end
                    if not pdu.data_digest_ok:
                        cmd.digest_ok = False
                    if not flags & FLAG_SUCCESS:
                        continue
                    return self._completed(cmd, cid, 0, 0, 0, 0, 0)
                if kind == PDU_CAPSULE_RESP:
                    _, _, _, _, _, dw0, dw1, sqhd, sqid, cid, status = CAPSULE_RESP.unpack_from(
                        pdu.header
                    )
                    cmd = cmds.get(cid)
                    if cmd is None or (status & 0xFFFE == 0 and cmd.read is not None
                                       and cmd.received != len(cmd.read)):  # fmt: skip
                        return self._handle(pdu)  # raises
                    return self._completed(cmd, cid, status, dw0, dw1, sqhd, sqid)
                event = self._handle(pdu)
                if event is not None:
                    return event
        except TransportError as err:
            self._terminate(err)
            raise

    def _completed(self, cmd: CommandRecord, cid: int, status: int, dw0: int, dw1: int,
                   sqhd: int, sqid: int) -> ResponseReceived:  # fmt: skip
        """Retire ``cmd`` (its record back to the pool) and refill the one completion object."""
        del self._cmds[cid]
        cmd.write = cmd.read = None  # as _recycle, inlined
        self._pool.append(cmd)
        if not cmd.digest_ok and status == 0:
            status = _DATA_XFER_ERROR
        done = self._completion
        done.cid = cid
        done.status = status
        done.dw0 = dw0
        done.dw1 = dw1
        done.sqhd = sqhd
        done.sqid = sqid
        return done
