"""A sans-IO TLS 1.3 external-PSK engine over pyOpenSSL memory BIOs (docs/TLS.md section 2).

The caller moves bytes: :meth:`TlsEngine.receive_bytes` takes ciphertext from the peer,
:meth:`TlsEngine.bytes_to_send` gives the ciphertext to put on the wire; plaintext goes through
:meth:`TlsEngine.write` and :meth:`TlsEngine.read_into`. No sockets, no clocks.

pyOpenSSL is the optional extra ``tls`` and is imported only when an engine is made. It has no
PSK API: the TLS 1.3 *session* PSK callbacks (``SSL_CTX_set_psk_use_session_callback``,
``SSL_CTX_set_psk_find_session_callback``; no 256-byte identity limit, SHA-384 suites too) and
the ``SSL_SESSION`` setters come from cryptography's bindings, on pyOpenSSL's private
``Context._context`` / ``Connection._ssl`` / ``_into_ssl`` / ``_from_ssl``. All of that is
checked once, and a missing piece raises :class:`TlsUnavailable` naming it.

Measured with cryptography 50.0.2 (OpenSSL 4.0.3) and pyOpenSSL 26.4.0:

* OpenSSL's server chooses the suite before it asks for the PSK and drops a PSK of another
  hash. A tlshd 1.0.0 client (48-byte R02 key, SHA-256 binder, AES-256-GCM offered first) then
  fails ("bad extension"), unless the suite list holds SHA-256 suites only. The server engine
  therefore reads the ClientHello first (:mod:`nvmeof.tls.hello`), looks the identity up and
  allows only the suites of that PSK's hash: such a client gets TLS_CHACHA20_POLY1305_SHA256 or
  TLS_AES_128_GCM_SHA256 (its preference), an RFC client with a SHA-384 PSK gets AES-256-GCM.
  The binder's length tells which hash the client used, so by default a 48-byte PSK follows it
  (``r02_any_suite``): one target serves both kinds of host with the same key.
* The server sends one NewSessionTicket after the handshake (OpenSSL sends one after a PSK
  handshake; ``SSL_CTX_set_num_tickets`` is not in the bindings). OP_NO_TICKET makes it a small
  stateful one; tlshd took it without trouble in the study's kernel-host run.
"""

from __future__ import annotations

import dataclasses
import functools
import weakref
from collections.abc import Callable
from typing import Any

from nvmeof.tls.hello import OfferedPsk, scan_client_hello
from nvmeof.tls.psk import TLS_AES_128_GCM_SHA256, TLS_AES_256_GCM_SHA384, TlsPsk

EXTRA = "TLS needs the optional extra: pip install 'nvmeof-emu[tls]'"
TLS_CHACHA20_POLY1305_SHA256 = "TLS_CHACHA20_POLY1305_SHA256"
_SUITE_ID = {
    TLS_AES_128_GCM_SHA256: b"\x13\x01",
    TLS_AES_256_GCM_SHA384: b"\x13\x02",
    TLS_CHACHA20_POLY1305_SHA256: b"\x13\x03",
}
_HASH_LENGTH = {TLS_AES_128_GCM_SHA256: 32, TLS_AES_256_GCM_SHA384: 48}
_SUITE_OF_BINDER = {length: suite for suite, length in _HASH_LENGTH.items()}
#: Server suites by the hash length of the PSK found in the ClientHello; None = no PSK known.
_SERVER_SUITES = {
    32: f"{TLS_AES_128_GCM_SHA256}:{TLS_CHACHA20_POLY1305_SHA256}",
    48: TLS_AES_256_GCM_SHA384,
    None: f"{TLS_AES_256_GCM_SHA384}:{TLS_CHACHA20_POLY1305_SHA256}:{TLS_AES_128_GCM_SHA256}",
}
_NEEDED = (
    "SSL_CTX_set_psk_use_session_callback", "SSL_CTX_set_psk_find_session_callback",
    "Cryptography_SSL_SESSION_new", "SSL_SESSION_set1_master_key", "SSL_SESSION_set_cipher",
    "SSL_SESSION_set_protocol_version", "SSL_SESSION_free", "SSL_CIPHER_find",
    "SSL_CTX_set_ciphersuites", "SSL_do_handshake", "SSL_read", "SSL_write", "SSL_shutdown",
    "SSL_get_error", "BIO_read", "BIO_write", "ERR_get_error", "ERR_clear_error",
    "ERR_reason_error_string", "TLS1_3_VERSION",
)  # fmt: skip
_USE_SESSION = "int (*)(SSL *, const EVP_MD *, const unsigned char **, size_t *, SSL_SESSION **)"
_FIND_SESSION = "int (*)(SSL *, const unsigned char *, size_t, SSL_SESSION **)"
#: One BIO_read takes the ciphertext of a 128 KiB write (8 records of 16 KiB + 22 bytes).
_SCRATCH = (1 << 17) + (1 << 12)
_INT_MAX = (1 << 31) - 1

