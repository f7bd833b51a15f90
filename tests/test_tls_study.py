"""Golden tests for the TLS study code in scripts/tls_study (docs/TLS.md), not product code.

Vectors: libnvme test/psk.c (export/import, identity v1 for both the RFC 8446 and the
*_compat derivations). The in-process handshake runs only where pyOpenSSL is installed.
"""

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "scripts", "tls_study"))
from nvme_psk import (
    InterchangeKey,
    export_interchange,
    identity_and_tls_psk,
    parse_interchange,
)

K32 = bytes.fromhex("5512dbb6737d0106f65975b773dfb011ffc344bcf442e2dd6d8bc4870b5d5b03")
K48 = K32 + K32[16:]
H, S = "nqn.psk-test-host", "nqn.psk-test-subsys"
EXPORTED = "NVMeTLSkey-1:01:VRLbtnN9AQb2WXW3c9+wEf/DRLz0QuLdbYvEhwtdWwNf9LrZ:"


def test_export_import_golden():
    assert export_interchange(K32) == EXPORTED
    ik = parse_interchange(EXPORTED)
    assert ik == InterchangeKey(1, K32)


def test_import_rejects_bad_crc_and_shape():
    bad = EXPORTED.replace("VRL", "VRM")
    with pytest.raises(ValueError, match="CRC-32"):
        parse_interchange(bad)
    with pytest.raises(ValueError, match="unknown PSK hash"):
        parse_interchange("NVMeTLSkey-1:03:" + EXPORTED.split(":")[2] + ":")
    with pytest.raises(ValueError, match="not an NVMeTLSkey-1"):
        parse_interchange("DHHC-1:01:" + EXPORTED.split(":")[2] + ":")


@pytest.mark.parametrize(
    ("key", "compat", "identity"),
    [
        (K32, False, f"NVMe1R01 {H} {S} iSbjiStwJ/1TrTvDlt2fjFmzvsytOJelidNnA+X5lEU="),
        (
            K48,
            False,
            f"NVMe1R02 {H} {S} QhW2+Rp6RzHlNtCslyRxMnwJ11tKKhz8JCAQpQ+XUD8f9td1VeH5h53yz2wKJG1a",
        ),
        (K32, True, f"NVMe1R01 {H} {S} 66GuqV08TsAGII39teWUfwQwizjv06Jy8jOcX3NAAzM="),
        (
            K48,
            True,
            f"NVMe1R02 {H} {S} RsKmYJ3nAn1ApjjMloJFbAkLPivONDAX/xW327YBUsn2eGShXSjCZvBaOxscLqmz",
        ),
    ],
)
def test_identity_v1_golden(key, compat, identity):
    # The v1 digest is an HMAC keyed with the retained PSK: this checks derive_retained_key(_compat).
    ik = InterchangeKey(1 if len(key) == 32 else 2, key)
    got, psk = identity_and_tls_psk(ik, H, S, version=1, compat=compat)
    assert got == identity
    assert len(psk) == len(key)


def test_identity_v0_shape():
    got, _ = identity_and_tls_psk(InterchangeKey(1, K32), H, S, version=0)
    assert got == f"NVMe0R01 {H} {S}"


def test_in_process_handshake_with_nvme_identity():
    pytest.importorskip("OpenSSL")
    import psk_handshake

    r = psk_handshake.run(EXPORTED, H, S)
    assert r["server_saw_identity"] == [f"NVMe0R01 {H} {S}"]
    assert (r["version"], r["cipher"]) == ("TLSv1.3", "TLS_AES_128_GCM_SHA256")
    assert r["icreq_ok"] and r["icresp_ok"]
    from OpenSSL import SSL

    with pytest.raises(SSL.Error):
        psk_handshake.run(EXPORTED, H, S, client_psk=os.urandom(32))


def test_v0_tls_psk_measured_against_linux_612():
    # Measured 2026-12-07 (scripts/tls_study/results.md): nvme-cli 2.13 / libnvme 1.13
    # `check-tls-key --identity=0 --insert` in the Debian 13 guest filed this key, and
    # the guest's nvmet + tlshd accepted our client with the *compat* derivation only.
    host = "nqn.2014-08.org.nvmexpress:uuid:0d0d0d0d-1111-2222-3333-444444444444"
    sub = "nqn.2014-08.org.nvmexpress:linuxvm-tls"
    ik = parse_interchange("NVMeTLSkey-1:01:At6e5+w0zbqe8fi7sZFSi2it9LowKo6YTnDOypa/W2q6w6H/:")
    ident, psk = identity_and_tls_psk(ik, host, sub, version=0, compat=True)
    assert ident == f"NVMe0R01 {host} {sub}"
    assert psk.hex() == "e439ee35958edda746640357ad92b7465d8a9d12b0c81600788112e097e8c534"
    _, rfc = identity_and_tls_psk(ik, host, sub, version=0, compat=False)
    assert (
        rfc.hex() == "37a85c55e5f5f3eec0a55642330fa5e2a020d1efad93aa6b16fe381e55424f0f"
    )  # refused by 6.12
