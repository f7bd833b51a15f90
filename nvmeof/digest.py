"""CRC32C header and data digests: ``~crc32c(~0, buf)``, stored little-endian.

See docs/PROTOCOL.md §0.1.
"""

from __future__ import annotations

import crc32c as _crc32c

_crc = _crc32c.crc32c


def crc32c(data: bytes | bytearray | memoryview, value: int = 0) -> int:
    """CRC-32C (Castagnoli) of ``data``, continuing from ``value`` (0 starts a new digest)."""
    return int(_crc(data, value))


def digest_bytes(data: bytes | bytearray | memoryview) -> bytes:
    """The 4 digest bytes as they appear on the wire."""
    return int(_crc(data)).to_bytes(4, "little")