Lookup = Callable[[bytes], TlsPsk | None]


class TlsUnavailable(ImportError):
    """pyOpenSSL (the ``tls`` extra) is missing, or lacks what the engine needs."""


class TlsError(Exception):
    """The handshake failed, the peer sent an alert, or a record did not decrypt."""


class TlsClosed(TlsError):
    """The peer sent close_notify: no more data will come."""


class _OpenSSL:
    def __init__(self, ssl: Any, lib: Any, ffi: Any) -> None:
        self.SSL, self.lib, self.ffi = ssl, lib, ffi


@functools.cache
def _openssl() -> _OpenSSL:
    try:
        import cryptography
        import OpenSSL
        from cryptography.hazmat.bindings.openssl.binding import Binding
        from OpenSSL import SSL
    except ImportError as exc:
        raise TlsUnavailable(f"{EXTRA} ({exc})") from exc
    binding = Binding()
    lib = binding.lib
    missing = [name for name in _NEEDED if not hasattr(lib, name)]
    if not getattr(lib, "Cryptography_HAS_PSK_TLSv1_3", 0):
        missing.append("Cryptography_HAS_PSK_TLSv1_3")
    context = SSL.Context(SSL.TLS_METHOD)
    probe = SSL.Connection(context, None)
    missing += [f"Context.{a}" for a in ("_context",) if not hasattr(context, a)]
    missing += [f"Connection.{a}" for a in ("_ssl", "_into_ssl", "_from_ssl")
                if not hasattr(probe, a)]  # fmt: skip
    if missing:
        raise TlsUnavailable(
            f"{EXTRA} (pyOpenSSL {OpenSSL.__version__} with cryptography "
            f"{cryptography.__version__} lacks {', '.join(missing)})"
        )
    return _OpenSSL(SSL, lib, binding.ffi)


