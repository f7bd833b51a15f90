"""DHHC-1 secrets (nvmeof/auth/secret.py) against real nvme-cli output, and their rejection.

The NVME_CLI_* strings were printed by nvme-cli 2.3 (Debian's nvme-cli package, libnvme 1.3):
``nvme gen-dhchap-key --secret=<hex> --hmac=<h> [--key-length=<n>] --nqn=<NQN_H>``. nvme-cli 2.x
stores HMAC(secret, nqn || "NVMe-over-Fabrics") in the string when --hmac is not 0; the tests
re-derive every expected value with the standard library's hmac/hashlib/zlib, independently of
the ``cryptography`` calls under test.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import zlib

import pytest
from hypothesis import given, strategies as st

from nvmeof.auth.secret import (
    DhchapSecret,
    format_secret,
    generate_secret,
    parse_secret,
    transform_key,
)

NQN_H = "nqn.2014-08.org.nvmexpress:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6"
SUBNQN = "nqn.2024-01.io.example:subsys1"
SECRET_32 = bytes(range(32))
SECRET_48 = bytes(range(0x40, 0x70))
SECRET_64 = bytes(range(0x80, 0xC0))

NVME_CLI_HMAC0 = "DHHC-1:00:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh+KfiaR:"
NVME_CLI_HMAC1 = "DHHC-1:01:jWiK0NeSweQjGFEI9c4bjHV792NxG/KQG1mAfCQAiRlmCljm:"
NVME_CLI_HMAC2 = (
    "DHHC-1:02:Ycyi6NFMdr7npRY/2yykR3R/KhI9ULQBfGnlfomr+vFYtK33xBjqCJHQautzrwpD6optSw==:"
)
NVME_CLI_HMAC3 = (
    "DHHC-1:03:ostrXQ+0trqFK1VKYhOlDpeBeKP6+X34rref2yQTbuVzIK8EF1vFXGdHyAapualNqzt5cJzx1CQQ"
    "rSA85uLXXpVmW/k=:"
)
#: From nvme-cli's own documentation and tests (nvme-keys-check-kxchap-secret.txt,
#: tests/cli/nvme_keys_test.py).
NVME_CLI_DOC_SECRETS = (
    "DHHC-1:00:ia6zGodOr4SEG0Zzaw398rpY0wqipUWj4jWjUh4HWUz6aQ2n:",
    "DHHC-1:00:9wCYVQqDvADjGIZo6q/v2SfmXZqqkNa9TcvYu97Ly3Q/gajh:",
)

STDLIB_HASHES = {1: hashlib.sha256, 2: hashlib.sha384, 3: hashlib.sha512}


def stdlib_transform(key: bytes, hmac_id: int, nqn: str) -> bytes:
    """nvme_auth_transform_key, written with the standard library only."""
    if hmac_id == 0:
        return key
    return hmac.new(key, nqn.encode() + b"NVMe-over-Fabrics", STDLIB_HASHES[hmac_id]).digest()


@pytest.mark.parametrize(
    ("text", "hmac_id", "raw"),
    [
        (NVME_CLI_HMAC0, 0, SECRET_32),
        (NVME_CLI_HMAC1, 1, SECRET_32),
        (NVME_CLI_HMAC2, 2, SECRET_48),
        (NVME_CLI_HMAC3, 3, SECRET_64),
    ],
)
def test_nvme_cli_output(text: str, hmac_id: int, raw: bytes) -> None:
    secret = parse_secret(text)
    # nvme-cli 2.x put the NQN-keyed HMAC of the --secret bytes into the string.
    assert secret == DhchapSecret(hmac_id, stdlib_transform(raw, hmac_id, NQN_H))
    assert format_secret(secret) == text
    assert format_secret(generate_secret(raw, hmac_id, nqn=NQN_H)) == text
    # What the kernel keys the host response with: the string's key transformed once more.
    assert transform_key(secret, NQN_H) == stdlib_transform(secret.key, hmac_id, NQN_H)
    assert transform_key(secret, SUBNQN) != transform_key(secret, NQN_H) or hmac_id == 0


def test_nvme_cli_documented_secrets_parse() -> None:
    for text in NVME_CLI_DOC_SECRETS:
        secret = parse_secret(text)
        assert (secret.hmac_id, len(secret.key)) == (0, 32)
        assert format_secret(secret) == text


def test_spec_example_secret_with_every_hash() -> None:
    # The NVMe spec's example secret, which Linux >= 6.7 accepts with any transform hash
    # (cover letter of "Remove secret-size restrictions for hashes", 2023).
    for hmac_id in range(4):
        secret = parse_secret(
            f"DHHC-1:0{hmac_id}:ia6zGodOr4SEG0Zzaw398rpY0wqipUWj4jWjUh4HWUz6aQ2n:"
        )
        assert len(secret.key) == 32
        transformed = transform_key(secret, NQN_H)
        assert transformed == stdlib_transform(secret.key, hmac_id, NQN_H)
        assert len(transformed) == (32, 32, 48, 64)[hmac_id]


def test_generate_without_nqn_keeps_the_random_bytes() -> None:
    # nvme-cli 3 (keys gen-kxchap-secret): the string carries the secret itself, any length.
    for hmac_id in range(4):
        for raw in (SECRET_32, SECRET_48, SECRET_64):
            assert generate_secret(raw, hmac_id) == DhchapSecret(hmac_id, raw)
    with pytest.raises(ValueError, match="48-byte"):
        generate_secret(SECRET_32, 2, nqn=NQN_H)


def test_lenient_like_the_kernel() -> None:
    # Whitespace (configfs writes end in a newline) and a missing trailing colon are accepted.
    assert parse_secret(NVME_CLI_HMAC1 + "\n") == parse_secret(NVME_CLI_HMAC1)
    assert parse_secret(NVME_CLI_HMAC1[:-1]) == parse_secret(NVME_CLI_HMAC1)


def _with_crc(key: bytes) -> str:
    return base64.b64encode(key + zlib.crc32(key).to_bytes(4, "little")).decode()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "start with 'DHHC-1:'"),
        ("DHHC-2:00:" + _with_crc(SECRET_32) + ":", "start with 'DHHC-1:'"),
        ("DHHC-1:0:" + _with_crc(SECRET_32) + ":", "two digits"),
        ("DHHC-1:1a:" + _with_crc(SECRET_32) + ":", "two digits"),
        ("DHHC-1:04:" + _with_crc(SECRET_32) + ":", "hash id 04"),
        ("DHHC-1:00:" + _with_crc(SECRET_32)[:-1] + ":", "base64"),
        ("DHHC-1:00:" + _with_crc(SECRET_32) + "::", "two digits"),
        ("DHHC-1:00:" + _with_crc(bytes(33)) + ":", "37 bytes"),
        ("DHHC-1:00:" + _with_crc(bytes(16)) + ":", "20 bytes"),
        ("DHHC-1:00:" + base64.b64encode(SECRET_32 + b"\0\0\0\0").decode() + ":", "CRC"),
        ("DHHC-1:00:" + "A" * 47 + "B:", "CRC"),
        ("DHHC-1:00:" + _with_crc(SECRET_32) + ": trailing", "two digits"),
    ],
)
def test_rejections_are_one_line_value_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as caught:
        parse_secret(text)
    assert "\n" not in str(caught.value)


def test_secret_checks_itself_and_hides_its_key() -> None:
    with pytest.raises(ValueError, match="not 0-3"):
        DhchapSecret(4, SECRET_32)
    with pytest.raises(ValueError, match="31 bytes"):
        DhchapSecret(0, bytes(31))
    assert SECRET_32.hex() not in repr(DhchapSecret(0, SECRET_32))


@given(st.text(max_size=120))
def test_parser_raises_only_value_error(text: str) -> None:
    with contextlib.suppress(ValueError):
        parse_secret(text)


@given(
    st.integers(0, 3),
    st.sampled_from((32, 48, 64)).flatmap(lambda n: st.binary(min_size=n, max_size=n)),
)
def test_round_trip(hmac_id: int, key: bytes) -> None:
    secret = DhchapSecret(hmac_id, key)
    text = format_secret(secret)
    assert parse_secret(text) == secret
    # The CRC is the zlib one, little-endian, after the key (nvme_auth_extract_key).
    assert base64.b64decode(text.split(":")[2])[-4:] == zlib.crc32(key).to_bytes(4, "little")
