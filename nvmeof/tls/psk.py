"""NVMe/TCP TLS PSKs the libnvme way (TP 8011): interchange keys, identities, TLS PSK derivation.

Mirrors libnvme ``src/nvme/linux.c`` (``nvme_import_tls_key``, ``nvme_export_tls_key``,
``derive_retained_key``, ``derive_psk_digest``, ``gen_tls_identity``, ``derive_tls_key`` and the
``*_compat`` variants); docs/TLS.md section 1 has the background:

  interchange  ``NVMeTLSkey-1:<hh>:<base64(configured PSK || crc32(configured PSK) LE)>:``
               hh = 00 (no transform), 01 (SHA-256, 32-byte key), 02 (SHA-384, 48-byte key)
  retained     HKDF-Expand-Label(HKDF-Extract(0, configured), "HostNQN", hostnqn, len); hh 00:
               the configured PSK itself
  digest (v1)  base64(HMAC-<hash>(retained, hostnqn " " subnqn " NVMe-over-Fabrics"))
  identity     v0 ``NVMe0R<hh> <hostnqn> <subnqn>``, v1 ``NVMe1R<hh> <hostnqn> <subnqn> <digest>``
  TLS PSK      HKDF-Expand-Label(HKDF-Extract(0, retained), "nvme-tls-psk", ctx, len)
               ctx = the identity (v0) or ``"<hh> <digest>"`` (v1)

The hash of the last three steps (and the ``<hh>`` of the identity) is the *cipher suite's*:
the key's hh, or for an hh 00 key the one its length implies (libnvme ``default_hmac``: 32 bytes
SHA-256, 48 bytes SHA-384). "compat" is the HKDF-Expand-Label older libnvme computed (length
little-endian, no length bytes before label and context); Debian 13's nvme-cli 2.13 files that
one and Linux 6.12 + tlshd accept only it (measured, docs/TLS.md section 3), so it is the default.

Sans-IO: the caller brings the random bytes of a new key (``os.urandom``).
"""

from __future__ import annotations

import base64
import binascii
import hmac as _hmac
import re
import struct
import zlib
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.hmac import HMAC
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

PSK_DERIVATIONS = ("compat", "rfc8446")
TLS_AES_128_GCM_SHA256 = "TLS_AES_128_GCM_SHA256"
TLS_AES_256_GCM_SHA384 = "TLS_AES_256_GCM_SHA384"
#: The suite a TLS PSK is used under, by the identity's hash id (TP 8011).
SUITE_OF_HASH = {1: TLS_AES_128_GCM_SHA256, 2: TLS_AES_256_GCM_SHA384}

PREFIX = "NVMeTLSkey-1:"
_KEY = re.compile(r"NVMeTLSkey-(\d+):([0-9A-Fa-f]{2}):([A-Za-z0-9+/=]*):")
_HASHES: dict[int, type[hashes.HashAlgorithm]] = {1: hashes.SHA256, 2: hashes.SHA384}
_KEY_LENGTH = {1: 32, 2: 48}
_SEED = b"NVMe-over-Fabrics"
_IDENTITY = re.compile(rb"NVMe([01])R(0[12]) (\S+) (\S+)(?: (\S+))?")
# libnvme's HkdfLabel buffers (HKDF_INFO_LABEL_MAX, HKDF_INFO_CONTEXT_MAX): a longer label or
# context makes it refuse the key (-ENOKEY), and RFC 8446 cannot encode a context > 255 bytes.
_LIBNVME_INFO_MAX = 256


