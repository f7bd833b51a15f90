"""DH-HMAC-CHAP secrets in the ``DHHC-1`` representation, and the key transformation.

A secret reads ``DHHC-1:<hh>:<base64(key || crc32_le(key))>:`` where ``hh`` is the hash the
consumer transforms the key with (00 none, 01 SHA-256, 02 SHA-384, 03 SHA-512) and the key is
32, 48 or 64 bytes. The kernel parses it in ``nvme_auth_parse_key`` / ``nvme_auth_extract_key``
(drivers/nvme/common/auth.c): two decimal digits after ``DHHC-1:``, base64 up to the last
``:``, a decoded length of 36, 52 or 68, and a CRC-32 (the zlib/IEEE one, stored little-endian)
over the key. The key length does not have to match the hash (since Linux 6.7, "nvme-auth:
allow mixing of secret and hash lengths"; the response is keyed with the whole transformed,
digest-sized key, "nvme-auth: use transformed key size to create resp").

The transformation (``nvme_auth_transform_key``): id 0 uses the key as it is; otherwise the key
is ``HMAC-H(key, NQN || "NVMe-over-Fabrics")`` without NUL terminators, a digest-sized key.
The NQN is the host NQN for the host's secret (``nvme_auth_dhchap_setup_host_response``,
``nvmet_auth_host_hash``) and the subsystem NQN for the controller's secret
(``nvme_auth_dhchap_setup_ctrl_response``, ``nvmet_auth_ctrl_hash``).
"""

from __future__ import annotations

import base64
import binascii
import re
import zlib
from dataclasses import dataclass

from nvmeof.auth.crypto import hash_length, hmac_digest

PREFIX = "DHHC-1:"
KEY_LENGTHS = (32, 48, 64)
#: The text the transformation appends to the NQN (17 ASCII bytes, no NUL).
TRANSFORM_SEED = b"NVMe-over-Fabrics"

_SECRET = re.compile(r"DHHC-1:(\d\d):([A-Za-z0-9+/=]*):?")


@dataclass(frozen=True)
class DhchapSecret:
    """A parsed secret: the transform hash id (0 = none) and the raw key bytes."""

    hmac_id: int
    key: bytes

    def __post_init__(self) -> None:
        if not 0 <= self.hmac_id <= 3:
            raise ValueError(f"DHHC-1 hash id {self.hmac_id} is not 0-3")
        if len(self.key) not in KEY_LENGTHS:
            raise ValueError(f"DHHC-1 key is {len(self.key)} bytes, not 32, 48 or 64")

    def __repr__(self) -> str:  # never print key material into logs
        return f"DhchapSecret(hmac_id={self.hmac_id}, key=<{len(self.key)} bytes>)"


def _crc32_le(key: bytes) -> bytes:
    return zlib.crc32(key).to_bytes(4, "little")


def parse_secret(text: str) -> DhchapSecret:
    """Parse a ``DHHC-1:`` secret; every malformed input raises a one-line ValueError.

    Surrounding whitespace is dropped (nvmet ``strim``s what configfs is given). The trailing
    ``:`` is optional, as in the kernel, which decodes up to the last colon if there is one.
    """
    stripped = text.strip()
    if not stripped.startswith(PREFIX):
        raise ValueError("DHHC-1 secret must start with 'DHHC-1:'")
    match = _SECRET.fullmatch(stripped)
    if match is None:
        raise ValueError("DHHC-1 secret must read 'DHHC-1:<two digits>:<base64>:'")
    hmac_id = int(match.group(1))
    if hmac_id > 3:
        raise ValueError(f"DHHC-1 hash id {hmac_id:02d} is not 00-03")
    try:
        blob = base64.b64decode(match.group(2), validate=True)
    except binascii.Error as exc:
        raise ValueError(f"DHHC-1 base64 does not decode: {exc}") from None
    if len(blob) - 4 not in KEY_LENGTHS:
        raise ValueError(f"DHHC-1 key decodes to {len(blob)} bytes, not 36, 52 or 68")
    key, crc = blob[:-4], blob[-4:]
    if _crc32_le(key) != crc:
        raise ValueError(
            f"DHHC-1 key CRC mismatch (stored {crc[::-1].hex()}, computed {_crc32_le(key)[::-1].hex()})"
        )
    return DhchapSecret(hmac_id, key)


def format_secret(secret: DhchapSecret) -> str:
    """The ``DHHC-1:`` text of ``secret``, as nvme-cli prints it (with the trailing colon)."""
    encoded = base64.b64encode(secret.key + _crc32_le(secret.key)).decode("ascii")
    return f"{PREFIX}{secret.hmac_id:02x}:{encoded}:"


def generate_secret(random_key: bytes, hmac_id: int = 0, *, nqn: str | None = None) -> DhchapSecret:
    """A new secret from caller-supplied random bytes, like ``nvme gen-dhchap-key``.

    ``random_key`` (32, 48 or 64 bytes, e.g. ``os.urandom(32)``) plays ``--key-length`` and the
    randomness nvme-cli draws; ``hmac_id`` is ``--hmac``.

    Without ``nqn`` (nvme-cli 3's ``nvme keys gen-kxchap-secret``, which dropped ``--nqn``) the
    random bytes are the key. With ``nqn`` and ``hmac_id`` > 0 this reproduces nvme-cli 2.x
    ``gen-dhchap-key --nqn``: the string carries ``HMAC(random, nqn || "NVMe-over-Fabrics")``
    (libnvme ``nvme_gen_dhchap_key``), which the consumer transforms a second time; 2.x also
    insisted on a key as long as the hash's digest.
    """
    if nqn is None or hmac_id == 0:
        return DhchapSecret(hmac_id, bytes(random_key))
    if len(random_key) != hash_length(hmac_id):
        raise ValueError(
            f"nvme-cli 2.x wants a {hash_length(hmac_id)}-byte key for hash id {hmac_id}"
        )
    return DhchapSecret(
        hmac_id, hmac_digest(hmac_id, bytes(random_key), nqn.encode() + TRANSFORM_SEED)
    )


def transform_key(secret: DhchapSecret, nqn: str) -> bytes:
    """The key the responses are keyed with (``nvme_auth_transform_key``).

    ``nqn`` is the host NQN for the host secret and the subsystem NQN for the controller
    secret. Hash id 0 returns the key unchanged.
    """
    if secret.hmac_id == 0:
        return secret.key
    return hmac_digest(secret.hmac_id, secret.key, nqn.encode() + TRANSFORM_SEED)
