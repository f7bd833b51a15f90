"""The secure channel of a TLS port: NVMe/TCP over TLS 1.3 with a pre-shared key (TP 8011).

Linux's target hands a new socket to ``tlshd`` before any PDU is read; we do the same with our
own TLS engine (:mod:`nvmeof.tls`, :mod:`tlsstream`), so once the handshake is done the queue is
served exactly as on a plaintext port, PDU for PDU (docs/TLS.md):

* ``tls = "required"``: every connection starts with the handshake. A host that sends a
  plaintext ICReq instead is closed without an answer, as nvmet's tlshd closes it (we look at
  the first byte, so the log can say why).
* ``tls = "allowed"``: the first byte decides (``nvmet_tcp_try_peek_pdu``): a TLS handshake
  record (0x16) starts the handshake, anything else is served in the clear.

The PSK for an identity ``NVMe0R<hh> <hostnqn> <subnqn>`` (or ``NVMe1R..`` with its digest) is
derived from the ``tls_key`` of that host in the configuration, looked up at handshake time so
that a key set live (``ctl host set-key --tls-key``) applies to the next connection.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import trio

from nvmeof.tls.engine import TlsError, TlsUnavailable
from nvmeof.tls.psk import InterchangeKey, PskIdentity, TlsPsk, target_psk
from target.port import Port
from target.state import TargetState
from tlsstream import TlsStream, peek_is_tls, server_handshake

log = logging.getLogger("nvmeof.target")

#: Seconds a new connection has for its TLS handshake (tlshd's default handshake timeout is
#: the kernel's tls_handshake_timeout, 10 s).
TLS_HANDSHAKE_TIMEOUT = 10.0


def psk_lookup(state: TargetState) -> Callable[[bytes], TlsPsk | None]:
    """The server's key lookup: identity -> the TLS PSK of that host's configured key."""

    def lookup(raw: bytes) -> TlsPsk | None:
        identity = PskIdentity.parse(raw)
        if identity is None:
            return None
        host = state.host_config(identity.hostnqn)
        if host is None or host.tls_key is None:
            return None
        return target_psk(identity, InterchangeKey.parse(host.tls_key),
                          derivation=host.tls_psk_derivation)  # fmt: skip

    return lookup


async def secure_channel(state: TargetState, port: Port,
                         stream: trio.SocketStream) -> trio.SocketStream | TlsStream | None:  # fmt: skip
    """The stream to serve NVMe/TCP on for a new connection of a TLS port: ``stream`` itself
    (``allowed`` port, plaintext host), a :class:`TlsStream` once the handshake succeeded, or
    None when the connection was refused and closed (the reason logged once)."""
    peer = _peer(stream)
    results = state.tls_results
    with trio.move_on_after(TLS_HANDSHAKE_TIMEOUT):
        try:
            is_tls = await peek_is_tls(stream)
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError):
            is_tls = None
        if is_tls is None:
            await stream.aclose()
            return None
        if not is_tls and port.tls == "allowed":
            return stream
        if not is_tls:  # nvmet hands it to tlshd, whose handshake fails: closed, no answer
            results["failed"] = results.get("failed", 0) + 1
            log.warning("tls required port=%s peer=%s: the host sent plaintext (an ICReq?), "
                        "not a TLS ClientHello: closed (does it connect with --tls?)", port.id,
                        peer)  # fmt: skip
            await stream.aclose()
            return None
        try:
            secured = await server_handshake(stream, psk_lookup(state))
        except TlsUnavailable as err:
            results["failed"] = results.get("failed", 0) + 1
            log.error("tls port=%s peer=%s: %s", port.id, peer, err)
        except (TlsError, trio.BrokenResourceError, trio.ClosedResourceError, OSError) as err:
            results["failed"] = results.get("failed", 0) + 1
            log.warning("tls handshake failed port=%s peer=%s: %s", port.id, peer,
                        _reason(err))  # fmt: skip
        else:
            results["ok"] = results.get("ok", 0) + 1
            identity = (secured.peer_identity or b"").decode("utf-8", "replace")
            log.info("tls port=%s peer=%s cipher=%s identity=%s", port.id, peer, secured.cipher,
                     identity)  # fmt: skip
            return secured
        await stream.aclose()
        return None
    results["timeout"] = results.get("timeout", 0) + 1
    log.warning("tls handshake timed out port=%s peer=%s after %s s", port.id, peer,
                TLS_HANDSHAKE_TIMEOUT)  # fmt: skip
    await stream.aclose()
    return None


def _peer(stream: trio.SocketStream) -> str:
    try:
        host, port_number = stream.socket.getpeername()[:2]
    except OSError:
        return "?"
    return f"{host}:{port_number}"


def _reason(err: BaseException) -> str:
    """The TLS reason behind a transport error, if it wraps one."""
    while not isinstance(err, TlsError) and err.__cause__ is not None:
        err = err.__cause__
    return str(err) or type(err).__name__