class TlsEngine:
    """One TLS 1.3 PSK connection, client or server; make it with :meth:`client` or
    :meth:`server`. Not re-entrant: drive it from one task at a time (every method returns
    without waiting, so a Trio task never holds it across an ``await``)."""

    def __init__(self, psk: TlsPsk | None, lookup: Lookup | None) -> None:
        self._o = _openssl()
        self._psk, self._lookup = psk, lookup
        self._conn: Any = None
        self._keep: list[Any] = []  # cffi callbacks and buffers OpenSSL points at
        self._hello = bytearray()  # server: ciphertext held until the ClientHello is read
        self._found: dict[bytes, TlsPsk | BaseException | None] = {}
        self._refused: list[bytes] = []
        self._identity: bytes | None = None
        self._mismatch = ""
        self._r02_any_suite = False
        self._callback_error: BaseException | None = None
        self._error: TlsError | None = None
        self._done = False
        self._scratch: Any = None

    # --- construction ------------------------------------------------------------------

    @classmethod
    def client(cls, psk: TlsPsk, *, suites: tuple[str, ...] | None = None) -> TlsEngine:
        """A host offering ``psk``. ``suites``: what the ClientHello offers (default only
        ``psk.cipher``); the tests use it to act like a tlshd 1.0.0 client."""
        engine = cls(psk, None)
        o = engine._o
        identity = o.ffi.new("unsigned char[]", psk.identity)
        ref = weakref.ref(engine)  # no cycle engine -> callback -> engine: refcounting frees it

        def use_session(ssl: Any, md: Any, id_out: Any, idlen_out: Any, sess_out: Any) -> int:
            this = ref()
            if this is None:
                return 0
            try:  # nothing may escape a cffi callback: keep it, fail the handshake
                session = this._session(ssl, psk)
                if session == o.ffi.NULL:
                    return 0
                id_out[0], idlen_out[0], sess_out[0] = identity, len(psk.identity), session
                return 1
            except BaseException as exc:
                this._callback_error = exc
                return 0

        callback = o.ffi.callback(_USE_SESSION, use_session)
        context = engine._context(":".join(suites) if suites else psk.cipher)
        o.lib.SSL_CTX_set_psk_use_session_callback(context._context, callback)
        engine._keep += [callback, identity, context]
        engine._conn = o.SSL.Connection(context, None)
        engine._conn.set_connect_state()
        return engine

    @classmethod
    def server(cls, lookup: Lookup, *, r02_any_suite: bool = True) -> TlsEngine:
        """A target: ``lookup(identity)`` gives the PSK for a client's identity, or None to
        refuse it. Exceptions from it fail the handshake with a :class:`TlsError` chained to
        them. The connection is made once the ClientHello is in (see the module docstring).

        ``r02_any_suite``: a 48-byte (R02) PSK is used with the hash the client's binder was
        computed with: SHA-384 from a host that follows TP 8011, SHA-256 from a tlshd 1.0.0
        host. A target cannot tell the two kinds of host apart before the ClientHello, so this is
        the default; ``lookup``'s suite then only matters with False.
        """
        engine = cls(None, lookup)
        engine._r02_any_suite = r02_any_suite
        return engine

    def _context(self, suites: str) -> Any:
        o = self._o
        context = o.SSL.Context(o.SSL.TLS_METHOD)
        context.set_min_proto_version(o.SSL.TLS1_3_VERSION)
        context.set_max_proto_version(o.SSL.TLS1_3_VERSION)
        context.set_options(o.SSL.OP_NO_TICKET)  # no resumption: the peers never use it
        context.set_session_cache_mode(o.SSL.SESS_CACHE_OFF)
        if o.lib.SSL_CTX_set_ciphersuites(context._context, suites.encode()) != 1:
            raise TlsError(f"OpenSSL refuses the suites {suites}: {self._reasons()}")
        return context

    def _session(self, ssl: Any, psk: TlsPsk) -> Any:
        """An SSL_SESSION holding the external PSK (OpenSSL takes ownership), or NULL."""
        o = self._o
        session = o.lib.Cryptography_SSL_SESSION_new()
        if session == o.ffi.NULL:
            return o.ffi.NULL
        cipher = o.lib.SSL_CIPHER_find(ssl, _SUITE_ID[psk.cipher])
        if not (
            cipher != o.ffi.NULL
            and o.lib.SSL_SESSION_set1_master_key(session, psk.key, len(psk.key))
            and o.lib.SSL_SESSION_set_cipher(session, cipher)
            and o.lib.SSL_SESSION_set_protocol_version(session, o.lib.TLS1_3_VERSION)
        ):
            o.lib.SSL_SESSION_free(session)
            return o.ffi.NULL
        return session

    def _find(self, identity: bytes) -> TlsPsk | BaseException | None:
        """The lookup's answer for an identity, asked once (the ClientHello scan and OpenSSL's
        callback both want it)."""
        if identity not in self._found:
            assert self._lookup is not None
            try:
                found: TlsPsk | BaseException | None = self._lookup(identity)
                if found is not None and not isinstance(found, TlsPsk):
                    raise TypeError(f"PSK lookup returned {type(found).__name__}, not TlsPsk")
            except Exception as exc:
                found = exc
                self._callback_error = exc
            self._found[identity] = found
        return self._found[identity]

    def _start_server(self, offered: tuple[OfferedPsk, ...]) -> None:
        o = self._o
        hash_length = None
        for offer in offered:
            psk = self._find(offer.identity)
            if isinstance(psk, TlsPsk):
                suite = _SUITE_OF_BINDER.get(offer.binder_length, psk.cipher)
                if self._r02_any_suite and len(psk.key) == 48 and suite != psk.cipher:
                    psk = self._found[offer.identity] = dataclasses.replace(psk, cipher=suite)
                hash_length = _HASH_LENGTH[psk.cipher]
                if offer.binder_length != hash_length:
                    hint = " (see r02_sha256)" if len(psk.key) == 48 else ""
                    self._mismatch = (
                        f"the client's PSK binder is {offer.binder_length} bytes but its PSK is "
                        f"set up for {psk.cipher}{hint}"
                    )
                break

        ref = weakref.ref(self)  # no cycle engine -> callback -> engine: refcounting frees it

        def find_session(ssl: Any, identity: Any, length: int, sess_out: Any) -> int:
            this = ref()
            if this is None:
                return 0
            try:  # nothing may escape a cffi callback: keep it, fail the handshake
                name = bytes(o.ffi.buffer(identity, length))
                psk = this._find(name)
                if isinstance(psk, BaseException):
                    return 0
                if psk is None:
                    this._refused.append(name)
                    sess_out[0] = o.ffi.NULL  # no PSK: without a certificate the handshake fails
                    return 1
                session = this._session(ssl, psk)
                if session == o.ffi.NULL:
                    return 0
                this._identity = name
                sess_out[0] = session
                return 1
            except BaseException as exc:
                this._callback_error = exc
                return 0

        callback = o.ffi.callback(_FIND_SESSION, find_session)
        context = self._context(_SERVER_SUITES[hash_length])
        o.lib.SSL_CTX_set_psk_find_session_callback(context._context, callback)
        self._keep += [callback, context]
        self._conn = o.SSL.Connection(context, None)
        self._conn.set_accept_state()

    # --- bytes in and out ----------------------------------------------------------------

    def receive_bytes(self, data: bytes | bytearray | memoryview) -> None:
        """Ciphertext from the peer."""
        if not data:
            return
        if self._conn is None:  # server before the ClientHello is complete
            self._hello += data
            try:
                offered = scan_client_hello(self._hello)
            except ValueError:
                offered = ()  # not a ClientHello we can read: OpenSSL gives the reason
            if offered is None:
                return
            self._start_server(offered)
            data, self._hello = self._hello, bytearray()
        o = self._o
        with o.ffi.from_buffer(data) as pointer:
            size = len(pointer)
            written = o.lib.BIO_write(self._conn._into_ssl, pointer, size)
        if written != size:  # a memory BIO grows: this is out of memory
            raise TlsError(f"BIO_write took {written} of {size} bytes")

    def bytes_to_send(self) -> bytes:
        """Ciphertext waiting for the wire, all of it; b"" if none."""
        if self._conn is None:
            return b""
        o = self._o
        if self._scratch is None:
            self._scratch = o.ffi.new("char[]", _SCRATCH)
        chunks = []
        while True:
            n = o.lib.BIO_read(self._conn._from_ssl, self._scratch, _SCRATCH)
            if n <= 0:
                break
            chunks.append(o.ffi.buffer(self._scratch, n)[:])
            if n < _SCRATCH:
                break
        return b"".join(chunks)  # one chunk: that very object, no copy

    # --- the connection ------------------------------------------------------------------

    def handshake(self) -> bool:
        """Advance the handshake with what has been received; True once it is complete."""
        if self._done:
            return True
        if self._error is not None:
            raise self._error
        if self._conn is None:
            return False
        o = self._o
        ssl = self._conn._ssl
        o.lib.ERR_clear_error()
        result = o.lib.SSL_do_handshake(ssl)
        if result == 1:
            self._done = True
            if self._psk is not None:
                self._identity = self._psk.identity
            return True
        if o.lib.SSL_get_error(ssl, result) == o.lib.SSL_ERROR_WANT_READ:
            return False
        raise self._fail(self._reasons())

    def read_into(self, buffer: memoryview | bytearray) -> int:
        """Decrypt into ``buffer`` as much as the received ciphertext holds; 0 = send more
        ciphertext first. Raises :class:`TlsClosed` once the peer's close_notify is reached."""
        if self._error is not None:
            raise self._error
        if not self._done:
            raise TlsError("read before the TLS handshake completed")
        view = memoryview(buffer).cast("B")
        size, total = len(view), 0
        if not size:
            return 0
        o = self._o
        ssl = self._conn._ssl
        o.lib.ERR_clear_error()
        with o.ffi.from_buffer(view, require_writable=True) as pointer:
            while total < size:  # SSL_read gives one record at a time: take all there are
                n = o.lib.SSL_read(ssl, pointer + total, min(size - total, _INT_MAX))
                if n > 0:
                    total += n
                    continue
                error = o.lib.SSL_get_error(ssl, n)
                if error == o.lib.SSL_ERROR_WANT_READ or total:
                    break  # an error after data repeats on the next call
                if error == o.lib.SSL_ERROR_ZERO_RETURN:
                    raise TlsClosed("the peer sent close_notify")
                raise self._fail(self._reasons())
        return total

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Encrypt ``data``; the records wait in :meth:`bytes_to_send`."""
        if self._error is not None:
            raise self._error
        if not self._done:
            raise TlsError("write before the TLS handshake completed")
        o = self._o
        ssl = self._conn._ssl
        with o.ffi.from_buffer(memoryview(data).cast("B")) as pointer:
            size, done = len(pointer), 0
            while done < size:  # a memory BIO never blocks: each call writes all it is given
                o.lib.ERR_clear_error()
                n = o.lib.SSL_write(ssl, pointer + done, min(size - done, 1 << 30))
                if n <= 0:
                    raise self._fail(self._reasons())
                done += n

    def close(self) -> None:
        """Queue a close_notify (best effort: nothing is raised)."""
        if self._conn is None or self._error is not None or not self._done:
            return
        self._o.lib.SSL_shutdown(self._conn._ssl)
        self._o.lib.ERR_clear_error()

    @property
    def peer_identity(self) -> bytes | None:
        """The PSK identity the handshake used (on a server: the one the client sent)."""
        return self._identity if self._done else None

    @property
    def cipher(self) -> str | None:
        return str(self._conn.get_cipher_name()) if self._done else None

    @property
    def version(self) -> str | None:
        return str(self._conn.get_protocol_version_name()) if self._done else None

    # --- errors ----------------------------------------------------------------------------

    def _reasons(self) -> str:
        o = self._o
        reasons = []
        while code := o.lib.ERR_get_error():
            text = o.lib.ERR_reason_error_string(code)
            reasons.append(o.ffi.string(text).decode() if text != o.ffi.NULL else hex(code))
        return "; ".join(dict.fromkeys(reasons)) or "no reason from OpenSSL"

    def _fail(self, reasons: str) -> TlsError:
        """The sticky error for a failed connection, saying why in our words first."""
        cause = self._callback_error
        if cause is not None:
            error = TlsError(f"PSK lookup failed: {cause!r} (OpenSSL: {reasons})")
        elif self._mismatch and not self._done:
            error = TlsError(f"{self._mismatch} (OpenSSL: {reasons})")
        elif self._refused and self._identity is None:
            error = TlsError(f"unknown PSK identity {self._refused[0]!r} (OpenSSL: {reasons})")
        elif self._done:
            error = TlsError(reasons)
        else:
            error = TlsError(f"TLS handshake failed: {reasons}{_hint(reasons)}")
        error.__cause__ = cause
        self._error = error
        return error


def _hint(reasons: str) -> str:
    """What an alert from the peer most likely means for an NVMe PSK handshake."""
    if "alert decrypt error" in reasons:
        return " (the peer could not verify our PSK binder: another key or derivation?)"
    if "alert handshake failure" in reasons:
        return " (the peer does not know our PSK identity?)"
    if "alert illegal parameter" in reasons or "alert decode error" in reasons:
        return " (the peer uses our PSK with another hash: see r02_sha256)"
    return ""
