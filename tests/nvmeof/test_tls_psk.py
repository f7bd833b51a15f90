"""NVMe TLS PSKs (nvmeof.tls.psk): libnvme test/psk.c golden vectors, the key the Debian 13
guest's nvme-cli filed (docs/TLS.md section 3), identities, and host/target agreement."""

from __future__ import annotations

import base64
import os
import struct
import sys
import zlib
from pathlib import Path

import pytest
from hypothesis import given, strategies as st

from nvmeof.tls.psk import (
    PSK_DERIVATIONS,
    TLS_AES_128_GCM_SHA256,
    TLS_AES_256_GCM_SHA384,
    InterchangeKey,
    PskIdentity,
    TlsPsk,
    host_psk,
    target_psk,
)

# libnvme test/psk.c
K32 = bytes.fromhex("5512dbb6737d0106f65975b773dfb011ffc344bcf442e2dd6d8bc4870b5d5b03")
K48 = K32 + K32[16:]
H, S = "nqn.psk-test-host", "nqn.psk-test-subsys"
EXPORTED = {
    (0, K32): "NVMeTLSkey-1:00:VRLbtnN9AQb2WXW3c9+wEf/DRLz0QuLdbYvEhwtdWwNf9LrZ:",
    (1, K32): "NVMeTLSkey-1:01:VRLbtnN9AQb2WXW3c9+wEf/DRLz0QuLdbYvEhwtdWwNf9LrZ:",
    (2, K48): "NVMeTLSkey-1:02:VRLbtnN9AQb2WXW3c9+wEf/DRLz0QuLdbYvEhwtdWwP/w0S89ELi3W2LxIcLXVsDn8kXZQ==:",
}  # fmt: skip
V1_IDENTITIES = [
    (K32, "rfc8446", "iSbjiStwJ/1TrTvDlt2fjFmzvsytOJelidNnA+X5lEU="),
    (K48, "rfc8446", "QhW2+Rp6RzHlNtCslyRxMnwJ11tKKhz8JCAQpQ+XUD8f9td1VeH5h53yz2wKJG1a"),
    (K32, "compat", "66GuqV08TsAGII39teWUfwQwizjv06Jy8jOcX3NAAzM="),
    (K48, "compat", "RsKmYJ3nAn1ApjjMloJFbAkLPivONDAX/xW327YBUsn2eGShXSjCZvBaOxscLqmz"),
]
# Measured 2026-12-07: nvme-cli 2.13 / libnvme 1.13 `check-tls-key --identity=0 --insert` in the
# Debian 13 guest filed GUEST_COMPAT and its nvmet + tlshd accepted only that one.
GUEST_HOST = "nqn.2014-08.org.nvmexpress:uuid:0d0d0d0d-1111-2222-3333-444444444444"
GUEST_SUB = "nqn.2014-08.org.nvmexpress:linuxvm-tls"
GUEST_KEY = "NVMeTLSkey-1:01:At6e5+w0zbqe8fi7sZFSi2it9LowKo6YTnDOypa/W2q6w6H/:"
GUEST_COMPAT = "e439ee35958edda746640357ad92b7465d8a9d12b0c81600788112e097e8c534"
GUEST_RFC = "37a85c55e5f5f3eec0a55642330fa5e2a020d1efad93aa6b16fe381e55424f0f"


@pytest.mark.parametrize(("hmac", "key"), list(EXPORTED))
def test_export_and_parse_golden(hmac: int, key: bytes) -> None:
    text = EXPORTED[hmac, key]
    assert InterchangeKey(hmac, key).export() == text
    assert InterchangeKey.parse(text) == InterchangeKey(hmac, key)
    assert InterchangeKey.parse(f"  {text}\n") == InterchangeKey(hmac, key)


def _text(hmac: str, blob: bytes, version: str = "1") -> str:
    return f"NVMeTLSkey-{version}:{hmac}:{base64.b64encode(blob).decode()}:"


