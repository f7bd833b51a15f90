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
    asked: dict[int, int] = {}
    for step in case.steps:
        data = step.render(None, None)
        if data and data[0] == P.ICREQ and len(data) >= 12:
            asked[step.conn] = data[11] & 3
        elif step.conn in asked:
            sent = (1 if step.hdgst else 0) | (2 if step.ddgst else 0)
            if sent != asked[step.conn]:
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
]


def explain(case: Case, ref: Observation, ours: Observation) -> Row | None:
    """The row that explains why ``case`` diverges, if any."""
    for row in TABLE:
        if row.applies(case, ref, ours):
            return row
    return None


def table_cases() -> list[Case]:
    return []
