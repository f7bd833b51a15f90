"""The explained divergences of docs/TOLERANCE.md, as predicates over a case and its answers.

A divergence is *explained* when one of these rules covers it; every rule is a row of the
"Where we answer differently" table in docs/TOLERANCE.md, with its reason. Anything else the
harness finds is a bug of ours until it is fixed or argued into a row here.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

from tests.differential import pdus as P
from tests.differential.cases import Case, Step
from tests.differential.runner import Observation

NVMET_INLINE = 16384  # nvmet-tcp's default in-capsule size (NVMET_TCP_DEF_INLINE_DATA_SIZE)

Predicate = Callable[[Case, Observation, Observation], bool]


@dataclass(frozen=True)
class Row:
    key: str
    what: str
    why: str
    applies: Predicate
    only: str | None = None  # the linuxvm release the row is about ("bookworm": Linux 6.1)


def _capsules(case: Case) -> list[tuple[Step, bytes]]:
    out = []
    for step in case.steps:
        data = step.render(None, None)
        if len(data) >= 72 and data[0] == P.CAPSULE_CMD:
            out.append((step, data))
    return out


def _silent_write(case: Case, ref: Observation, ours: Observation) -> bool:
    for _, data in _capsules(case):
        opcode = data[8]
        direction = data[12] if opcode == P.FABRICS else opcode
        length = struct.unpack_from("<I", data, 40)[0]
        if direction & 1 and data[47] != P.SGL_OFFSET and 0 < length <= NVMET_INLINE:
            return True
    return False


def leaves_nvmet_hanging(case: Case) -> bool:
    """Whether nvmet will hold one of the case's commands forever (the silent-write row)."""
    return _silent_write(case, [], [])


def _compare(case: Case, ref: Observation, ours: Observation) -> bool:
    return any(step.conn > 0 and data[8] == 0x05 for step, data in _capsules(case))


def _teardown_window(case: Case, ref: Observation, ours: Observation) -> bool:
    if not ref or not ours or not ref[0].closed or not ours[0].closed:
        return False
    from tests.differential.compare import normalise

    left = normalise(ref, drop_termreq=True)
    right = normalise(ours, drop_termreq=True)
    return left[0] == right[0] and len(case.steps) > 0 and case.connections > 1


def _big_admin_queue(case: Case, ref: Observation, ours: Observation) -> bool:
    for step, data in _capsules(case):
        if data[8] == P.FABRICS and data[12] == P.FCTYPE_CONNECT and step.conn == 0:
            qid, sqsize = struct.unpack_from("<HH", data, 50)
            if qid == 0 and sqsize >= 4095:
                return True
    return False


def _unnegotiated_digests(case: Case, ref: Observation, ours: Observation) -> bool:
    """A PDU carries a digest ICReq did not negotiate, or lacks one it did."""
    asked: dict[int, int] = {}
    for step in case.steps:
        data = step.render(None, None)
        if data and data[0] == P.ICREQ and len(data) >= 12:
            asked[step.conn] = data[11] & 3
            continue
        if step.conn not in asked or len(data) < 4:
            continue
        has_data = data[0] == P.H2C_DATA or (data[0] == P.CAPSULE_CMD and data[3] != 0)
        if bool(asked[step.conn] & 1) != step.hdgst:
            return True
        if has_data and bool(asked[step.conn] & 2) != step.ddgst:
            return True
    return False


def _fatal_race(case: Case, ref: Observation, ours: Observation) -> bool:
    """A fatal error right after a command: whether that command's response leaves before
    the connection closes is a race inside nvmet (its send and receive work interleave)."""
    from tests.differential.compare import merge_c2h, normalise_pdu

    differs = False
    for left, right in zip(ref, ours, strict=True):
        a = [normalise_pdu(p) for p in merge_c2h(left.pdus) if p["t"] != "C2HTermReq"]
        b = [normalise_pdu(p) for p in merge_c2h(right.pdus) if p["t"] != "C2HTermReq"]
        if a == b and bool(left.closed) == bool(right.closed):
            continue
        if not (left.closed and right.closed):
            return False
        short, long_ = (a, b) if len(a) <= len(b) else (b, a)
        extra = long_[len(short) :]
        if long_[: len(short)] != short or not extra:
            return False
        if any(p["t"] != "CapsuleResp" for p in extra):
            return False
        differs = True
    return differs