@dataclass(frozen=True)
class InterchangeKey:
    """A configured PSK and the hash (0 none, 1 SHA-256, 2 SHA-384) that turns it into the
    retained PSK; the ``NVMeTLSkey-1`` text of ``nvme gen-tls-key`` / ``check-tls-key``."""

    hmac: int
    configured: bytes = field(repr=False)  # key material stays out of logs

    def __post_init__(self) -> None:
        if self.hmac not in (0, 1, 2):
            raise ValueError(f"NVMeTLSkey-1 hash {self.hmac:02d} is not 00, 01 or 02")
        if len(self.configured) not in (32, 48):
            raise ValueError(f"NVMeTLSkey-1 key is {len(self.configured)} bytes, not 32 or 48")
        if self.hmac and len(self.configured) != _KEY_LENGTH[self.hmac]:
            raise ValueError(
                f"NVMeTLSkey-1 hash {self.hmac:02d} needs a {_KEY_LENGTH[self.hmac]}-byte key, "
                f"not {len(self.configured)}"
            )

    def __repr__(self) -> str:
        return f"InterchangeKey(hmac={self.hmac}, configured=<{len(self.configured)} bytes>)"

    @property
    def suite_hash(self) -> int:
        """The hash id of the identity and of the TLS PSK derivation (libnvme ``default_hmac``
        for an hh 00 key)."""
        return self.hmac or (1 if len(self.configured) == 32 else 2)

    @classmethod
    def parse(cls, text: str) -> InterchangeKey:
        """``nvme_import_tls_key``: every malformed input raises a one-line ValueError.

        Surrounding whitespace is dropped (keys come from files); the trailing ``:`` is required
        as in libnvme, which checks the exact text length. hh is two hex digits there.
        """
        stripped = text.strip()
        if not stripped.startswith("NVMeTLSkey-"):
            raise ValueError("TLS key must start with 'NVMeTLSkey-1:'")
        match = _KEY.fullmatch(stripped)
        if match is None:
            raise ValueError("TLS key must read 'NVMeTLSkey-1:<hh>:<base64>:'")
        if match.group(1) != "1":
            raise ValueError(f"NVMeTLSkey version {match.group(1)} is not 1")
        hmac = int(match.group(2), 16)
        if hmac > 2:
            raise ValueError(f"NVMeTLSkey-1 hash {match.group(2)} is not 00, 01 or 02")
        try:
            blob = base64.b64decode(match.group(3), validate=True)
        except binascii.Error as exc:
            raise ValueError(f"NVMeTLSkey-1 base64 does not decode: {exc}") from None
        if len(blob) - 4 not in (32, 48):
            raise ValueError(f"NVMeTLSkey-1 key decodes to {len(blob)} bytes, not 36 or 52")
        key, crc = blob[:-4], blob[-4:]
        if struct.pack("<I", zlib.crc32(key)) != crc:
            raise ValueError("NVMeTLSkey-1 CRC-32 does not match the key")
        return cls(hmac, key)

    def export(self) -> str:
        """``nvme_export_tls_key_versioned``: the text :meth:`parse` reads back."""
        raw = self.configured + struct.pack("<I", zlib.crc32(self.configured))
        return f"{PREFIX}{self.hmac:02d}:{base64.b64encode(raw).decode()}:"

    @classmethod
    def generate(cls, hmac: int, key: bytes) -> InterchangeKey:
        """``nvme gen-tls-key --hmac=<hmac>`` from the caller's random bytes (``os.urandom``):
        hmac 1 takes 32 bytes, 2 takes 48, 0 (no transform) either."""
        if hmac in _KEY_LENGTH and len(key) != _KEY_LENGTH[hmac]:
            raise ValueError(f"hmac {hmac} needs {_KEY_LENGTH[hmac]} random bytes, not {len(key)}")
        return cls(hmac, bytes(key))


@dataclass(frozen=True)
class TlsPsk:
    """What goes into the TLS 1.3 handshake: the identity on the wire, the external PSK handed
    to OpenSSL and the suite (OpenSSL name) whose hash the PSK is used with."""

    identity: bytes
    key: bytes = field(repr=False)
    cipher: str

    def __post_init__(self) -> None:
        if self.cipher not in (TLS_AES_128_GCM_SHA256, TLS_AES_256_GCM_SHA384):
            raise ValueError(f"TLS PSK suite {self.cipher!r} is not a TLS 1.3 AES-GCM suite")
        if not 1 <= len(self.identity) <= 0xFFFF:  # RFC 8446 PskIdentity.identity<1..2^16-1>
            raise ValueError(f"PSK identity of {len(self.identity)} bytes")
        if not self.key:
            raise ValueError("empty TLS PSK")

    def __repr__(self) -> str:
        return (f"TlsPsk(identity={self.identity!r}, key=<{len(self.key)} bytes>, "
                f"cipher={self.cipher!r})")  # fmt: skip


@dataclass(frozen=True)
class PskIdentity:
    """An ``NVMe0R``/``NVMe1R`` PSK identity as the target reads it from the ClientHello."""

    version: int
    hmac: int  # the suite hash id of the identity's <hh> (1 SHA-256, 2 SHA-384)
    hostnqn: str
    subnqn: str
    digest: str | None  # v1 only

    @classmethod
    def parse(cls, raw: bytes) -> PskIdentity | None:
        """None for anything that is not a retained-PSK identity of version 0 or 1 (generated
        ``NVMe0G`` ones, other TLS users, junk). NQNs hold no spaces, so fields split on them."""
        match = _IDENTITY.fullmatch(raw)
        if match is None:
            return None
        version, hmac, hostnqn, subnqn, digest = match.groups()
        if (version == b"1") != (digest is not None):
            return None
        try:
            return cls(int(version), int(hmac), hostnqn.decode("ascii"), subnqn.decode("ascii"),
                       digest.decode("ascii") if digest is not None else None)  # fmt: skip
        except UnicodeDecodeError:
            return None


def _check_derivation(derivation: str) -> None:
    if derivation not in PSK_DERIVATIONS:
        raise ValueError(f"PSK derivation {derivation!r} is not one of {PSK_DERIVATIONS}")


