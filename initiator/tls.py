"""TLS 1.3 with a pre-shared key on the host's queues (NVMe/TCP secure channel, TP 8011).

As the Linux host with tlshd does it (docs/TLS.md): every queue, admin and I/O, on first
connect and on every reconnect, runs its own TLS handshake on its own TCP connection before
the ICReq, with the PSK identity for (host NQN, subsystem NQN) (``NVMe0R01 <hostnqn>
<subnqn>``, the discovery NQN for a discovery controller). The key is nvme-cli's interchange
text (``NVMeTLSkey-1:01:...:``, ``nvme gen-tls-key``); there is no kernel keyring here, so it
is given as is (``--tls-key``) and derived here as ``nvme check-tls-key --insert`` would file
it: ``compat`` (nvme-cli 2.13 / libnvme 1.13, what Debian 13 ships) or ``rfc8446`` (newer).

A handshake the target refuses (a TLS alert, or the connection closed in the middle of it,
which is how tlshd refuses a wrong key) raises a permanent :class:`TlsHandshakeError`: a
session does not reconnect after it, as after a refused DH-HMAC-CHAP key (the same key would
be refused again). A handshake that times out is retried like any lost connection.

pyOpenSSL (the ``[tls]`` extra) is imported only when a queue does a handshake.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import trio

from nvmeof.errors import NvmeofError
from nvmeof.tls.psk import PSK_DERIVATIONS, InterchangeKey, TlsPsk, host_psk

if TYPE_CHECKING:
    from tlsstream import TlsStream

#: What to try when a handshake is refused (the usual reasons, both sides' settings).
REFUSED_HINT = "wrong key? --tls-psk-derivation compat|rfc8446?"
#: The hint for a plaintext ICReq the target closed.
PLAIN_REFUSED_HINT = "the port may require TLS (--tls)"


class TlsHandshakeError(NvmeofError):
    """A queue's TLS handshake failed. ``permanent``: the target refused it (reconnecting
    with the same key cannot help); False for a timeout."""

    def __init__(self, message: str, *, permanent: bool = True) -> None:
        super().__init__(message)
        self.permanent = permanent


@dataclass
class TlsCounts:
    """Per controller, kept across reconnects (a session's): handshakes by outcome."""

    ok: int = 0
    failed: int = 0


def parse_tls_key(text: str, flag: str = "--tls-key") -> InterchangeKey:
    """``--tls-key``, checked: a one-line ValueError naming the option (never the key)."""
    try:
        return InterchangeKey.parse(text)
    except ValueError as exc:
        raise ValueError(f"{flag}: {exc}") from None


def check_tls_options(key: str, identity_version: int, derivation: str) -> None:
    """The ``tls_*`` options of :class:`~initiator.controller.ControllerOptions`."""
    if identity_version not in (0, 1):
        raise ValueError(f"--tls-identity-version {identity_version}: not 0 or 1")
    if derivation not in PSK_DERIVATIONS:
        raise ValueError(f"--tls-psk-derivation {derivation!r}: not {' or '.join(PSK_DERIVATIONS)}")
    if key:
        parse_tls_key(key)


def queue_psk(key: str, hostnqn: str, subnqn: str, *, identity_version: int = 0,
              derivation: str = "compat", r02_sha256: bool = True) -> TlsPsk:  # fmt: skip
    """The TLS PSK and identity every queue of the controller (hostnqn, subnqn) uses."""
    parsed = parse_tls_key(key)
    try:
        return host_psk(parsed, hostnqn, subnqn, identity_version=identity_version,
                        derivation=derivation, r02_sha256=r02_sha256)  # fmt: skip
    except ValueError as exc:
        raise ValueError(f"no TLS PSK for {hostnqn} -> {subnqn}: {exc}") from None


async def client_handshake(
    stream: trio.SocketStream,
    psk: TlsPsk,
    where: str,
    timeout: float,  # noqa: ASYNC109 - the queue's connect timeout bounds the handshake too
) -> TlsStream:
    """Run the TLS handshake on a fresh TCP ``stream`` (closed on failure).

    Raises :class:`TlsHandshakeError`, or :class:`~nvmeof.tls.TlsUnavailable` (an
    ImportError) without the ``tls`` extra."""
    from tlsstream import client_handshake as handshake

    try:
        with trio.fail_after(timeout):
            return await handshake(stream, psk)
    except trio.TooSlowError:
        raise TlsHandshakeError(
            f"TLS handshake with {where} failed: no answer within {timeout:g} s", permanent=False
        ) from None
    except (trio.BrokenResourceError, OSError) as exc:
        raise TlsHandshakeError(f"TLS handshake with {where} failed: {_why(exc)}") from exc


def _why(exc: BaseException) -> str:
    """The failure in the CLI's words: the engine's reason, and what to try."""
    why = (str(exc) or type(exc).__name__).removeprefix("TLS handshake failed: ")
    if "r02_sha256" in why:  # the engine's hint names the option; the user has a flag
        return f"{why.split(' (')[0]} (the peer uses the 02 key under another hash: try with or without --tls-sha384-r02)"
    if why.endswith(")"):  # the engine said what the alert most likely means
        return why
    if "wrong version number" in why or "packet length" in why or "record layer" in why:
        return f"{why} (the port may not do TLS)"
    return f"{why} ({REFUSED_HINT})"


def gen_tls_key(hmac_id: int = 1, *, secret_hex: str | None = None,
                random_bytes: Callable[[int], bytes] = os.urandom) -> str:  # fmt: skip
    """``nvme gen-tls-key``: an ``NVMeTLSkey-1:`` key; one-line ValueError on bad input.

    ``hmac_id`` 1 (SHA-256, a 32-byte key) or 2 (SHA-384, 48 bytes); ``secret_hex`` gives the
    configured PSK instead of random bytes.
    """
    if hmac_id not in (1, 2):
        raise ValueError(f"--hmac {hmac_id}: not 1 (SHA-256) or 2 (SHA-384)")
    length = 32 if hmac_id == 1 else 48
    if secret_hex is None:
        key = random_bytes(length)
    else:
        try:
            key = bytes.fromhex(secret_hex)
        except ValueError:
            raise ValueError("--secret: not a hexadecimal string") from None
        if len(key) != length:
            raise ValueError(f"--secret is {len(key)} bytes, --hmac {hmac_id} wants {length}")
    return InterchangeKey.generate(hmac_id, key).export()


_HASH_NAMES = {0: "none", 1: "SHA-256", 2: "SHA-384"}


def describe_tls_key(key: str, hostnqn: str, subnqn: str, *, identity_version: int = 0,
                     derivation: str = "compat", r02_sha256: bool = True) -> str:  # fmt: skip
    """``nvme check-tls-key`` without ``--insert``: whether the key parses, and the PSK
    identity (and suite) a host connecting with it offers. The key is never printed."""
    check_tls_options("", identity_version, derivation)
    parsed = parse_tls_key(key, "--key")
    try:
        psk = host_psk(parsed, hostnqn, subnqn, identity_version=identity_version,
                       derivation=derivation, r02_sha256=r02_sha256)  # fmt: skip
    except ValueError as exc:
        raise ValueError(f"--key: {exc}") from None
    return (
        f"Key is valid (hash {parsed.hmac:02d} {_HASH_NAMES[parsed.hmac]}, "
        f"{len(parsed.configured)}-byte PSK, CRC-32 ok)\n"
        f"identity: {psk.identity.decode()}\n"
        f"suite: {psk.cipher} ({derivation} derivation)"
    )
