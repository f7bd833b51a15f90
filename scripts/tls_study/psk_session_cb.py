"""TLS 1.3 external PSK through OpenSSL's *session* callbacks (psk_use_session / psk_find_session):
the path that also does TLS_AES_256_GCM_SHA384 (NVMe0R02, 48-byte keys) and has no 256-byte
identity limit. Study code: cryptography's private bindings (`Cryptography_SSL_SESSION_new`,
`SSL_SESSION_set1_master_key`, `SSL_SESSION_set_cipher`, `SSL_CIPHER_find`).

Run:  python scripts/tls_study/psk_session_cb.py
"""

from __future__ import annotations

import os
import sys

from cryptography.hazmat.bindings.openssl.binding import Binding
from OpenSSL import SSL

sys.path.insert(0, os.path.dirname(__file__))
from nvme_psk import export_interchange, identity_and_tls_psk, parse_interchange
from psk_handshake import handshake, icreq, icresp, pump

lib, ffi = Binding.lib, Binding.ffi
SUITES = {
    32: (b"TLS_AES_128_GCM_SHA256", b"\x13\x01"),
    48: (b"TLS_AES_256_GCM_SHA384", b"\x13\x02"),
}
TLS1_3_VERSION = 0x0304


def _session(ssl, key: bytes, suite_len: int | None = None):
    sess = lib.Cryptography_SSL_SESSION_new()
    cipher = lib.SSL_CIPHER_find(ssl, SUITES[suite_len or len(key)][1])
    if sess == ffi.NULL or cipher == ffi.NULL:
        return ffi.NULL
    if not (
        lib.SSL_SESSION_set1_master_key(sess, key, len(key))
        and lib.SSL_SESSION_set_cipher(sess, cipher)
        and lib.SSL_SESSION_set_protocol_version(sess, TLS1_3_VERSION)
    ):
        lib.SSL_SESSION_free(sess)
        return ffi.NULL
    return sess


def _ctx(suite: bytes) -> SSL.Context:
    ctx = SSL.Context(SSL.TLS_METHOD)
    ctx.set_min_proto_version(SSL.TLS1_3_VERSION)
    ctx.set_max_proto_version(SSL.TLS1_3_VERSION)
    assert lib.SSL_CTX_set_ciphersuites(ctx._context, suite) == 1
    ctx.set_options(SSL.OP_NO_TICKET)
    return ctx


def client_context(identity: str, key: bytes, sha256_suite: bool = False):
    """sha256_suite: put a 48-byte (NVMe0R02) key under TLS_AES_128_GCM_SHA256, as Debian 13's
    tlshd 1.0.0 does (measured: it negotiates a SHA-256 suite for R02 keys)."""
    suite_len = 32 if sha256_suite else len(key)
    ctx = _ctx(SUITES[suite_len][0])
    ident = ffi.new("unsigned char[]", identity.encode())
    n = len(identity.encode())

    @ffi.callback(
        "int (*)(SSL *, const EVP_MD *, const unsigned char **, size_t *, SSL_SESSION **)"
    )
    def cb(ssl, md, id_out, idlen_out, sess_out):
        sess = _session(ssl, key, suite_len)
        if sess == ffi.NULL:
            return 0
        id_out[0] = ident
        idlen_out[0] = n
        sess_out[0] = sess
        return 1

    lib.SSL_CTX_set_psk_use_session_callback(ctx._context, cb)
    return ctx, (cb, ident)


def server_context(
    keys: dict[str, bytes],
    seen: list[str],
    suites: bytes = b"TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256",
    sha256_suite: bool = False,
):
    """sha256_suite: serve 48-byte (R02) keys under a SHA-256 suite, for tlshd 1.0.0 clients. OpenSSL
    picks the suite before the PSK and drops a PSK whose session hash differs, so the suite list must
    then hold SHA-256 suites only (measured: else "no suitable signature algorithm", i.e. no PSK)."""
    if sha256_suite:
        suites = b"TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256"
    ctx = _ctx(suites)

    @ffi.callback("int (*)(SSL *, const unsigned char *, size_t, SSL_SESSION **)")
    def cb(ssl, identity, idlen, sess_out):
        ident = bytes(ffi.buffer(identity, idlen)).decode(errors="replace")
        seen.append(ident)
        key = keys.get(ident)
        if key is None:
            sess_out[0] = (
                ffi.NULL
            )  # unknown identity: no PSK (handshake then fails: no certificate)
            return 1
        sess = _session(ssl, key, 32 if sha256_suite else None)
        if sess == ffi.NULL:
            return 0
        sess_out[0] = sess
        return 1

    lib.SSL_CTX_set_psk_find_session_callback(ctx._context, cb)
    return ctx, cb


def run(
    interchange: str,
    hostnqn: str,
    subnqn: str,
    *,
    version: int = 0,
    compat: bool = True,
    client_key: bytes | None = None,
) -> dict:
    identity, psk = identity_and_tls_psk(
        parse_interchange(interchange), hostnqn, subnqn, version, compat
    )
    seen: list[str] = []
    sctx, sref = server_context({identity: psk}, seen)
    cctx, cref = client_context(identity, client_key if client_key is not None else psk)
    s = SSL.Connection(sctx, None)
    s.set_accept_state()
    c = SSL.Connection(cctx, None)
    c.set_connect_state()
    handshake(c, s)
    c.send(icreq())
    pump(c, s)
    ok_req = s.recv(4096) == icreq()
    s.send(icresp())
    pump(c, s)
    ok_resp = c.recv(4096) == icresp()
    del sref, cref
    return {
        "identity": identity,
        "server_saw": seen,
        "version": c.get_protocol_version_name(),
        "cipher": c.get_cipher_name(),
        "icreq_ok": ok_req,
        "icresp_ok": ok_resp,
    }


if __name__ == "__main__":
    host = "nqn.2014-08.org.nvmexpress:uuid:0d0d0d0d-1111-2222-3333-444444444444"
    sub = "nqn.2014-08.org.nvmexpress:linuxvm-tls"
    long_host = "nqn.2014-08.org.nvmexpress:" + "h" * 196  # 223-byte NQNs: identity > 256 bytes
    long_sub = "nqn.2014-08.org.nvmexpress:" + "s" * 196
    for name, size, h, s_, ver in [
        ("SHA-256 v0", 32, host, sub, 0),
        ("SHA-384 v0", 48, host, sub, 0),
        ("SHA-384 v1", 48, host, sub, 1),
        ("SHA-256 v0, 223-byte NQNs", 32, long_host, long_sub, 0),
    ]:
        key = export_interchange(os.urandom(size))
        r = run(key, h, s_, version=ver)
        print(
            f"{name}: id {len(r['identity'])} bytes, {r['version']} {r['cipher']}, "
            f"server saw it: {r['server_saw'] == [r['identity']]}, ICReq/ICResp: {r['icreq_ok'] and r['icresp_ok']}"
        )
    try:
        run(export_interchange(os.urandom(48)), host, sub, client_key=os.urandom(48))
        print("wrong key: SUCCEEDED (bad)")
    except SSL.Error as e:
        print("wrong key (SHA-384): refused:", e)
