"""DH-HMAC-CHAP computations: hashes, the responses, the augmented challenge, FFDHE.

Everything cryptographic goes through ``cryptography`` (HMAC, SHA-2, finite-field DH); this
module only arranges the bytes the way the kernel does (drivers/nvme/common/auth.c,
drivers/nvme/host/auth.c, drivers/nvme/target/auth.c).

Randomness is never drawn here (``nvmeof`` is sans-IO): DH private values are built from bytes
the caller passes in (:func:`private_value_from_random` takes a :data:`RandomSource`).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.asymmetric import dh
from cryptography.utils import CryptographyDeprecationWarning

from nvmeof.auth.constants import DhGroup, HashId
from nvmeof.auth.ffdhe import GENERATOR, PRIMES, PRIVATE_KEY_BITS, prime_length

#: ``random_bytes(n)`` returns n random bytes (``os.urandom`` in production, a seeded
#: generator in tests).
RandomSource = Callable[[int], bytes]

_ALGORITHMS: dict[int, type[hashes.HashAlgorithm]] = {
    HashId.SHA256: hashes.SHA256,
    HashId.SHA384: hashes.SHA384,
    HashId.SHA512: hashes.SHA512,
}

#: The role strings of the two responses (NVMe Base 2.0 "DH-HMAC-CHAP protocol").
_HOST_ROLE = b"HostHost"
_CONTROLLER_ROLE = b"Controller"


def hash_algorithm(hash_id: int) -> hashes.HashAlgorithm:
    """The ``cryptography`` hash of a DH-HMAC-CHAP hash id (1-3)."""
    try:
        return _ALGORITHMS[hash_id]()
    except KeyError:
        raise ValueError(f"unknown DH-HMAC-CHAP hash id {hash_id}") from None


def hash_length(hash_id: int) -> int:
    """Digest bytes of a hash id, 0 for an unknown one (``nvme_auth_hmac_hash_len``)."""
    algorithm = _ALGORITHMS.get(hash_id)
    return algorithm().digest_size if algorithm is not None else 0


def digest(hash_id: int, data: bytes) -> bytes:
    """H(data)."""
    hasher = hashes.Hash(hash_algorithm(hash_id))
    hasher.update(data)
    return hasher.finalize()


def hmac_digest(hash_id: int, key: bytes, data: bytes) -> bytes:
    """HMAC-H(key, data)."""
    mac = hmac.HMAC(key, hash_algorithm(hash_id))
    mac.update(data)
    return mac.finalize()


def augmented_challenge(hash_id: int, session_key: bytes, challenge: bytes) -> bytes:
    """Ca = HMAC-H(H(Ks), C) (``nvme_auth_augmented_challenge``).

    ``session_key`` is the DH shared secret padded to the prime's length, as the kernel's kpp
    writes it. nvmet hashes an empty key when a host sent no DH value for a non-NULL group.
    """
    return hmac_digest(hash_id, digest(hash_id, session_key), challenge)


def _response(
    hash_id: int,
    transformed_key: bytes,
    challenge: bytes,
    session_key: bytes | None,
    seqnum: int,
    transaction_id: int,
    role: bytes,
    first_nqn: str,
    second_nqn: str,
) -> bytes:
    hash_len = hash_length(hash_id)
    if len(challenge) != hash_len:
        raise ValueError(f"challenge is {len(challenge)} bytes, the hash needs {hash_len}")
    if session_key is not None:
        challenge = augmented_challenge(hash_id, session_key, challenge)
    message = b"".join(
        (
            challenge,
            seqnum.to_bytes(4, "little"),
            transaction_id.to_bytes(2, "little"),
            b"\x00",  # the secure channel concatenation byte: 0, no TLS
            role,
            first_nqn.encode(),
            b"\x00",
            second_nqn.encode(),
        )
    )
    return hmac_digest(hash_id, transformed_key, message)


def host_response(
    hash_id: int,
    transformed_host_key: bytes,
    challenge: bytes,
    *,
    seqnum: int,
    transaction_id: int,
    hostnqn: str,
    subsysnqn: str,
    session_key: bytes | None = None,
) -> bytes:
    """R1 = HMAC(Kh, C1' || S1 || T || 0 || "HostHost" || NQNh || 0 || NQNc).

    ``nvme_auth_dhchap_setup_host_response`` (host) and ``nvmet_auth_host_hash`` (nvmet).
    C1' is the augmented C1 when a DH group is in use (``session_key`` given).
    ``transformed_host_key`` is :func:`nvmeof.auth.secret.transform_key` of the host secret
    with the host NQN.
    """
    return _response(
        hash_id,
        transformed_host_key,
        challenge,
        session_key,
        seqnum,
        transaction_id,
        _HOST_ROLE,
        hostnqn,
        subsysnqn,
    )


def controller_response(
    hash_id: int,
    transformed_ctrl_key: bytes,
    challenge: bytes,
    *,
    seqnum: int,
    transaction_id: int,
    hostnqn: str,
    subsysnqn: str,
    session_key: bytes | None = None,
) -> bytes:
    """R2 = HMAC(Kc, C2' || S2 || T || 0 || "Controller" || NQNc || 0 || NQNh).

    ``nvme_auth_dhchap_setup_ctrl_response`` (host) and ``nvmet_auth_ctrl_hash`` (nvmet);
    ``transformed_ctrl_key`` is the controller secret transformed with the subsystem NQN.
    """
    return _response(
        hash_id,
        transformed_ctrl_key,
        challenge,
        session_key,
        seqnum,
        transaction_id,
        _CONTROLLER_ROLE,
        subsysnqn,
        hostnqn,
    )


def generated_psk(hash_id: int, session_key: bytes, c1: bytes, c2: bytes) -> bytes:
    """The generated PSK for secure channel concatenation: HMAC-H(Ks, C1 || C2)
    (NVMe Base 2.1 section 8.13.5.9, ``nvme_auth_generate_psk``). Not used by the state
    machines yet (no TLS here); kept because the kernel's KUnit vectors pin it."""
    return hmac_digest(hash_id, session_key, c1 + c2)


@contextmanager
def _ffdh_allowed() -> Iterator[None]:
    # cryptography 51 warns that FFDH is deprecated (even on attribute access of the dh module);
    # the protocol mandates FFDHE, so keep the warning (an error under pytest's filterwarnings)
    # away from every caller. Its announced removal would break this module.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CryptographyDeprecationWarning)
        yield


def _parameters(group: DhGroup) -> dh.DHParameterNumbers:
    if group not in PRIMES:
        raise ValueError(f"DH group {group!r} has no prime")
    prime = PRIMES[group]
    # q = (p - 1) / 2: the ffdhe primes are safe primes and 2 generates the order-q subgroup.
    with _ffdh_allowed():
        return dh.DHParameterNumbers(prime, GENERATOR, (prime - 1) // 2)


def private_value_from_random(group: DhGroup, random_bytes: RandomSource) -> int:
    """A private exponent the way the kernel draws one (``dh_safe_prime_gen_privkey``).

    NIST SP 800-56A rev. 3 section 5.6.1.1.3: N + 64 random bits c, x = (c mod (2^N - 1)) + 1,
    with N from :data:`nvmeof.auth.ffdhe.PRIVATE_KEY_BITS`.
    """
    bits = PRIVATE_KEY_BITS[group]
    candidate = int.from_bytes(random_bytes((bits + 64) // 8), "big")
    return candidate % ((1 << bits) - 1) + 1


class DhKeyPair:
    """One side's FFDHE key: a private exponent given by the caller, its public value.

    ``cryptography`` does the exponentiations. It builds a private key only from (x, y), so y is
    first obtained as the "shared secret" of x with the generator itself (g^x mod p), then the
    key is rebuilt with it.
    """

    def __init__(self, group: DhGroup, private_value: int) -> None:
        parameters = _parameters(group)
        if not 1 <= private_value < parameters.q:  # type: ignore[operator]
            raise ValueError("DH private value out of range")
        self.group = group
        self.length = prime_length(group)
        with _ffdh_allowed():
            generator = dh.DHPublicNumbers(GENERATOR, parameters).public_key()
            provisional = dh.DHPrivateNumbers(
                private_value, dh.DHPublicNumbers(GENERATOR, parameters)
            ).private_key()
            public = int.from_bytes(provisional.exchange(generator), "big")
            self._key = dh.DHPrivateNumbers(
                private_value, dh.DHPublicNumbers(public, parameters)
            ).private_key()
        #: g^x mod p, big-endian, padded to the prime's length (``nvme_auth_gen_pubkey``).
        self.public_value = public.to_bytes(self.length, "big")

    def __repr__(self) -> str:
        return f"DhKeyPair({self.group.name})"

    def shared_secret(self, peer_public_value: bytes) -> bytes:
        """Ks = peer^x mod p, padded to the prime's length (``nvme_auth_gen_shared_secret``).

        A peer value outside 2..p-2 raises ValueError (OpenSSL's check; the kernel does that
        and the subgroup check only in FIPS mode, ``dh_is_pubkey_valid``).
        """
        peer = int.from_bytes(peer_public_value, "big")
        parameters = _parameters(self.group)
        if not 1 < peer < PRIMES[self.group] - 1:
            raise ValueError("invalid DH public value: not in 2..p-2")
        try:
            with _ffdh_allowed():
                peer_key = dh.DHPublicNumbers(peer, parameters).public_key()
                shared = self._key.exchange(peer_key)
        except ValueError as exc:
            raise ValueError(f"invalid DH public value: {exc}") from None
        return shared.rjust(self.length, b"\x00")


class SequenceCounter:
    """Sequence numbers as ``nvme_auth_get_seqnum`` hands them out: a random start, then +1,
    never 0 (0 in a reply means "no controller challenge"). The kernel shares one counter
    between host and target code; give both sides the same instance to mimic that.
    """

    def __init__(self, start: int) -> None:
        self._value = start & 0xFFFFFFFF

    def __call__(self) -> int:
        if self._value == 0:
            raise ValueError("sequence counter started at 0; start it from random bytes")
        value = self._value
        self._value = (self._value + 1) & 0xFFFFFFFF or 1
        return value

    @classmethod
    def from_random(cls, random_bytes: RandomSource) -> SequenceCounter:
        return cls(int.from_bytes(random_bytes(4), "little") or 1)
