"""The ceiling: a raw Trio request/response ping-pong with NVMe/TCP-shaped messages.

Two processes on loopback, no protocol logic at all: the client sends fixed-size requests
(a 72-byte command capsule, plus in-capsule data for writes) keeping ``depth`` in flight and
batching what is ready into one send; the server answers each with fixed-size responses
(24-byte headers, plus the data for reads). This is what Python + Trio + this machine allow;
``bench/matrix.py`` reports our stack as a ratio of it, and measures both processes the same
way (``bench/probe.py``: run through ``bench/probed.py``, the client reports its round trips).
"""

from __future__ import annotations

import socket
import sys
import time
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.probe import COUNTERS

HEADER = 24
CAPSULE = 72


def shape(op: str, size: int) -> tuple[int, int]:
    """(request bytes, response bytes) of one I/O."""
    if op == "read":
        return CAPSULE, HEADER + size + HEADER  # C2HData header + data + CapsuleResp
    return CAPSULE + size, HEADER


async def serve(port: int, request: int, response: int) -> None:
    listeners = await trio.open_tcp_listeners(port, host="127.0.0.1")
    reply = bytes(response)

    async def handle(stream: trio.SocketStream) -> None:
        pending = 0
        try:
            while True:
                data = await stream.receive_some(1 << 20)
                if not data:
                    return
                pending += len(data)
                count, pending = divmod(pending, request)
                if count:
                    await stream.send_all(reply * count)
        except trio.BrokenResourceError:
            return  # the client hung up mid-reply at the end of its run

    await trio.serve_listeners(handle, listeners)


async def client(port: int, request: int, response: int, depth: int, seconds: float) -> float:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    stream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    req = bytes(request)
    done = 0
    COUNTERS["ops"] = lambda: done  # read by the bench's snapshots (bench/probe.py)
    received = 0
    await stream.send_all(req * depth)
    inflight = depth
    start = time.monotonic()
    deadline = start + seconds
    while True:
        data = await stream.receive_some(1 << 20)
        received += len(data)
        finished, received = divmod(received, response)
        done += finished
        inflight -= finished
        now = time.monotonic()
        if now >= deadline:
            break
        if finished:
            await stream.send_all(req * finished)
            inflight += finished
    elapsed = time.monotonic() - start
    await stream.aclose()
    return done / elapsed


def main() -> None:
    role, port, request, response = (
        sys.argv[1],
        int(sys.argv[2]),
        int(sys.argv[3]),
        int(sys.argv[4]),
    )
    if role == "server":
        trio.run(serve, port, request, response)
    else:
        depth, seconds = int(sys.argv[5]), float(sys.argv[6])
        print(trio.run(client, port, request, response, depth, seconds))


if __name__ == "__main__":
    main()
