"""NVMe/TCP TLS 1.3 with an external PSK (TP 8011), sans-IO; docs/TLS.md.

* :mod:`nvmeof.tls.psk` - ``NVMeTLSkey-1`` keys, PSK identities and the TLS PSK derivation
  (libnvme's RFC 8446 and "compat" variants). Needs only ``cryptography``.
* :mod:`nvmeof.tls.hello` - the PSK identities of a ClientHello, read before OpenSSL sees it.
* :mod:`nvmeof.tls.engine` - the TLS engine over pyOpenSSL memory BIOs. pyOpenSSL is the optional
  extra ``tls`` and is imported only when an engine is made, never by importing this package.
"""

from nvmeof.tls.engine import TlsClosed, TlsEngine, TlsError, TlsUnavailable
from nvmeof.tls.psk import (
    PSK_DERIVATIONS,
    InterchangeKey,
    PskIdentity,
    TlsPsk,
    host_psk,
    target_psk,
)

__all__ = [
    "PSK_DERIVATIONS",
    "InterchangeKey",
    "PskIdentity",
    "TlsClosed",
    "TlsEngine",
    "TlsError",
    "TlsPsk",
    "TlsUnavailable",
    "host_psk",
    "target_psk",
]
