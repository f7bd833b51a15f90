"""In-process TLS 1.3 external-PSK handshake with pyOpenSSL memory BIOs (study, not product code).

pyOpenSSL (26.4.0) has no PSK API; the OpenSSL PSK callbacks are reached through
cryptography's bindings (`Binding.lib` / `Binding.ffi`, cryptography's *private*
binding layer) on the `Connection._ssl` / `Context._context` pointers. OpenSSL's legacy
callbacks (SSL_CTX_set_psk_client_callback / _server_callback) also serve TLS 1.3:
OpenSSL wraps the key into a session whose cipher is TLS_AES_128_GCM_SHA256, so this
path covers the SHA-256 identities (NVMe0R01 / NVMe1R01) only.

Run:  python scripts/tls_study/psk_handshake.py
"""

from __future__ import annotations

import os
import struct
import sys

from cryptography.hazmat.bindings.openssl.binding import Binding
from OpenSSL import SSL

sys.path.insert(0, os.path.dirname(__file__))
from nvme_psk import export_interchange, identity_and_tls_psk, parse_interchange

lib, ffi = Binding.lib, Binding.ffi
SUITE = b"TLS_AES_128_GCM_SHA256"


def _ctx(method_is_server: bool) -> SSL.Context:
    ctx = SSL.Context(SSL.TLS_METHOD)
    ctx.set_min_proto_version(SSL.TLS1_3_VERSION)
    ctx.set_max_proto_version(SSL.TLS1_3_VERSION)
    assert lib.SSL_CTX_set_ciphersuites(ctx._context, SUITE) == 1
    # No tickets: the kernel peers (tlshd/GnuTLS) do not resume, and a ticket would be a
    # second PSK on the wire.
    ctx.set_options(SSL.OP_NO_TICKET)
    return ctx


def client_context(
    identity: str, psk: bytes, groups: bytes | None = None
) -> tuple[SSL.Context, object]:
    ctx = _ctx(False)
    if groups:  # e.g. b"X25519:P-256": OpenSSL >= 3.5 leads with the X25519MLKEM768 hybrid share
        assert lib.SSL_CTX_set1_curves_list(ctx._context, groups) == 1
    ident = identity.encode()

    @ffi.callback(
        "unsigned int (*)(SSL *, const char *, char *, unsigned int, unsigned char *, unsigned int)"
    )
    def cb(ssl, hint, id_out, max_id, psk_out, max_psk):
        if len(ident) + 1 > max_id or len(psk) > max_psk:
            return 0  # OpenSSL: PSK_MAX_IDENTITY_LEN (256) caps the identity on this path
        ffi.memmove(id_out, ident + b"\0", len(ident) + 1)
        ffi.memmove(psk_out, psk, len(psk))
        return len(psk)

    lib.SSL_CTX_set_psk_client_callback(ctx._context, cb)
    return ctx, cb  # keep cb alive


def server_context(keys: dict[str, bytes], seen: list[str]) -> tuple[SSL.Context, object]:
    ctx = _ctx(True)

    @ffi.callback("unsigned int (*)(SSL *, const char *, unsigned char *, unsigned int)")
    def cb(ssl, identity, psk_out, max_psk):
        ident = ffi.string(identity).decode(errors="replace")
        seen.append(ident)
        key = keys.get(ident)
        if key is None or len(key) > max_psk:
            return 0
        ffi.memmove(psk_out, key, len(key))
        return len(key)

    lib.SSL_CTX_set_psk_server_callback(ctx._context, cb)
    return ctx, cb


def pump(a: SSL.Connection, b: SSL.Connection) -> int:
    moved = 0
    for src, dst in ((a, b), (b, a)):
        while True:
            try:
                data = src.bio_read(65536)
            except SSL.WantReadError:
                break
            if not data:
                break
            dst.bio_write(data)
            moved += len(data)
    return moved


def handshake(c: SSL.Connection, s: SSL.Connection) -> None:
    done = {id(c): False, id(s): False}
    for _ in range(20):
        for x in (c, s):
            if not done[id(x)]:
                try:
                    x.do_handshake()
                    done[id(x)] = True
                except SSL.WantReadError:
                    pass
        if pump(c, s) == 0 and all(done.values()):
            return
    raise RuntimeError("handshake did not finish")


def icreq() -> bytes:
    # ICReq PDU (NVMe/TCP 3.6.2.2): CH type 0x00, flags 0, hlen 128, pdo 0, plen 128;
    # PFV 0, HPDA 0, DGST 0, MAXR2T 0 (1 outstanding R2T), 112 reserved bytes.
    return struct.pack("<BBBBIHBBI", 0x00, 0, 128, 0, 128, 0, 0, 0, 0) + bytes(112)


def icresp() -> bytes:
    # ICResp: type 0x01, hlen 128, plen 128; PFV 0, CPDA 0, DGST 0, MAXH2CDATA 131072.
    return struct.pack("<BBBBIHBBI", 0x01, 0, 128, 0, 128, 0, 0, 0, 131072) + bytes(112)


def run(interchange: str, hostnqn: str, subnqn: str, *, client_psk: bytes | None = None) -> dict:
    ik = parse_interchange(interchange)
    identity, psk = identity_and_tls_psk(ik, hostnqn, subnqn, version=0)
    seen: list[str] = []
    sctx, scb = server_context({identity: psk}, seen)
    cctx, ccb = client_context(identity, client_psk if client_psk is not None else psk)
    s = SSL.Connection(sctx, None)
    s.set_accept_state()
    c = SSL.Connection(cctx, None)
    c.set_connect_state()
    handshake(c, s)
    c.sendall(icreq()) if hasattr(c, "sendall") else c.send(icreq())
    pump(c, s)
    got_req = s.recv(4096)
    s.send(icresp())
    pump(c, s)
    got_resp = c.recv(4096)
    return {
        "identity": identity,
        "server_saw_identity": seen,
        "version": c.get_protocol_version_name(),
        "cipher": c.get_cipher_name(),
        "icreq_ok": got_req == icreq(),
        "icresp_ok": got_resp == icresp(),
        "_refs": (scb, ccb),
    }


if __name__ == "__main__":
    key = export_interchange(os.urandom(32))
    host = "nqn.2014-08.org.nvmexpress:uuid:0d0d0d0d-1111-2222-3333-444444444444"
    sub = "nqn.2014-08.org.nvmexpress:linuxvm-tls"
    r = run(key, host, sub)
    r.pop("_refs")
    print("key", key)
    for k, v in r.items():
        print(f"{k}: {v}")
    try:
        run(key, host, sub, client_psk=os.urandom(32))
        print("wrong key: handshake SUCCEEDED (bad)")
    except SSL.Error as e:
        print("wrong key: refused:", e)
