"""Read the PSK identities out of a TLS 1.3 ClientHello before OpenSSL sees it (sans-IO).

Why: OpenSSL's server picks the cipher suite *before* it asks the find-session callback for the
PSK, and then drops a PSK whose hash differs from the suite's (``tls_parse_ctos_psk``). A
tlshd 1.0.0 client offers AES-256-GCM-SHA384 first even with a 48-byte key whose binder it
computes with SHA-256 (docs/TLS.md section 3, last row): with every suite allowed, the handshake
fails. The bindings have neither ``SSL_CTX_set_client_hello_cb`` nor ``SSL_set_ciphersuites``,
so the engine reads the (cleartext) ClientHello itself, looks the identity up and builds the
connection with the suites of the PSK's hash only. The binder length tells which hash the
client used, so a mismatch gets a clear error instead of OpenSSL's "bad extension".
"""

from __future__ import annotations

from dataclasses import dataclass

_HANDSHAKE = 22
_CLIENT_HELLO = 1
_PRE_SHARED_KEY = 41
#: A ClientHello is a few hundred bytes to a few KiB; anything longer is not worth buffering.
MAX_HELLO = 1 << 16


@dataclass(frozen=True)
class OfferedPsk:
    identity: bytes
    binder_length: int  # the hash length the client computed the binder with (32 or 48)


class _Reader:
    def __init__(self, data: bytes | bytearray) -> None:
        self.data, self.pos = data, 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise ValueError("truncated ClientHello")
        out = bytes(self.data[self.pos : self.pos + n])
        self.pos += n
        return out

    def number(self, n: int) -> int:
        return int.from_bytes(self.take(n), "big")

    def vector(self, length_bytes: int) -> _Reader:
        return _Reader(self.take(self.number(length_bytes)))

    @property
    def left(self) -> int:
        return len(self.data) - self.pos


def scan_client_hello(data: bytes | bytearray) -> tuple[OfferedPsk, ...] | None:
    """The PSKs a ClientHello at the start of ``data`` offers, in order (RFC 8446 4.2.11).

    None: not all of the ClientHello has arrived yet. ValueError: this is not a ClientHello
    that can be read (a plaintext PDU, garbage, an oversized message); the caller then lets
    OpenSSL fail it with its own reason. The handshake message may span several records.
    """
    body = bytearray()
    pos = 0
    while True:
        if len(data) - pos < 5:
            return None
        if data[pos] != _HANDSHAKE:
            raise ValueError(f"record type {data[pos]} is not a TLS handshake record")
        length = int.from_bytes(data[pos + 3 : pos + 5], "big")
        if not 0 < length <= (1 << 14):
            raise ValueError(f"TLS record length {length}")
        if len(data) - pos - 5 < length:
            return None
        body += data[pos + 5 : pos + 5 + length]
        pos += 5 + length
        if len(body) < 4:
            continue
        if body[0] != _CLIENT_HELLO:
            raise ValueError(f"handshake message type {body[0]} is not a ClientHello")
        size = int.from_bytes(body[1:4], "big")
        if size > MAX_HELLO:
            raise ValueError(f"ClientHello of {size} bytes")
        if len(body) >= 4 + size:
            return _offered(_Reader(body[4 : 4 + size]))


def _offered(hello: _Reader) -> tuple[OfferedPsk, ...]:
    hello.take(2 + 32)  # legacy_version, random
    hello.vector(1)  # legacy_session_id
    hello.vector(2)  # cipher_suites
    hello.vector(1)  # legacy_compression_methods
    if not hello.left:
        return ()
    extensions = hello.vector(2)
    while extensions.left:
        kind = extensions.number(2)
        payload = extensions.vector(2)
        if kind != _PRE_SHARED_KEY:
            continue
        identities, names = payload.vector(2), []
        while identities.left:
            names.append(_identity(identities))
        binders, lengths = payload.vector(2), []
        while binders.left:
            lengths.append(len(binders.vector(1).data))
        if len(names) != len(lengths):
            raise ValueError("pre_shared_key: identities and binders differ in number")
        return tuple(OfferedPsk(n, b) for n, b in zip(names, lengths, strict=True))
    return ()


def _identity(identities: _Reader) -> bytes:
    name = identities.vector(2)
    identities.take(4)  # obfuscated_ticket_age
    return bytes(name.data)