def _admin_sqsize_above_mqes(case: Case, ref: Observation, ours: Observation) -> bool:
    for step, data in _capsules(case):
        if data[8] == P.FABRICS and data[12] == P.FCTYPE_CONNECT and step.conn == 0:
            qid, sqsize = struct.unpack_from("<HH", data, 50)
            if qid == 0 and sqsize > 1023:
                return True
    return False


def _above_4mib(case: Case, ref: Observation, ours: Observation) -> bool:
    return any(struct.unpack_from("<I", data, 40)[0] > 4 << 20 for _, data in _capsules(case))


def _dsm_longer_than_ranges(case: Case, ref: Observation, ours: Observation) -> bool:
    for step, data in _capsules(case):
        if step.conn > 0 and data[8] == 0x09:
            ranges = (data[48] + 1) * 16
            if struct.unpack_from("<I", data, 40)[0] > ranges:
                return True
    return False


def _authentication(case: Case, ref: Observation, ours: Observation) -> bool:
    return any(data[8] == P.FABRICS and data[12] in (P.FCTYPE_AUTH_SEND, P.FCTYPE_AUTH_RECV)
               for _, data in _capsules(case))  # fmt: skip


def _set_features_with_data(case: Case, ref: Observation, ours: Observation) -> bool:
    return any(step.conn == 0 and data[8] == 0x09 and struct.unpack_from("<I", data, 40)[0]
               for step, data in _capsules(case))  # fmt: skip


TABLE: list[Row] = [
    Row(
        "fatal-race",
        "The answer to the command just before a fatal error",
        "nvmet queues that answer and shuts the socket down from different work items; "
        "whether the answer gets out first varies from run to run. Ours sends it.",
        _fatal_race,
    ),
    Row(
        "silent-write",
        "A write-direction command whose SGL asks for data by R2T, of at most the in-capsule "
        "size (16 KiB)",
        "nvmet never answers it (no R2T, no completion; the host's I/O times out). We send the "
        "R2T, or the command's error, as the specification says: a hang helps no host.",
        _silent_write,
    ),
    Row(
        "compare",
        "Compare (I/O opcode 0x05)",
        "nvmet has no Compare (Invalid Opcode); we implement it and say so in ONCS.",
        _compare,
    ),
    Row(
        "teardown-window",
        "An I/O queue Connect right after a fatal error or the loss of the admin queue",
        "nvmet tears a controller down asynchronously; for a moment a new I/O queue can still "
        "attach to it. Ours removes the controller at once.",
        _teardown_window,
    ),
    Row(
        "big-admin-queue",
        "Admin Connect with SQSIZE of 4095 or more",
        "nvmet cannot build an admin queue that large: it answers, then drops the connection "
        "(or fails the Connect with Internal Error). Ours serves it.",
        _big_admin_queue,
    ),
    Row(
        "unnegotiated-digests",
        "Digests used that ICReq did not negotiate (or negotiated and not used)",
        "nvmet reads a different number of bytes than PLEN says; both sides desynchronise, at "
        "different bytes.",
        _unnegotiated_digests,
    ),
    Row(
        "6.1-set-features-length",
        "Set Features with an SGL length (Linux 6.1 only)",
        "6.1 checks the transfer length (0) before the feature; 6.12 the feature first; we "
        "follow 6.12.",
        _set_features_with_data,
        only="bookworm",
    ),
    Row(
        "6.1-auth",
        "Authentication Send/Receive (Linux 6.1 only)",
        "Debian's 6.1 is built without NVMe authentication and answers Invalid Opcode; 6.12 "
        "refuses the command's parameters with Invalid Field; we follow 6.12.",
        _authentication,
        only="bookworm",
    ),
    Row(
        "6.1-dsm-length",
        "Dataset Management whose SGL is longer than its ranges (Linux 6.1 only)",
        "6.1 wants the exact length (nvmet_check_transfer_len); 6.12 only at least the ranges "
        "(nvmet_check_data_len_lte); we follow 6.12.",
        _dsm_longer_than_ranges,
        only="bookworm",
    ),
    Row(
        "6.1-admin-sqsize",
        "Admin Connect with SQSIZE above 1023 (Linux 6.1 only)",
        "6.1 refuses it (Invalid Parameters, IPO SQSIZE); 6.12 checks SQSIZE against MQES for "
        "I/O queues only, and we follow 6.12.",
        _admin_sqsize_above_mqes,
        only="bookworm",
    ),
    Row(
        "6.1-transfer-cap",
        "A transfer above 4 MiB (Linux 6.1 only)",
        "6.1 serves it as far as it can allocate the buffer (and hangs or drops beyond); 6.12 "
        "refuses it with Data SGL Length Invalid before the command runs; we follow 6.12.",
        _above_4mib,
        only="bookworm",
    ),
]