def _hkdf_info(length: int, label: bytes, context: bytes, derivation: str) -> bytes:
    full = b"tls13 " + label
    if derivation == "compat":  # derive_*_compat: LE length, label and context run together
        if len(context) > _LIBNVME_INFO_MAX:
            raise ValueError(f"HKDF context of {len(context)} bytes: libnvme allows 256")
        return struct.pack("<H", length) + full + context
    # RFC 8446 7.1 HkdfLabel: uint16 length, opaque label<7..255>, opaque context<0..255>
    if len(context) > 255:
        raise ValueError(f"HKDF-Expand-Label context of {len(context)} bytes: at most 255")
    return struct.pack(">H", length) + bytes([len(full)]) + full + bytes([len(context)]) + context


def _extract_expand(hash_id: int, ikm: bytes, info: bytes, length: int) -> bytes:
    algorithm = _HASHES[hash_id]()
    mac = HMAC(bytes(algorithm.digest_size), algorithm)  # HKDF-Extract(salt = 0^HashLen, ikm)
    mac.update(ikm)
    return HKDFExpand(algorithm, length, info).derive(mac.finalize())


def _retained(key: InterchangeKey, hostnqn: str, derivation: str) -> bytes:
    if key.hmac == 0:
        return key.configured
    n = len(key.configured)
    nqn = hostnqn.encode()
    if derivation == "compat" and len(b"tls13 HostNQN" + nqn) > _LIBNVME_INFO_MAX:
        raise ValueError(f"host NQN of {len(nqn)} bytes is too long for the compat derivation")
    return _extract_expand(key.hmac, key.configured, _hkdf_info(n, b"HostNQN", nqn, derivation), n)


def _digest(hash_id: int, retained: bytes, hostnqn: str, subnqn: str) -> str:
    algorithm = _HASHES[hash_id]
    mac = HMAC(retained, algorithm())
    mac.update(f"{hostnqn} {subnqn} ".encode() + _SEED)
    return base64.b64encode(mac.finalize()).decode()


def host_psk(key: InterchangeKey, hostnqn: str, subnqn: str, *, identity_version: int = 0,
             derivation: str = "compat", r02_sha256: bool = True) -> TlsPsk:  # fmt: skip
    """The identity and TLS PSK a host offers (libnvme ``derive_nvme_keys``).

    ``r02_sha256``: use a SHA-384 (hh 02, 48-byte) PSK under TLS_AES_128_GCM_SHA256, as
    tlshd 1.0.0 / Linux 6.12-era peers do (their binder is always SHA-256: docs/TLS.md section 1
    "What tlshd offers"); False = TLS_AES_256_GCM_SHA384 as TP 8011 says. The key derivation is
    the same either way. A v0 identity longer than 255 bytes (two NQNs near their 223-byte
    limit) cannot be the HKDF context: ValueError, as libnvme refuses it; v1 has no such limit.
    """
    _check_derivation(derivation)
    if identity_version not in (0, 1):
        raise ValueError(f"PSK identity version {identity_version} is not 0 or 1")
    if " " in hostnqn or " " in subnqn or not hostnqn or not subnqn:
        raise ValueError("NQNs in a PSK identity must be non-empty and hold no spaces")
    hash_id = key.suite_hash
    retained = _retained(key, hostnqn, derivation)
    if identity_version == 0:
        identity = f"NVMe0R{hash_id:02d} {hostnqn} {subnqn}"
        context = identity
    else:
        digest = _digest(hash_id, retained, hostnqn, subnqn)
        identity = f"NVMe1R{hash_id:02d} {hostnqn} {subnqn} {digest}"
        context = f"{hash_id:02d} {digest}"
    n = len(key.configured)
    info = _hkdf_info(n, b"nvme-tls-psk", context.encode(), derivation)
    tls_key = _extract_expand(hash_id, retained, info, n)
    cipher = TLS_AES_128_GCM_SHA256 if r02_sha256 else SUITE_OF_HASH[hash_id]
    return TlsPsk(identity.encode(), tls_key, cipher)


def target_psk(identity: PskIdentity, key: InterchangeKey, *, derivation: str = "compat",
               r02_sha256: bool = True) -> TlsPsk | None:  # fmt: skip
    """The TLS PSK the target uses for a client's identity, given the host's configured key.

    None when the identity's hash is not the key's, a v1 digest does not match the key (a host
    with another key, or a forged identity), or the identity cannot be derived (too long).
    ``r02_sha256`` sets the suite of a 48-byte PSK; :meth:`nvmeof.tls.TlsEngine.server` by
    default replaces it with the one the host's binder shows (``r02_any_suite``).
    """
    _check_derivation(derivation)
    if identity.hmac != key.suite_hash:
        return None
    try:
        psk = host_psk(key, identity.hostnqn, identity.subnqn, identity_version=identity.version,
                       derivation=derivation, r02_sha256=r02_sha256)  # fmt: skip
    except ValueError:
        return None
    if identity.version == 1:
        expected = psk.identity.rsplit(b" ", 1)[1]
        if identity.digest is None or not _hmac.compare_digest(expected, identity.digest.encode()):
            return None
    return psk