def _with_crc(key: bytes) -> bytes:
    return key + struct.pack("<I", zlib.crc32(key))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (EXPORTED[1, K32].replace("VRL", "VRM"), "CRC-32"),
        (_text("03", _with_crc(K32)), "hash 03 is not"),
        (_text("01", _with_crc(K32), version="2"), "version 2 is not 1"),
        ("DHHC-1:01:" + EXPORTED[1, K32].split(":")[2] + ":", "must start with"),
        (EXPORTED[1, K32][:-1], "must read"),
        ("NVMeTLSkey-1:1:" + EXPORTED[1, K32].split(":")[2] + ":", "must read"),
        ("NVMeTLSkey-1:01:VRLbtnN9AQb2WXW3c9+wEf/DRLz0QuLdbYvEhwtdWwNf9Lr:", "does not decode"),
        (_text("01", _with_crc(K32[:16])), "decodes to 20 bytes"),
        (_text("01", _with_crc(K48)), "hash 01 needs a 32-byte key"),
        (_text("02", _with_crc(K32)), "hash 02 needs a 48-byte key"),
    ],
)
def test_parse_errors_are_one_line(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        InterchangeKey.parse(text)
    assert "\n" not in str(info.value)


def test_generate_follows_gen_tls_key() -> None:
    assert InterchangeKey.generate(1, K32) == InterchangeKey(1, K32)
    assert InterchangeKey.generate(2, K48).configured == K48
    assert InterchangeKey.generate(0, K48).hmac == 0
    with pytest.raises(ValueError, match="hmac 1 needs 32 random bytes, not 48"):
        InterchangeKey.generate(1, K48)
    with pytest.raises(ValueError, match="hmac 2 needs 48"):
        InterchangeKey.generate(2, K32)
    with pytest.raises(ValueError, match="not 32 or 48"):
        InterchangeKey.generate(0, os.urandom(64))
    with pytest.raises(ValueError, match="hash 05"):
        InterchangeKey.generate(5, K32)


def test_key_material_stays_out_of_repr() -> None:
    ik = InterchangeKey(1, K32)
    psk = host_psk(ik, H, S)
    for text in (repr(ik), repr(psk), str(psk)):
        assert K32.hex() not in text and psk.key.hex() not in text and "bytes>" in text
        assert repr(K32)[2:20] not in text and repr(psk.key)[2:20] not in text


_K32, _K48 = st.binary(min_size=32, max_size=32), st.binary(min_size=48, max_size=48)
_KEYS = st.one_of(
    st.tuples(st.just(1), _K32),
    st.tuples(st.just(2), _K48),
    st.tuples(st.just(0), _K32 | _K48),
)


@given(_KEYS)
def test_export_parse_round_trip(hmac_key: tuple[int, bytes]) -> None:
    ik = InterchangeKey.generate(*hmac_key)
    assert InterchangeKey.parse(ik.export()) == ik


@pytest.mark.parametrize(("key", "derivation", "digest"), V1_IDENTITIES)
def test_v1_identity_golden(key: bytes, derivation: str, digest: str) -> None:
    # The v1 digest is an HMAC keyed with the retained PSK: this checks derive_retained_key(_compat).
    hh = 1 if len(key) == 32 else 2
    psk = host_psk(InterchangeKey(hh, key), H, S, identity_version=1, derivation=derivation)
    assert psk.identity == f"NVMe1R0{hh} {H} {S} {digest}".encode()
    assert len(psk.key) == len(key)


def test_v0_tls_psk_measured_against_linux_612() -> None:
    ik = InterchangeKey.parse(GUEST_KEY)
    psk = host_psk(ik, GUEST_HOST, GUEST_SUB)  # compat is the default
    assert psk == TlsPsk(f"NVMe0R01 {GUEST_HOST} {GUEST_SUB}".encode(), bytes.fromhex(GUEST_COMPAT),
                         TLS_AES_128_GCM_SHA256)  # fmt: skip
    assert host_psk(ik, GUEST_HOST, GUEST_SUB, derivation="rfc8446").key.hex() == GUEST_RFC


def test_suites_and_hmac_00_keys_follow_libnvme() -> None:
    # hh 00: the identity and the TLS PSK hash follow the key length (libnvme default_hmac), and
    # the configured key is the retained one.
    assert host_psk(InterchangeKey(0, K32), H, S).identity == f"NVMe0R01 {H} {S}".encode()
    r02 = host_psk(InterchangeKey(0, K48), H, S, r02_sha256=False)
    assert (r02.identity, r02.cipher) == (f"NVMe0R02 {H} {S}".encode(), TLS_AES_256_GCM_SHA384)
    assert r02.key == host_psk(InterchangeKey(0, K48), H, S).key  # the suite alone differs
    assert host_psk(InterchangeKey(0, K48), H, S).cipher == TLS_AES_128_GCM_SHA256
    assert host_psk(InterchangeKey(1, K32), H, S, r02_sha256=False).cipher == TLS_AES_128_GCM_SHA256
    # hh 00 and hh 01 on the same bytes differ: only the latter transforms the key first.
    assert host_psk(InterchangeKey(0, K32), H, S).key != host_psk(InterchangeKey(1, K32), H, S).key


def test_bad_arguments() -> None:
    ik = InterchangeKey(1, K32)
    with pytest.raises(ValueError, match="derivation 'rfc'"):
        host_psk(ik, H, S, derivation="rfc")
    with pytest.raises(ValueError, match="version 2"):
        host_psk(ik, H, S, identity_version=2)
    with pytest.raises(ValueError, match="no spaces"):
        host_psk(ik, "nqn.a b", S)
    with pytest.raises(ValueError, match=r"not a TLS 1\.3 AES-GCM suite"):
        TlsPsk(b"x", K32, "TLS_CHACHA20_POLY1305_SHA256")


@pytest.mark.parametrize("derivation", PSK_DERIVATIONS)
def test_long_nqns_need_identity_v1(derivation: str) -> None:
    # Two 223-byte NQNs (the NQN limit): the 456-byte v0 identity cannot be an HKDF context
    # (libnvme refuses it with -ENOKEY); v1's context is "<hh> <digest>".
    host, sub = "nqn.2014-08.org.nvmexpress:" + "h" * 196, "nqn.2014-08.org.nvmexpress:" + "s" * 196
    ik = InterchangeKey(1, K32)
    with pytest.raises(ValueError, match="context of 456 bytes"):
        host_psk(ik, host, sub, derivation=derivation)
    psk = host_psk(ik, host, sub, identity_version=1, derivation=derivation)
    assert len(psk.identity) == 456 + 1 + 44
    identity = PskIdentity.parse(psk.identity)
    assert identity is not None and target_psk(identity, ik, derivation=derivation) == psk
    v0 = PskIdentity.parse(f"NVMe0R01 {host} {sub}".encode())
    assert v0 is not None and target_psk(v0, ik, derivation=derivation) is None


@pytest.mark.parametrize(
    ("raw", "parsed"),
    [
        (b"NVMe0R01 nqn.h nqn.s", PskIdentity(0, 1, "nqn.h", "nqn.s", None)),
        (b"NVMe1R02 nqn.h nqn.s abc=", PskIdentity(1, 2, "nqn.h", "nqn.s", "abc=")),
        (b"NVMe0R01 nqn.h nqn.s extra", None),
        (b"NVMe1R01 nqn.h nqn.s", None),
        (b"NVMe0G01 nqn.h nqn.s", None),  # generated PSK: not ours
        (b"NVMe0R00 nqn.h nqn.s", None),
        (b"NVMe2R01 nqn.h nqn.s", None),
        (b"NVMe0R01 nqn.h  nqn.s", None),
        (b"NVMe0R01 nqn.\xff nqn.s", None),
        (b"Client_identity", None),
        (b"", None),
    ],
)
def test_identity_parse(raw: bytes, parsed: PskIdentity | None) -> None:
    assert PskIdentity.parse(raw) == parsed


_NQN = st.from_regex(r"nqn\.[a-z0-9.:-]{1,60}", fullmatch=True)


@given(_KEYS, _NQN, _NQN, st.sampled_from([0, 1]), st.sampled_from(PSK_DERIVATIONS), st.booleans())
def test_target_derives_what_the_host_offers(
    hmac_key: tuple[int, bytes], host: str, sub: str, version: int, derivation: str, r02: bool
) -> None:
    ik = InterchangeKey(*hmac_key)
    offered = host_psk(ik, host, sub, identity_version=version, derivation=derivation,
                       r02_sha256=r02)  # fmt: skip
    identity = PskIdentity.parse(offered.identity)
    assert identity is not None
    assert (identity.version, identity.hmac, identity.hostnqn, identity.subnqn) == (
        version, ik.suite_hash, host, sub)  # fmt: skip
    assert target_psk(identity, ik, derivation=derivation, r02_sha256=r02) == offered
    other = "rfc8446" if derivation == "compat" else "compat"
    assert target_psk(identity, ik, derivation=other, r02_sha256=r02) != offered


def test_target_refuses_a_wrong_hash_or_digest() -> None:
    ik = InterchangeKey(1, K32)
    v1 = PskIdentity.parse(host_psk(ik, H, S, identity_version=1).identity)
    assert v1 is not None
    assert target_psk(v1, InterchangeKey(1, os.urandom(32))) is None  # another host's key
    assert target_psk(v1, InterchangeKey(2, K48)) is None  # R01 identity, SHA-384 key
    forged = PskIdentity(1, 1, H, S, "A" * 44)
    assert target_psk(forged, ik) is None


@given(_KEYS, _NQN, _NQN, st.sampled_from([0, 1]), st.sampled_from(PSK_DERIVATIONS))
def test_same_as_the_study_code(
    hmac_key: tuple[int, bytes], host: str, sub: str, version: int, derivation: str
) -> None:
    # scripts/tls_study/nvme_psk.py is the independent transcription docs/TLS.md was measured
    # with (against the guest's nvmet and tlshd).
    study = Path(__file__).resolve().parents[2] / "scripts" / "tls_study"
    if str(study) not in sys.path:
        sys.path.insert(0, str(study))
    import nvme_psk

    ik = InterchangeKey(*hmac_key)
    identity, key = nvme_psk.identity_and_tls_psk(
        nvme_psk.InterchangeKey(ik.hmac, ik.configured), host, sub, version, derivation == "compat"
    )
    psk = host_psk(ik, host, sub, identity_version=version, derivation=derivation)
    assert (psk.identity, psk.key) == (identity.encode(), key)
