"""NVMe/TCP TLS 1.3 with an external PSK (TP 8011), sans-IO; docs/TLS.md.

* :mod:`nvmeof.tls.psk` - ``NVMeTLSkey-1`` keys, PSK identities and the TLS PSK derivation
  (libnvme's RFC 8446 and "compat" variants). Needs only ``cryptography``.
"""

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
    "TlsPsk",
    "host_psk",
    "target_psk",
]