def explain(case: Case, ref: Observation, ours: Observation,
            release: str = "trixie") -> Row | None:  # fmt: skip
    """The row that explains why ``case`` diverges from ``release``'s nvmet, if any."""
    for row in TABLE:
        if row.only not in (None, release):
            continue
        if row.applies(case, ref, ours):
            return row
    return None


def table_cases() -> list[Case]:
    """One case per row of docs/TOLERANCE.md's receive-path table that the sequences and the
    opcode sweep do not already cover (their names are in the table)."""
    from tests.differential.cases import Session

    out: list[Case] = []

    def add(name: str, s: Session, note: str = "") -> None:
        out.append(Case(name, s.steps, "table", note))

    # Issue 15's first two findings.
    s = Session("tab-pdo-without-data").admin()
    pdu = P.property_get(s.cid(), P.PROP_CSTS)
    pdu.data[3] = 72  # PDO set although the capsule carries no data
    s.add(0, pdu, "property-get-with-pdo")
    s.probe_admin()
    add("T1 CapsuleCmd without data with PDO set", s)
    s = Session("tab-sgl-zero").admin()
    entry = P.sqe(P.FABRICS, s.cid(), sgl_type=0)
    entry[4], entry[44] = P.FCTYPE_PROPERTY_GET, P.PROP_CSTS
    s.add(0, P.capsule(entry), "property-get-sgl-zero")
    s.probe_admin()
    add("T2 command without data whose SGL descriptor is all zeros", s)
    # Header and PDU rules.
    s = Session("tab-pdo-with-data").admin().identify_and_queues().io()
    pdu = P.write_in_capsule(s.cid(), s.lba, P.pattern(512, 3))
    pdu.data[3] = 0  # PDO 0 on a PDU with data
    s.add(1, pdu, "write-pdo-0")
    s.add(1, P.read(s.cid(), s.lba, 1), "read", expect=2)
    add("T3 CapsuleCmd with data and PDO 0", s)
    s = Session("tab-psdt-fabrics").admin(enable=False)
    entry = P.sqe(P.FABRICS, s.cid(), flags=0)
    entry[4], entry[44] = P.FCTYPE_PROPERTY_GET, P.PROP_CSTS
    s.add(0, P.capsule(entry), "property-get-psdt-0")
    add("T4 Fabrics command with PSDT 00b", s)
    s = Session("tab-fuse").admin().identify_and_queues().io()
    s.add(1, P.capsule(P.sqe(0x02, s.cid(), nsid=1, flags=0x41, sgl_length=512, cdw=(0, 0, 0))),
          "read-fused", expect=1)  # fmt: skip
    add("T5 FUSE bits set", s)
    s = Session("tab-sgl-type").admin().identify_and_queues().io()
    s.add(1, P.capsule(P.sqe(0x02, s.cid(), nsid=1, sgl_type=0x00, sgl_length=512,
                             cdw=(0, 0, 0))), "read-sgl-type-0", expect=2)  # fmt: skip
    add("T6 Read whose SGL is a plain data block descriptor", s)
    s = Session("tab-hdgst-flag", digests=1).admin()
    pdu = P.property_get(s.cid(), P.PROP_CSTS, hdgst=True)
    pdu.data[1] &= ~P.F_HDGST
    s.add(0, pdu, "hdgstf-clear", expect=0)
    add("T7 header digest negotiated, HDGSTF clear", s)
    s = Session("tab-ddgst-flag", digests=2).admin().identify_and_queues().io()
    pdu = P.write_in_capsule(s.cid(), s.lba, P.pattern(512, 4), ddgst=True)
    pdu.data[1] &= ~P.F_DDGST
    s.add(1, pdu, "ddgstf-clear", expect=0)
    add("T8 data digest negotiated, DDGSTF clear", s)
    s = Session("tab-ddgst-bad", digests=2).admin().identify_and_queues().io()
    pdu = P.write_in_capsule(s.cid(), s.lba, P.pattern(512, 5), ddgst=True)
    step = s.add(1, pdu, "ddgst-wrong", expect=0)
    step.data = step.data[:-4] + bytes(4)
    step.redigest = False
    s.add(1, P.read(s.cid(), s.lba, 1, ddgst=True), "read", expect=2)
    add("T9 data digest mismatch on in-capsule data", s)
    s = Session("tab-h2c-last", digests=0).admin().identify_and_queues().io()
    cid = s.cid()
    s.add(1, P.write_r2t(cid, s.lba, 32768), "write-r2t")
    s.add(1, P.h2c_data(cid, 0, 0, P.pattern(32768, 6), last=False), "h2c-no-last",
          ttag_from_r2t=True)  # fmt: skip
    add("T10 H2CData completing the transfer without LAST_PDU", s)
    s = Session("tab-h2c-cccid").admin().identify_and_queues().io()
    cid = s.cid()
    s.add(1, P.write_r2t(cid, s.lba, 32768), "write-r2t")
    s.add(1, P.h2c_data(cid + 100, 0, 0, P.pattern(32768, 7)), "h2c-wrong-cccid",
          ttag_from_r2t=True)  # fmt: skip
    add("T11 H2CData with the right TTAG and a wrong CCCID", s)
    s = Session("tab-aen-default").admin()
    s.add(0, P.get_features(s.cid(), 0x0B), "get-async-event-config")
    s.add(0, P.set_features(s.cid(), 0x0B, 0x1F), "set-smart-warnings")
    add("T12 Asynchronous Event Configuration before and after the host sets it", s)
    s = Session("tab-keep-alive-kato").admin(kato=5000)
    s.add(0, P.set_features(s.cid(), 0x0F, 2500), "set-kato")
    s.add(0, P.get_features(s.cid(), 0x0F), "get-kato")
    add("T13 KATO in whole seconds", s)
    # One case for each receive-path row otherwise shown only by mutations or the sweep.
    s = Session("tab-bad-type").admin()
    pdu = P.property_get(s.cid(), P.PROP_CSTS)
    pdu.data[0] = 0x05  # CapsuleResp: not a PDU a host sends
    s.add(0, pdu, "bad-pdu-type", expect=0)
    add("T14 a PDU type the host may not send", s)
    s = Session("tab-bad-hlen").admin()
    pdu = P.property_get(s.cid(), P.PROP_CSTS)
    pdu.data[2] = 24
    s.add(0, pdu, "bad-hlen", expect=0)
    add("T15 CapsuleCmd with HLEN 24", s)
    s = Session("tab-extra-bytes").admin()
    pdu = P.property_get(s.cid(), P.PROP_CSTS)
    pdu.data += bytes(8)
    pdu.data[4:8] = len(pdu.data).to_bytes(4, "little")
    s.add(0, pdu, "capsule-with-trailing-bytes", expect=0)
    add("T16 CapsuleCmd without SGL data but PLEN with 8 more bytes", s)
    s = Session("tab-offset-sgl-read").admin()
    entry = P.sqe(0x06, s.cid(), sgl_type=P.SGL_OFFSET, sgl_length=4096, cdw=(1,))
    s.add(0, P.capsule(entry), "identify-offset-sgl-no-data")
    s.probe_admin()
    add("T17 Identify whose SGL is an in-capsule descriptor, without data", s)
    s = Session("tab-log-length").admin()
    entry = P.get_log_page(s.cid(), 0x02, 512)
    entry.data[40:44] = (1024).to_bytes(4, "little")  # SGL says 1 KiB, NUMD 512 bytes
    s.add(0, entry, "log-page-sgl-longer")
    s.probe_admin()
    add("T18 Get Log Page whose SGL is longer than NUMD", s)
    s = Session("tab-auth").admin()
    entry = P.sqe(P.FABRICS, s.cid())
    entry[4] = P.FCTYPE_AUTH_SEND
    s.add(0, P.capsule(entry), "auth-send")
    s.probe_admin()
    add("T19 Authentication Send without authentication set up", s)
    s = Session("tab-vendor-admin").admin()
    s.add(0, P.capsule(P.sqe(0xC1, s.cid())), "vendor-admin")
    s.probe_admin()
    add("T20 a vendor-specific admin opcode", s)
    s = Session("tab-inactive-ns").admin().identify_and_queues().io()
    s.add(1, P.read(s.cid(), 0, 1, nsid=7), "read-nsid-7")
    s.add(1, P.read(s.cid(), 0, 1), "read", expect=2)
    add("T21 Read of an inactive namespace", s)
    s = Session("tab-big-in-capsule").admin().identify_and_queues().io()
    s.add(1, P.write_in_capsule(s.cid(), s.lba, P.pattern(20480, 8)), "write-20k-in-capsule",
          expect=0)  # fmt: skip
    add("T22 in-capsule write above the in-capsule size", s)
    return out
