"""DH-HMAC-CHAP computations (nvmeof/auth/crypto.py, nvmeof/auth/ffdhe.py).

Known answers: the kernel's KUnit vectors for the generated PSK
(drivers/nvme/common/tests/auth_kunit.c). The responses and the augmented challenge are
cross-checked against a standard-library (hmac/hashlib) transcription of
``nvme_auth_dhchap_setup_host_response`` / ``nvmet_auth_ctrl_hash`` written here; the DH
values against Python's ``pow``; the primes against RFC 7919's construction from e.
"""

from __future__ import annotations

import hashlib
import hmac
import random

import pytest

from nvmeof.auth.constants import DhGroup, HashId
from nvmeof.auth.crypto import (
    DhKeyPair,
    SequenceCounter,
    augmented_challenge,
    controller_response,
    generated_psk,
    hash_length,
    host_response,
    private_value_from_random,
)
from nvmeof.auth.ffdhe import CONSTRUCTION_X, PRIMES, PRIVATE_KEY_BITS, prime_length

STDLIB_HASHES = {1: hashlib.sha256, 2: hashlib.sha384, 3: hashlib.sha512}
HOSTNQN = "nqn.2014-08.org.nvmexpress:uuid:0b7d3b2a-1c5e-4d2f-9a61-3f0a2c9e7d11"
SUBNQN = "nqn.2024-01.io.example:subsys1"


def e_times_two_to(bits: int) -> int:
    """floor(e * 2^bits) from the series sum 1/k!, with guard bits."""
    guard = 128
    term, total, k = 1 << (bits + guard), 0, 0
    while term:
        total += term
        k += 1
        term //= k
    return total >> guard


@pytest.mark.parametrize("group", list(PRIMES))
def test_primes_follow_rfc7919_construction(group: DhGroup) -> None:
    b = PRIMES[group].bit_length()
    expected = 2**b - 2 ** (b - 64) + (e_times_two_to(b - 130) + CONSTRUCTION_X[group]) * 2**64 - 1
    assert PRIMES[group] == expected
    assert b == {1: 2048, 2: 3072, 3: 4096, 4: 6144, 5: 8192}[group]
    assert prime_length(group) * 8 == b


# drivers/nvme/common/tests/auth_kunit.c: skey[i] = 'A' + i, c1[i] = i, c2[i] = 0xff - i.
KUNIT_PSK = {
    HashId.SHA256: "1733c59fa7f48fcf37f5f26fc4ff0268ad4f78e030f4f3b0bfd1d47e7bb1447a",
    HashId.SHA384: "f14b2dd3234c459694d3bc63f8968bd6b37c2c6de849e22e118749001ce4bbe8"
    "640b9e3a748cb11ce4b1d71d359cce39",
    HashId.SHA512: "9c9f089a618b47d2d75f4b6c28070424487b445dd96e70c4c09b55e8b6000152"
    "a3363c3454043f38f0b85036ded40655350aa87b8b6a282b5c1acae16233dd5b",
}


@pytest.mark.parametrize("hash_id", list(HashId))
def test_generated_psk_matches_kernel_kunit(hash_id: HashId) -> None:
    n = hash_length(hash_id)
    skey = bytes(ord("A") + i for i in range(n))
    c1 = bytes(range(n))
    c2 = bytes(0xFF - i for i in range(n))
    assert generated_psk(hash_id, skey, c1, c2).hex() == KUNIT_PSK[hash_id]


def stdlib_response(
    hash_id: int,
    key: bytes,
    challenge: bytes,
    seqnum: int,
    tid: int,
    role: bytes,
    nqn1: str,
    nqn2: str,
    skey: bytes | None,
) -> bytes:
    h = STDLIB_HASHES[hash_id]
    if skey is not None:  # nvme_auth_augmented_challenge: HMAC(H(Ks), C)
        challenge = hmac.new(h(skey).digest(), challenge, h).digest()
    msg = challenge + seqnum.to_bytes(4, "little") + tid.to_bytes(2, "little") + b"\0"
    msg += role + nqn1.encode() + b"\0" + nqn2.encode()
    return hmac.new(key, msg, h).digest()


