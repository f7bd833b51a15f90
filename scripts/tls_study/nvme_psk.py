"""NVMe/TCP TLS PSK helpers, the libnvme way (study code for docs/TLS.md; not product code).

Mirrors libnvme src/nvme/linux.c (nvme_import_tls_key, nvme_export_tls_key,
derive_retained_key, derive_psk_digest, gen_tls_identity, derive_tls_key and the
*_compat variants that older nvme-cli releases used):

  interchange  "NVMeTLSkey-1:<hh>:<base64(configured PSK || crc32(configured PSK) LE)>:"
               hh = 00 (no transform), 01 (SHA-256), 02 (SHA-384); 32 or 48 byte key
  retained     HKDF-Expand-Label(HKDF-Extract(0, configured), "HostNQN", hostnqn, len)
  digest (v1)  base64(HMAC-<hash>(retained, hostnqn " " subnqn " NVMe-over-Fabrics"))
  identity     v0 "NVMe0R<hh> <hostnqn> <subnqn>"   v1 "NVMe1R<hh> <hostnqn> <subnqn> <digest>"
  TLS PSK      HKDF-Expand-Label(HKDF-Extract(0, retained), "nvme-tls-psk", ctx, len)
               ctx = identity (v0) or "<hh> <digest>" (v1)

Only `cryptography` (already a dependency) is needed here.
"""

from __future__ import annotations

import base64
import hashlib
import hmac as _hmac
import struct
import zlib
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

PREFIX = "NVMeTLSkey-1:"
_HASHES = {1: (hashes.SHA256, hashlib.sha256, 32), 2: (hashes.SHA384, hashlib.sha384, 48)}


@dataclass(frozen=True)
class InterchangeKey:
    hmac: int  # 0 none, 1 SHA-256, 2 SHA-384 (the transform configured -> retained)
    configured: bytes


def parse_interchange(text: str) -> InterchangeKey:
    """nvme_import_tls_key: 'NVMeTLSkey-1:01:<b64>:' -> (hmac, configured PSK); CRC-32 checked."""
    if not text.startswith(PREFIX) or not text.endswith(":"):
        raise ValueError("not an NVMeTLSkey-1 interchange key")
    parts = text[len(PREFIX) : -1].split(":")
    if len(parts) != 2 or len(parts[0]) != 2 or not parts[0].isdigit():
        raise ValueError("malformed NVMeTLSkey-1 key")
    hm = int(parts[0])
    if hm not in (0, 1, 2):
        raise ValueError(f"unknown PSK hash {hm:02d}")
    raw = base64.b64decode(parts[1], validate=True)
    key, crc = raw[:-4], raw[-4:]
    if len(key) not in (32, 48):
        raise ValueError(f"PSK length {len(key)} is not 32 or 48")
    if hm and len(key) != _HASHES[hm][2]:
        raise ValueError(f"PSK length {len(key)} does not fit hash {hm:02d}")
    if struct.unpack("<I", crc)[0] != zlib.crc32(key):
        raise ValueError("PSK CRC-32 mismatch")
    return InterchangeKey(hm, key)


def export_interchange(configured: bytes, hmac: int | None = None) -> str:
    """nvme_export_tls_key: the hash field follows the key length (32 -> 01, 48 -> 02)."""
    if len(configured) not in (32, 48):
        raise ValueError("PSK must be 32 or 48 bytes")
    hm = hmac if hmac is not None else (1 if len(configured) == 32 else 2)
    raw = configured + struct.pack("<I", zlib.crc32(configured))
    return f"{PREFIX}{hm:02d}:{base64.b64encode(raw).decode()}:"


def _hkdf_label(length: int, label: bytes, context: bytes) -> bytes:
    # RFC 8446 7.1 HkdfLabel: uint16 length, opaque label<7..255> = "tls13 " + label, opaque context<0..255>
    full = b"tls13 " + label
    return struct.pack(">H", length) + bytes([len(full)]) + full + bytes([len(context)]) + context


def _extract(hm: int, ikm: bytes) -> bytes:
    _, h, n = _HASHES[hm]
    return _hmac.new(b"\0" * n, ikm, h).digest()  # HKDF-Extract(salt=0^HashLen, ikm)


def _expand(hm: int, prk: bytes, info: bytes, length: int) -> bytes:
    return HKDFExpand(_HASHES[hm][0](), length, info).derive(prk)


def _cipher_for(ik: InterchangeKey) -> int:
    return ik.hmac if ik.hmac else (1 if len(ik.configured) == 32 else 2)


def retained_psk(ik: InterchangeKey, hostnqn: str, compat: bool = False) -> bytes:
    if ik.hmac == 0:
        return ik.configured
    n = len(ik.configured)
    if compat:  # libnvme derive_retained_key_compat: LE length, no length prefixes
        info = struct.pack("<H", n) + b"tls13 HostNQN" + hostnqn.encode()
    else:
        info = _hkdf_label(n, b"HostNQN", hostnqn.encode())
    return _expand(ik.hmac, _extract(ik.hmac, ik.configured), info, n)


def psk_digest(cipher: int, retained: bytes, hostnqn: str, subnqn: str) -> str:
    h = _HASHES[cipher][1]
    mac = _hmac.new(retained, f"{hostnqn} {subnqn} NVMe-over-Fabrics".encode(), h).digest()
    return base64.b64encode(mac).decode()


def identity_and_tls_psk(
    ik: InterchangeKey, hostnqn: str, subnqn: str, version: int = 0, compat: bool = False
) -> tuple[str, bytes]:
    """libnvme derive_nvme_keys: (PSK identity, TLS PSK) as `nvme check-tls-key --insert` files them."""
    n = len(ik.configured)
    cipher = _cipher_for(ik)
    retained = retained_psk(ik, hostnqn, compat)
    if version == 0:
        identity = f"NVMe0R{cipher:02d} {hostnqn} {subnqn}"
        ctx = identity
    elif version == 1:
        digest = psk_digest(cipher, retained, hostnqn, subnqn)
        identity = f"NVMe1R{cipher:02d} {hostnqn} {subnqn} {digest}"
        ctx = f"{cipher:02d} {digest}"
    else:
        raise ValueError("identity version must be 0 or 1")
    if compat:  # libnvme derive_tls_key_compat
        info = struct.pack("<H", n) + b"tls13 nvme-tls-psk" + ctx.encode()
    else:
        info = _hkdf_label(n, b"nvme-tls-psk", ctx.encode())
    return identity, _expand(cipher, _extract(cipher, retained), info, n)
