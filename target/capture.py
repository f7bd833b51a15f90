"""Packet capture of the target's connections: one pcapng file per connection.

:class:`ConnectionCapture` turns the bytes a :class:`~target.connection.QueueConnection`
receives and sends into a synthesized TCP flow (:mod:`nvmeof.pcapng`) that Wireshark's
NVMe/TCP dissector decodes. The connection calls it once per receive and once per flush, and
only when capturing (``capture is not None``): nothing per PDU, nothing at all when off.

File writes are ordinary blocking disk I/O on the event loop. That is acceptable for a
debugging tool, and it keeps the file in stream order: each call writes before it returns, and
the connection calls in the order the bytes were received or handed to the socket. The file is
unbuffered, so a crash leaves every block written so far (a reader stops at a torn last one).
"""

from __future__ import annotations

import logging
import os
import socket
import struct
import time
from pathlib import Path
from typing import BinaryIO

import trio

from nvmeof.pcapng import Endpoint, FlowRecorder, TcpFlow

log = logging.getLogger("nvmeof.target")

APPLICATION = "nvmeof-emu target"
_LINGER = struct.Struct("ii")


def _now_us() -> int:
    return time.time_ns() // 1000


def capture_name(port_id: int, peer: Endpoint, serial: int) -> str:
    """``port1-127.0.0.1_41234-3.pcapng``: the target port, the host's address and port, and
    the connection's number in this target's run."""
    return f"port{port_id}-{peer.address}_{peer.port}-{serial}.pcapng"


class ConnectionCapture:
    """The capture file of one connection, the host as TCP client and the target as server."""

    def __init__(self, path: Path, file: BinaryIO, recorder: FlowRecorder) -> None:
        self.path = path
        self._file: BinaryIO | None = file
        self._recorder = recorder

    @classmethod
    def open(cls, directory: Path, port_id: int, sock: trio.socket.SocketType,
             serial: int) -> ConnectionCapture | None:  # fmt: skip
        """Start the capture of a connection just accepted (its handshake stamped now); None,
        logged, when the file cannot be created: the connection is served all the same."""
        try:
            host = Endpoint(*sock.getpeername()[:2])
            local = Endpoint(*sock.getsockname()[:2])
        except OSError:
            return None
        recorder = FlowRecorder(TcpFlow(host, local), application=APPLICATION,
                                interface_name=f"port {port_id} {local.address}:{local.port}")  # fmt: skip
        while True:
            path = directory / capture_name(port_id, host, serial)
            try:
                # Exclusive creation: never overwrite an earlier run's capture.
                file = open(path, "xb", buffering=0)  # noqa: SIM115 (closed by close())
            except FileExistsError:
                serial += 1
                continue
            except OSError as err:
                log.error("capture not started peer=%s:%s: %s", host.address, host.port, str(err))
                return None
            break
        capture = cls(path, file, recorder)
        capture._write(recorder.opening(_now_us()))
        log.info("capturing peer=%s:%s file=%s", host.address, host.port, path)
        return capture

    def _write(self, data: bytes) -> None:
        if self._file is None:
            return
        try:
            self._file.write(data)
        except OSError as err:  # a full disk stops the capture, not the connection
            log.error("capture stopped file=%s: %s", self.path, str(err))
            self._file.close()
            self._file = None

    def received(self, data: bytes | bytearray | memoryview) -> None:
        """Bytes the host sent, just received."""
        self._write(self._recorder.client_sent(data, _now_us()))

    def sent(self, data: bytes | bytearray | memoryview) -> None:
        """Bytes the target is handing to the socket, recorded just before the send (under
        the connection's send lock, so in stream order), so also when the send then fails."""
        self._write(self._recorder.server_sent(data, _now_us()))

    def close(self, sock: trio.socket.SocketType, *, target_closed: bool) -> None:
        """Write the close and the file's end; call before the socket is closed. A socket
        with SO_LINGER on and a zero timeout (``QueueConnection.reset``) closes with a RST."""
        try:
            onoff, seconds = _LINGER.unpack(
                sock.getsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER.size)
            )
            reset = bool(onoff) and seconds == 0
        except OSError:
            reset = False
        self._write(self._recorder.closing(_now_us(), reset=reset, server_first=target_closed))
        if self._file is not None:
            self._file.close()
            self._file = None


def prepare_directory(directory: str | os.PathLike[str]) -> Path:
    """The capture directory, created if missing."""
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    return path
