"""Checks of the secrets a configuration holds: DH-HMAC-CHAP secrets (parsed and used by
:mod:`nvmeof.auth`) and TLS PSKs (:mod:`nvmeof.tls`); here only whether a file's value is one,
with a one-line reason that never repeats the secret."""

from __future__ import annotations

import base64
import binascii
import re
import zlib

from nvmeof.tls.psk import InterchangeKey

_FORMAT = re.compile(r"DHHC-1:(0[0-3]):([A-Za-z0-9+/]+={0,2}):")
_KEY_LENGTHS = (32, 48, 64)


def dhchap_secret_problem(value: object) -> str | None:
    """Why ``value`` is not a ``DHHC-1:<hmac>:<base64(key + CRC-32)>:`` secret, or None."""
    if not isinstance(value, str):
        return f"must be a DHHC-1 secret string, not {type(value).__name__}"
    match = _FORMAT.fullmatch(value)
    if match is None:
        return "not a DHHC-1 secret (DHHC-1:<00..03>:<base64>:, as nvme gen-dhchap-key writes)"
    try:
        raw = base64.b64decode(match.group(2), validate=True)
    except binascii.Error:
        return "the DHHC-1 secret's base64 part does not decode"
    key, crc = raw[:-4], raw[-4:]
    if len(key) not in _KEY_LENGTHS:
        return f"a DHHC-1 key is 32, 48 or 64 bytes, this one {len(key)}"
    if zlib.crc32(key).to_bytes(4, "little") != crc:
        return "the DHHC-1 secret's CRC-32 does not match its key (mistyped?)"
    return None


def tls_key_problem(value: object) -> str | None:
    """Why ``value`` is not an ``NVMeTLSkey-1:<hh>:<base64(key + CRC-32)>:`` PSK, or None."""
    if not isinstance(value, str):
        return f"must be an NVMeTLSkey-1 key string, not {type(value).__name__}"
    try:
        InterchangeKey.parse(value)
    except ValueError as exc:
        reason = str(exc).replace(value, "...")  # never echo the key back
        return f"not an NVMeTLSkey-1 key (as nvme gen-tls-key writes): {reason}"
    return None
