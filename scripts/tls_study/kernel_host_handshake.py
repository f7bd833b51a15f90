"""Our pyOpenSSL PSK *server* against the Linux 6.12 guest's nvme-tcp host + tlshd (study only).

  python scripts/tls_study/kernel_host_handshake.py [../shared/linuxvm]

Listens on 127.0.0.1:PORT (the guest reaches it as 10.0.2.2:PORT), boots the trixie guest
with kernel-host-tls.sh (`nvme connect --tls`), and for each TCP connection: TLS 1.3
handshake with the compat-derived NVMe0R01 PSK, read the ICReq, answer an ICResp, read the
next PDU header (the Fabrics Connect capsule) and close (there is no controller behind it).
"""

from __future__ import annotations

import os
import select
import socket
import struct
import subprocess
import sys
import threading
import time

from OpenSSL import SSL

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from nvme_psk import export_interchange, identity_and_tls_psk, parse_interchange  # noqa: E402
from psk_handshake import icresp, server_context  # noqa: E402
from psk_session_cb import server_context as session_server_context  # noqa: E402

NQN = "nqn.2014-08.org.nvmexpress:linuxvm-tls"
HOSTID = "0d0d0d0d-1111-2222-3333-444444444444"
HOST = f"nqn.2014-08.org.nvmexpress:uuid:{HOSTID}"
PORT = int(os.environ.get("PORT", "14430"))


def _retry(fn, sock, timeout=30.0):
    end = time.monotonic() + timeout
    while True:
        try:
            return fn()
        except (SSL.WantReadError, SSL.WantWriteError) as e:
            if time.monotonic() > end:
                raise TimeoutError("no progress") from None
            r = isinstance(e, SSL.WantReadError)
            select.select([sock] if r else [], [] if r else [sock], [], 1.0)


def _read(conn, sock, n):
    buf = b""
    while len(buf) < n:
        chunk = _retry(lambda: conn.recv(n - len(buf)), sock)  # noqa: B023 (called at once)
        if not chunk:
            break
        buf += chunk
    return buf


def serve(lsock: socket.socket, keys: dict[str, bytes], log: list, stop: threading.Event) -> None:
    seen: list[str] = []
    if any(
        len(k) == 48 for k in keys.values()
    ):  # R02: session callback, SHA-256 suite (tlshd 1.0.0)
        ctx, cb = session_server_context(
            keys, seen, sha256_suite=os.environ.get("R02_SHA256", "1") == "1"
        )
    else:
        ctx, cb = server_context(keys, seen)
    lsock.settimeout(1.0)
    while not stop.is_set():
        try:
            sock, peer = lsock.accept()
        except TimeoutError:
            continue
        sock.settimeout(30)
        rec: dict = {"peer": peer}
        try:
            conn = SSL.Connection(ctx, sock)
            conn.set_accept_state()
            _retry(conn.do_handshake, sock)
            rec.update(
                identity=seen[-1],
                version=conn.get_protocol_version_name(),
                cipher=conn.get_cipher_name(),
            )
            req = _read(conn, sock, 128)
            t, fl, hlen, pdo, plen, pfv, hpda, dgst, maxr2t = struct.unpack_from("<BBBBIHBBI", req)
            rec["icreq"] = dict(
                type=t, hlen=hlen, plen=plen, pfv=pfv, hpda=hpda, dgst=dgst, maxr2t=maxr2t
            )
            _retry(lambda: conn.sendall(icresp()), sock)  # noqa: B023 (called at once)
            nxt = _read(conn, sock, 8)
            if len(nxt) == 8:
                t, fl, hlen, pdo, plen = struct.unpack("<BBBBI", nxt)
                rec["next_pdu"] = dict(type=t, flags=fl, hlen=hlen, pdo=pdo, plen=plen)
                body = _read(
                    conn, sock, 64
                )  # the SQE of the capsule: opcode 0x7f, fctype 0x01 = Connect
                rec["next_sqe_opcode_fctype"] = (
                    (hex(body[0]), hex(body[4])) if len(body) > 4 else None
                )
        except Exception as e:  # report exactly where it stopped
            rec["error"] = f"{type(e).__name__}: {e}"
            if seen:
                rec["identity_seen"] = seen[-1]
        finally:
            sock.close()
        log.append(rec)
        print("host target:", rec, flush=True)
    del cb


def main() -> int:
    lvm = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "../../../shared/linuxvm")
    key = export_interchange(os.urandom(int(os.environ.get("KEYLEN", "32"))))
    ik = parse_interchange(key)
    identity, psk_compat = identity_and_tls_psk(ik, HOST, NQN, version=0, compat=True)
    print("key", key, "\nidentity", identity)
    lsock = socket.create_server(("127.0.0.1", PORT))
    log: list = []
    stop = threading.Event()
    th = threading.Thread(
        target=serve, args=(lsock, {identity: psk_compat}, log, stop), daemon=True
    )
    th.start()
    env = {**os.environ, "LINUXVM_RELEASE": "trixie"}
    out = subprocess.run(
        [
            os.path.join(lvm, "run"),
            "-t",
            "300",
            "-e",
            f"KEY={key}",
            "-e",
            f"HOSTNQN={HOST}",
            "-e",
            f"HOSTID={HOSTID}",
            "-e",
            f"NQN={NQN}",
            "-e",
            f"PORT={PORT}",
            os.path.join(HERE, "kernel-host-tls.sh"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        timeout=400,
    )
    stop.set()
    th.join(5)
    for line in out.stdout.splitlines():
        print("guest:", line)
    print("connections:", len(log), "handshakes ok:", sum("cipher" in r for r in log))
    return 0


if __name__ == "__main__":
    sys.exit(main())