@pytest.mark.parametrize("hash_id", list(HashId))
@pytest.mark.parametrize("with_dh", [False, True])
def test_responses_match_independent_transcription(hash_id: HashId, with_dh: bool) -> None:
    rng = random.Random(hash_id * 2 + with_dh)
    n = hash_length(hash_id)
    key, challenge = rng.randbytes(n), rng.randbytes(n)
    skey = rng.randbytes(256) if with_dh else None
    common = dict(seqnum=0x12345678, transaction_id=0xBEEF, hostnqn=HOSTNQN, subsysnqn=SUBNQN)
    assert host_response(hash_id, key, challenge, session_key=skey, **common) == stdlib_response(
        hash_id, key, challenge, 0x12345678, 0xBEEF, b"HostHost", HOSTNQN, SUBNQN, skey
    )
    assert controller_response(
        hash_id, key, challenge, session_key=skey, **common
    ) == stdlib_response(
        hash_id, key, challenge, 0x12345678, 0xBEEF, b"Controller", SUBNQN, HOSTNQN, skey
    )
    if skey is not None:
        h = STDLIB_HASHES[hash_id]
        assert (
            augmented_challenge(hash_id, skey, challenge)
            == hmac.new(h(skey).digest(), challenge, h).digest()
        )


def test_response_refuses_a_challenge_of_the_wrong_length() -> None:
    with pytest.raises(ValueError, match="challenge is 31 bytes"):
        host_response(1, bytes(32), bytes(31), seqnum=1, transaction_id=0, hostnqn="", subsysnqn="")


@pytest.mark.parametrize("group", list(PRIMES))
def test_dh_agrees_and_pads(group: DhGroup) -> None:
    rng = random.Random(int(group))
    host = DhKeyPair(group, private_value_from_random(group, rng.randbytes))
    ctrl = DhKeyPair(group, private_value_from_random(group, rng.randbytes))
    p = PRIMES[group]
    # Independent check of the library's exponentiation: y = 2^x mod p.
    x = private_value_from_random(group, random.Random(int(group)).randbytes)
    assert int.from_bytes(host.public_value, "big") == pow(2, x, p)
    assert len(host.public_value) == len(ctrl.public_value) == prime_length(group)
    shared = host.shared_secret(ctrl.public_value)
    assert shared == ctrl.shared_secret(host.public_value)
    assert len(shared) == prime_length(group)
    # A peer value with leading zero bytes, and the secret it gives, keep the prime's length.
    small = DhKeyPair(group, 5)  # 2^5 = 32: public value 0x00..0020
    assert small.public_value == (32).to_bytes(prime_length(group), "big")
    assert int.from_bytes(host.shared_secret(small.public_value), "big") == pow(32, x, p)


@pytest.mark.parametrize("bad", [0, 1, -1])
def test_dh_rejects_degenerate_peer_values(bad: int) -> None:
    group = DhGroup.FFDHE2048
    key = DhKeyPair(group, 12345)
    p = PRIMES[group]
    value = (p + bad if bad < 0 else bad).to_bytes(256, "big")
    with pytest.raises(ValueError, match="invalid DH public value"):
        key.shared_secret(value)
    with pytest.raises(ValueError, match="invalid DH public value"):
        key.shared_secret(p.to_bytes(256, "big"))


def test_private_values_like_the_kernel() -> None:
    for group, bits in PRIVATE_KEY_BITS.items():
        drawn: list[int] = []

        def source(n: int, drawn: list[int] = drawn) -> bytes:
            drawn.append(n)
            return b"\xff" * n

        value = private_value_from_random(group, source)
        assert drawn == [(bits + 64) // 8]  # N + 64 bits, SP 800-56A 5.6.1.1.3
        assert 1 <= value < 2**bits
    with pytest.raises(ValueError, match="out of range"):
        DhKeyPair(DhGroup.FFDHE2048, 0)
    with pytest.raises(ValueError, match="no prime"):
        DhKeyPair(DhGroup.NULL, 5)


def test_sequence_counter_skips_zero() -> None:
    counter = SequenceCounter(0xFFFFFFFE)
    assert [counter(), counter(), counter()] == [0xFFFFFFFE, 0xFFFFFFFF, 1]
    assert SequenceCounter.from_random(lambda n: bytes(n))() == 1
