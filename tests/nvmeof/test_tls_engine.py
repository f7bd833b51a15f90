"""The sans-IO TLS engine (nvmeof.tls.engine): two engines in memory, bytes moved by hand."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from nvmeof.tls import engine as engine_module
from nvmeof.tls.engine import TlsClosed, TlsEngine, TlsError, TlsUnavailable
from nvmeof.tls.hello import OfferedPsk, scan_client_hello
from nvmeof.tls.psk import (
    TLS_AES_128_GCM_SHA256,
    TLS_AES_256_GCM_SHA384,
    InterchangeKey,
    PskIdentity,
    TlsPsk,
    host_psk,
    target_psk,
)

H, S = "nqn.2014-08.org.nvmexpress:uuid:0d0d0d0d-1111", "nqn.2026-12.io.nvmeof-emu:tls"
#: What a tlshd 1.0.0 host offers (GnuTLS priority order), whatever its key.
TLSHD_SUITES = (TLS_AES_256_GCM_SHA384, "TLS_CHACHA20_POLY1305_SHA256", TLS_AES_128_GCM_SHA256)


def pump(a: TlsEngine, b: TlsEngine) -> int:
    moved = 0
    for src, dst in ((a, b), (b, a)):
        data = src.bytes_to_send()
        if data:
            dst.receive_bytes(data)
            moved += len(data)
    return moved


def connect(client: TlsEngine, server: TlsEngine) -> None:
    for _ in range(10):
        done = client.handshake() & server.handshake()
        if not pump(client, server) and done:
            return
    raise AssertionError("handshake did not finish")


def fail(client: TlsEngine, server: TlsEngine) -> tuple[TlsError, TlsError]:
    """Run a handshake that must fail; the server's error, then the client's (from the alert)."""
    with pytest.raises(TlsError) as server_error:
        connect(client, server)
    client.receive_bytes(server.bytes_to_send())  # the alert
    with pytest.raises(TlsError) as client_error:
        client.handshake()
    return server_error.value, client_error.value


def keyed_server(key: InterchangeKey, *, r02_any_suite: bool = True, **options: bool) -> TlsEngine:
    def lookup(raw: bytes) -> TlsPsk | None:
        identity = PskIdentity.parse(raw)
        return None if identity is None else target_psk(identity, key, **options)

    return TlsEngine.server(lookup, r02_any_suite=r02_any_suite)


@pytest.mark.parametrize("version", [0, 1])
@pytest.mark.parametrize(
    ("hmac", "r02_sha256", "cipher"),
    [
        (1, True, TLS_AES_128_GCM_SHA256),
        (2, True, TLS_AES_128_GCM_SHA256),
        (2, False, TLS_AES_256_GCM_SHA384),
        (0, False, TLS_AES_256_GCM_SHA384),  # hh 00, 48 bytes: an R02 identity
    ],
)
def test_handshake(hmac: int, r02_sha256: bool, cipher: str, version: int) -> None:
    key = InterchangeKey.generate(hmac, os.urandom(32 if hmac == 1 else 48))
    psk = host_psk(key, H, S, identity_version=version, r02_sha256=r02_sha256)
    client, server = TlsEngine.client(psk), keyed_server(key, r02_sha256=r02_sha256)
    assert (client.cipher, client.version, server.peer_identity) == (None, None, None)
    connect(client, server)
    assert client.cipher == server.cipher == cipher
    assert client.version == server.version == "TLSv1.3"
    assert server.peer_identity == client.peer_identity == psk.identity
    assert psk.identity.startswith(b"NVMe%dR0%d " % (version, key.suite_hash))
    client.write(b"ICReq")
    pump(client, server)
    buffer = bytearray(16)
    assert server.read_into(buffer) == 5 and buffer[:5] == b"ICReq"
    assert server.read_into(buffer) == 0  # nothing more yet


@pytest.mark.parametrize("target_r02_sha256", [True, False])
@pytest.mark.parametrize(
    ("host_r02_sha256", "cipher"),
    [(True, "TLS_CHACHA20_POLY1305_SHA256"), (False, TLS_AES_256_GCM_SHA384)],
)
def test_one_target_serves_r02_hosts_of_either_kind(
    host_r02_sha256: bool, cipher: str, target_r02_sha256: bool
) -> None:
    # docs/TLS.md section 3, last row: a tlshd 1.0.0 host offers AES-256-GCM-SHA384 first but
    # computes the binder of its 48-byte key with SHA-256 (with every suite allowed OpenSSL
    # fails it: "bad extension"). The server reads the ClientHello, sees a 32-byte binder and
    # allows SHA-256 suites only; the host's preference then gives CHACHA20, as measured kernel
    # to kernel. A TP 8011 host (48-byte binder) gets AES-256-GCM from the same target.
    key = InterchangeKey.generate(2, os.urandom(48))
    psk = host_psk(key, H, S, r02_sha256=host_r02_sha256)
    client = TlsEngine.client(psk, suites=TLSHD_SUITES)
    server = keyed_server(key, r02_sha256=target_r02_sha256)
    connect(client, server)
    assert client.cipher == server.cipher == cipher


def test_a_strict_target_says_why_the_suites_do_not_fit() -> None:
    key = InterchangeKey.generate(2, os.urandom(48))
    psk = host_psk(key, H, S, r02_sha256=True)
    client = TlsEngine.client(psk, suites=TLSHD_SUITES)
    server = keyed_server(key, r02_any_suite=False, r02_sha256=False)
    server_error, client_error = fail(client, server)
    assert (
        "binder is 32 bytes but its PSK is set up for TLS_AES_256_GCM_SHA384 (see r02_sha256)"
        in str(server_error)
    )
    assert "r02_sha256" in str(client_error)
    # A 32-byte PSK is never moved to SHA-384.
    short = TlsPsk(b"NVMe0R01 nqn.h nqn.s", os.urandom(32), TLS_AES_128_GCM_SHA256)
    client = TlsEngine.client(TlsPsk(short.identity, short.key, TLS_AES_256_GCM_SHA384))
    server_error, _ = fail(client, TlsEngine.server(lambda _: short))
    assert "binder is 48 bytes but its PSK is set up for TLS_AES_128_GCM_SHA256 (OpenSSL" in str(
        server_error
    )


def test_rfc_client_offering_every_suite_gets_sha384() -> None:
    key = InterchangeKey.generate(2, os.urandom(48))
    psk = host_psk(key, H, S, r02_sha256=False)
    client = TlsEngine.client(psk, suites=tuple(reversed(TLSHD_SUITES)))
    server = keyed_server(key, r02_sha256=False)
    connect(client, server)
    assert server.cipher == TLS_AES_256_GCM_SHA384


def test_456_byte_identity() -> None:
    # Two 223-byte NQNs: past the legacy PSK callbacks' 256-byte limit.
    host, sub = "nqn.2014-08.org.nvmexpress:" + "h" * 196, "nqn.2014-08.org.nvmexpress:" + "s" * 196
    psk = TlsPsk(f"NVMe0R01 {host} {sub}".encode(), os.urandom(32), TLS_AES_128_GCM_SHA256)
    assert len(psk.identity) == 456
    seen: list[bytes] = []
    server = TlsEngine.server(lambda identity: seen.append(identity) or psk)
    client = TlsEngine.client(psk)
    connect(client, server)
    assert server.peer_identity == psk.identity and seen == [psk.identity]  # asked once


def test_wrong_key_is_refused_at_the_binder() -> None:
    psk = TlsPsk(b"NVMe0R01 nqn.h nqn.s", os.urandom(32), TLS_AES_128_GCM_SHA256)
    server = TlsEngine.server(lambda identity: TlsPsk(identity, os.urandom(32), psk.cipher))
    server_error, client_error = fail(TlsEngine.client(psk), server)
    assert "binder does not verify" in str(server_error)
    assert "alert decrypt error" in str(client_error) and "another key" in str(client_error)
    assert server.peer_identity is None
    with pytest.raises(TlsError, match="binder does not verify"):  # sticky
        server.handshake()


def test_unknown_identity_is_refused() -> None:
    psk = TlsPsk(b"NVMe0R01 nqn.h nqn.s", os.urandom(32), TLS_AES_128_GCM_SHA256)
    server_error, client_error = fail(TlsEngine.client(psk), TlsEngine.server(lambda _: None))
    assert str(server_error).startswith("unknown PSK identity b'NVMe0R01 nqn.h nqn.s'")
    assert "alert handshake failure" in str(client_error)


def test_lookup_exceptions_fail_the_handshake_and_are_chained() -> None:
    psk = TlsPsk(b"NVMe0R01 nqn.h nqn.s", os.urandom(32), TLS_AES_128_GCM_SHA256)

    def broken(identity: bytes) -> TlsPsk | None:
        raise KeyError("no such host")

    server_error, _ = fail(TlsEngine.client(psk), TlsEngine.server(broken))
    assert "PSK lookup failed: KeyError('no such host')" in str(server_error)
    assert isinstance(server_error.__cause__, KeyError)
    server_error, _ = fail(TlsEngine.client(psk), TlsEngine.server(lambda _: b"key"))
    assert isinstance(server_error.__cause__, TypeError) and "not TlsPsk" in str(server_error)


def test_one_mebibyte_in_pieces_both_ways() -> None:
    psk = TlsPsk(b"NVMe0R01 nqn.h nqn.s", os.urandom(32), TLS_AES_128_GCM_SHA256)
    client, server = TlsEngine.client(psk), TlsEngine.server(lambda _: psk)
    connect(client, server)
    for sender, receiver in ((client, server), (server, client)):
        data = os.urandom(1 << 20)
        view, sizes = memoryview(data), [1, 100, 16384, 16385, 70000, 131072, 5]
        offset = 0
        while offset < len(data):  # writes of odd sizes, each pumped or not
            size = sizes[offset % len(sizes)]
            sender.write(view[offset : offset + size])
            offset += size
            if offset % 3:
                receiver.receive_bytes(sender.bytes_to_send())
        receiver.receive_bytes(sender.bytes_to_send())
        got = bytearray(len(data))
        into, n = memoryview(got), 0
        while n < len(data):  # reads into slices of the caller's buffer, of odd sizes
            read = receiver.read_into(into[n : n + 1 + (n % 200_000)])
            assert read > 0
            n += read
        assert got == data
        assert receiver.read_into(bytearray(10)) == 0


def test_read_into_takes_several_records_at_once() -> None:
    psk = TlsPsk(b"NVMe0R01 nqn.h nqn.s", os.urandom(32), TLS_AES_128_GCM_SHA256)
    client, server = TlsEngine.client(psk), TlsEngine.server(lambda _: psk)
    connect(client, server)
    client.write(bytes(100_000))  # 7 records
    pump(client, server)
    assert server.read_into(bytearray(1 << 17)) == 100_000


def test_close_notify() -> None:
    psk = TlsPsk(b"NVMe0R01 nqn.h nqn.s", os.urandom(32), TLS_AES_128_GCM_SHA256)
    client, server = TlsEngine.client(psk), TlsEngine.server(lambda _: psk)
    connect(client, server)
    client.write(b"last words")
    client.close()
    pump(client, server)
    buffer = bytearray(100)
    assert server.read_into(buffer) == 10  # data before the close_notify comes first
    for _ in range(2):
        with pytest.raises(TlsClosed, match="close_notify"):
            server.read_into(buffer)
    with pytest.raises(TlsError):  # after our own close_notify nothing more is written
        client.write(b"more")


def test_misuse_and_a_corrupted_record() -> None:
    psk = TlsPsk(b"NVMe0R01 nqn.h nqn.s", os.urandom(32), TLS_AES_128_GCM_SHA256)
    client, server = TlsEngine.client(psk), TlsEngine.server(lambda _: psk)
    with pytest.raises(TlsError, match="before the TLS handshake"):
        client.write(b"x")
    with pytest.raises(TlsError, match="before the TLS handshake"):
        client.read_into(bytearray(1))
    assert server.bytes_to_send() == b"" and not server.handshake()
    connect(client, server)
    client.write(b"x" * 100)
    record = bytearray(client.bytes_to_send())
    record[20] ^= 1
    server.receive_bytes(record)
    with pytest.raises(TlsError, match=r"bad record mac|decryption failed"):
        server.read_into(bytearray(200))
    with pytest.raises(TlsError):  # sticky
        server.write(b"y")


def test_client_hello_arriving_a_byte_at_a_time() -> None:
    psk = TlsPsk(b"NVMe1R01 nqn.h nqn.s digest=", os.urandom(32), TLS_AES_128_GCM_SHA256)
    client, server = TlsEngine.client(psk), TlsEngine.server(lambda _: psk)
    client.handshake()
    hello = client.bytes_to_send()
    assert scan_client_hello(hello) == (OfferedPsk(psk.identity, 32),)
    for i in range(len(hello)):
        assert scan_client_hello(hello[:i]) is None
        server.receive_bytes(hello[i : i + 1])
        assert server.bytes_to_send() == b"" or i == len(hello) - 1
    connect(client, server)
    assert server.peer_identity == psk.identity


def test_plaintext_icreq_fails_the_handshake() -> None:
    server = TlsEngine.server(lambda _: None)
    icreq = bytes([0, 0, 128, 0, 128, 0, 0, 0]) + bytes(120)
    with pytest.raises(ValueError, match="record type 0"):
        scan_client_hello(icreq)
    server.receive_bytes(icreq)
    with pytest.raises(TlsError, match="TLS handshake failed"):
        server.handshake()


def test_hello_scanner_on_odd_input() -> None:
    with pytest.raises(ValueError, match="not a ClientHello"):
        scan_client_hello(bytes([22, 3, 1, 0, 4, 2, 0, 0, 0]))  # a ServerHello header
    with pytest.raises(ValueError, match="record length 0"):
        scan_client_hello(bytes([22, 3, 1, 0, 0]))
    # A ClientHello without extensions offers no PSK.
    body = bytes([3, 3]) + bytes(32) + b"\x00" + b"\x00\x02\x13\x01" + b"\x01\x00"
    message = bytes([1]) + len(body).to_bytes(3, "big") + body
    assert scan_client_hello(bytes([22, 3, 1]) + len(message).to_bytes(2, "big") + message) == ()
    truncated = (
        bytes([1]) + (len(body) + 7).to_bytes(3, "big") + body + b"\x00\x07\x00\x29\x00\x03\x00"
    )
    with pytest.raises(ValueError, match="truncated"):
        scan_client_hello(bytes([22, 3, 1]) + len(truncated).to_bytes(2, "big") + truncated)


def test_unavailable_without_pyopenssl(monkeypatch: pytest.MonkeyPatch) -> None:
    engine_module._openssl.cache_clear()
    monkeypatch.setitem(sys.modules, "OpenSSL", None)
    try:
        with pytest.raises(TlsUnavailable) as info:
            TlsEngine.server(lambda _: None)
        assert str(info.value).startswith(
            "TLS needs the optional extra: pip install 'nvmeof-emu[tls]' ("
        )
        assert "OpenSSL" in str(info.value) and isinstance(info.value, ImportError)
        monkeypatch.delitem(sys.modules, "OpenSSL")
        monkeypatch.setattr(engine_module, "_NEEDED", (*engine_module._NEEDED, "SSL_frobnicate"))
        engine_module._openssl.cache_clear()
        with pytest.raises(
            TlsUnavailable, match=r"nvmeof-emu\[tls\]' \(pyOpenSSL .* lacks SSL_frobnicate\)"
        ):
            TlsEngine.server(lambda _: None)
    finally:
        engine_module._openssl.cache_clear()


def test_importing_nvmeof_tls_does_not_import_openssl() -> None:
    code = textwrap.dedent(
        """
        import sys
        import nvmeof.tls
        from nvmeof.tls import InterchangeKey, TlsEngine, TlsUnavailable, host_psk
        psk = host_psk(InterchangeKey(1, bytes(32)), "nqn.h", "nqn.s")
        assert not [name for name in sys.modules if name.startswith("OpenSSL")]
        sys.modules["OpenSSL"] = None  # as if the extra were not installed
        try:
            TlsEngine.client(psk)
        except TlsUnavailable as exc:
            print(exc)
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("TLS needs the optional extra: pip install 'nvmeof-emu[tls]' (")


def test_engines_are_freed_by_reference_counting() -> None:
    # The cffi callbacks hold the engine weakly: a target with many connections must not wait
    # for the cycle collector to free each SSL object and its buffers.
    import gc
    import weakref

    psk = TlsPsk(b"NVMe0R01 nqn.h nqn.s", os.urandom(32), TLS_AES_128_GCM_SHA256)
    client, server = TlsEngine.client(psk), TlsEngine.server(lambda _: psk)
    connect(client, server)
    refs = weakref.ref(client), weakref.ref(server)
    gc.disable()
    try:
        del client, server
        assert [ref() for ref in refs] == [None, None]
    finally:
        gc.enable()
