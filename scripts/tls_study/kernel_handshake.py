"""Our pyOpenSSL PSK client against the Linux 6.12 guest's nvmet + tlshd (study, not product).

  LINUXVM_RELEASE=trixie python scripts/tls_study/kernel_handshake.py [../shared/linuxvm]

Boots the guest with scripts/tls_study/nvmet-tls-target.sh (port 4420 forwarded to
127.0.0.1:14420), hands it a fresh NVMeTLSkey-1:01 key, compares the key the guest filed
in .nvme with our own derivation, then does TLS 1.3 + ICReq/ICResp over the forwarded port.
"""

from __future__ import annotations

import os
import select
import socket
import struct
import subprocess
import sys
import time

from OpenSSL import SSL

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from nvme_psk import export_interchange, identity_and_tls_psk, parse_interchange, retained_psk  # noqa: E402
from psk_handshake import client_context, icreq, lib  # noqa: E402
from psk_session_cb import client_context as session_client_context  # noqa: E402

NQN = "nqn.2014-08.org.nvmexpress:linuxvm-tls"
HOST = "nqn.2014-08.org.nvmexpress:uuid:0d0d0d0d-1111-2222-3333-444444444444"


def _retry(fn, sock, timeout=30.0):
    """The socket has a timeout, so it is non-blocking under OpenSSL: wait and retry."""
    end = time.monotonic() + timeout
    while True:
        try:
            return fn()
        except (SSL.WantReadError, SSL.WantWriteError) as e:
            if time.monotonic() > end:
                raise TimeoutError(f"no progress for {timeout:.0f} s") from None
            want_read = isinstance(e, SSL.WantReadError)
            select.select([sock] if want_read else [], [] if want_read else [sock], [], 1.0)


def tls_client(
    identity: str,
    psk: bytes,
    port: int,
    groups: bytes | None = None,
    session_cb: bool = False,
    sha256_suite: bool = False,
) -> dict:
    if session_cb:  # OpenSSL psk_use_session callback: SHA-256 and SHA-384 suites
        ctx, cb = session_client_context(identity, psk, sha256_suite)
        if groups:
            assert lib.SSL_CTX_set1_curves_list(ctx._context, groups) == 1
    else:  # legacy psk_client_callback: SHA-256 only
        ctx, cb = client_context(identity, psk, groups)
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    conn = SSL.Connection(ctx, sock)
    conn.set_connect_state()
    t0 = time.monotonic()
    _retry(conn.do_handshake, sock)
    out = {
        "handshake_s": round(time.monotonic() - t0, 3),
        "version": conn.get_protocol_version_name(),
        "cipher": conn.get_cipher_name(),
    }
    _retry(lambda: conn.sendall(icreq()), sock)
    buf = b""
    while len(buf) < 128:
        chunk = _retry(lambda: conn.recv(128 - len(buf)), sock)  # noqa: B023 (called at once)
        if not chunk:
            break
        buf += chunk
    out["icresp_len"] = len(buf)
    if len(buf) >= 16:
        t, fl, hlen, pdo, plen, pfv, cpda, dgst, maxh2c = struct.unpack_from("<BBBBIHBBI", buf)
        out["icresp"] = dict(
            type=t,
            flags=fl,
            hlen=hlen,
            pdo=pdo,
            plen=plen,
            pfv=pfv,
            cpda=cpda,
            dgst=dgst,
            maxh2cdata=maxh2c,
        )
    del cb
    conn.close()
    return out


def main() -> int:
    lvm = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "../../../shared/linuxvm")
    key = export_interchange(
        os.urandom(int(os.environ.get("KEYLEN", "32")))
    )  # 48: NVMe0R02, SHA-384
    identity, psk = identity_and_tls_psk(parse_interchange(key), HOST, NQN, version=0)
    print("key", key)
    print("our identity:", identity)
    print("our TLS PSK: ", psk.hex())
    env = {**os.environ, "LINUXVM_RELEASE": "trixie"}
    vm = subprocess.Popen(
        [
            os.path.join(lvm, "run"),
            "-t",
            "400",
            "-p",
            "14420:4420",
            "-p",
            "19999:9999",
            "-e",
            f"KEY={key}",
            "-e",
            f"HOSTNQN={HOST}",
            "-e",
            f"NQN={NQN}",
            "-e",
            "TLSHD_LOGLEVEL=7",
            "-e",
            "TLSHD_GNUTLS_DEBUG=2",
            os.path.join(HERE, "nvmet-tls-target.sh"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    assert vm.stdout is not None
    filed = None
    for line in vm.stdout:
        print("guest:", line.rstrip())
        if line.startswith("KEYRING-KEY"):
            parts = line.split()
            filed = (" ".join(parts[1:-1]), parts[-1])
        if line.startswith("NVMET-TLS-READY"):
            break
    else:
        print("guest ended before READY")
        return 1
    if filed:
        print("guest filed identity matches ours:", filed[0] == identity)
        print("guest filed PSK matches ours:     ", filed[1] == psk.hex())
    ik = parse_interchange(key)
    _, psk_compat = identity_and_tls_psk(ik, HOST, NQN, version=0, compat=True)
    # nvme-cli 2.13 / libnvme 1.13 (Debian 13) files the *compat* derivation (measured:
    # only that key completes the handshake); newer libnvme's default is the RFC 8446 one.
    cases = {
        "compat-derived key, session callback": (identity, psk_compat, None, True),
        "compat-derived key, OpenSSL default groups": (identity, psk_compat, None),
        "compat-derived key, groups X25519:P-256": (identity, psk_compat, b"X25519:P-256"),
        "RFC 8446-derived key (libnvme >= fix)": (identity, psk, b"X25519:P-256"),
        "retained key (no TLS-PSK step)": (identity, retained_psk(ik, HOST), b"X25519:P-256"),
        "configured key as is": (identity, ik.configured, b"X25519:P-256"),
        "random (wrong) key": (identity, os.urandom(32), b"X25519:P-256"),
    }
    if len(ik.configured) == 48:  # the legacy callback cannot do SHA-384
        cases = {n: c for n, c in cases.items() if len(c) == 4 or "wrong" in n}
        cases["random (wrong) key"] += (True,)
        cases["compat-derived key, session callback, SHA-256 suite"] = (
            identity,
            psk_compat,
            None,
            True,
            True,
        )
    for name, (ident, k, groups, *opt) in cases.items():
        try:
            print(name, "->", tls_client(ident, k, 14420, groups, *map(bool, opt)))
        except Exception as e:  # report exactly where it stopped
            print(name, "-> FAILED:", type(e).__name__, e)
    # Plain ICReq to the TLS-required port (no TLS): expect no ICResp.
    try:
        with socket.create_connection(("127.0.0.1", 14420), timeout=10) as sk:
            sk.sendall(icreq())
            print("plain ICReq to the tls-required port -> got", len(sk.recv(128)), "bytes")
    except OSError as e:
        print("plain ICReq to the tls-required port ->", type(e).__name__, e)
    socket.create_connection(("127.0.0.1", 19999)).close()
    rest, _ = vm.communicate(timeout=120)
    for line in rest.splitlines():
        print("guest:", line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
