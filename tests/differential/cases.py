"""Cases: what the differential harness sends. Every case is plain data (JSON round trip).

A :class:`Step` is one host PDU sent on connection ``conn``. Two things are learned from the
target while a case runs and patched into later steps, because they legitimately differ between
targets: the CNTLID an admin Connect returned (into an I/O Connect's data) and the TTAG of the
last R2T on the connection (into an H2CData). Mutations are applied after those patches; a
mutation of a patched field is an XOR, so it is wrong on both targets alike.

Sources (issue 15): :func:`table_cases` (one per row of docs/TOLERANCE.md), :func:`mutation_cases`
(one field of one PDU of a valid session changed, seeded), :func:`sequence_cases` (orderings
and multi-connection stories) and :func:`opcode_cases` (every opcode on both queue types, with
and without data).
"""

from __future__ import annotations

import hashlib
import random
import struct
from dataclasses import asdict, dataclass, field
from typing import Any

from tests.differential import pdus as P
from tests.differential.pdus import Field, Pdu

NQN = "nqn.2014-08.org.nvmexpress:linuxvm-test"  # what examples/nvmet-target.sh serves
BLOCK = 512
NS_BLOCKS = (256 << 20) // BLOCK


@dataclass
class Op:
    """A change to a step's bytes, applied after the patches: ``set`` or ``xor`` at offset."""

    offset: int
    value: bytes
    mode: str = "set"


@dataclass
class Step:
    conn: int
    data: bytes
    label: str
    expect: int = 1  # PDUs the unmutated step gets back (a hint to stop waiting early)
    hlen: int = 0
    hdgst: bool = False
    ddgst: bool = False
    cntlid_at: int | None = None  # patch the admin CNTLID (u16) here
    ttag_from_r2t: bool = False  # patch the TTAG (offset 10) from this connection's last R2T
    ops: list[Op] = field(default_factory=list)
    redigest: bool = True
    pause: float = 0.0  # seconds to wait before sending (keep-alive stories)
    keep_dw0: bool = False  # compare DW0/DW1 of this command's successful completion too

    @classmethod
    def of(cls, conn: int, pdu: Pdu, label: str, expect: int = 1, **kw: Any) -> Step:
        return cls(conn, bytes(pdu.data), label, expect, pdu.hlen, pdu.hdgst, pdu.ddgst, **kw)

    def render(self, cntlid: int | None, ttag: int | None) -> bytes:
        """The bytes to send, given what the target told us so far."""
        out = bytearray(self.data)
        if self.cntlid_at is not None and cntlid is not None:
            struct.pack_into("<H", out, self.cntlid_at, cntlid)
        if self.ttag_from_r2t and ttag is not None and len(out) >= 12:
            struct.pack_into("<H", out, 10, ttag)
        for op in self.ops:
            end = op.offset + len(op.value)
            if end > len(out):
                continue
            if op.mode == "xor":
                out[op.offset : end] = bytes(
                    a ^ b for a, b in zip(out[op.offset : end], op.value, strict=True)
                )
            else:
                out[op.offset : end] = op.value
        if self.redigest and (self.hdgst or self.ddgst):
            pdu = Pdu(out, self.hlen, self.hdgst, self.ddgst)
            pdu.redigest()
        return bytes(out)


@dataclass
class Case:
    name: str
    steps: list[Step]
    source: str = "table"
    note: str = ""
    settle: float = 0.0  # extra seconds to watch after the last step (timers)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        for s in d["steps"]:
            s["data"] = s["data"].hex()
            for op in s["ops"]:
                op["value"] = op["value"].hex()
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Case:
        steps = []
        for s in d["steps"]:
            ops = [Op(o["offset"], bytes.fromhex(o["value"]), o["mode"]) for o in s["ops"]]
            steps.append(Step(**{**s, "data": bytes.fromhex(s["data"]), "ops": ops}))
        return cls(d["name"], steps, d["source"], d["note"], d.get("settle", 0.0))

    def fingerprint(self) -> str:
        """SHA-256 of every byte the case sends (recorded answers belong to exactly these)."""
        digest = hashlib.sha256()
        for step in self.steps:
            digest.update(step.conn.to_bytes(2, "little") + step.render(None, None))
        return digest.hexdigest()

    @property
    def connections(self) -> int:
        return max(s.conn for s in self.steps) + 1


# -- identities -------------------------------------------------------------------------------


def host_identity(tag: str) -> tuple[str, bytes]:
    """A host NQN and Host ID unique to one case (cases run concurrently on one target)."""
    digest = random.Random(tag).getrandbits(128).to_bytes(16, "little")
    hexid = digest.hex()
    uuid = f"{hexid[:8]}-{hexid[8:12]}-{hexid[12:16]}-{hexid[16:20]}-{hexid[20:]}"
    return f"nqn.2014-08.org.nvmexpress:uuid:{uuid}", digest


# -- the valid session ------------------------------------------------------------------------


@dataclass
class Session:
    """Builds the steps of a valid host session (the Linux host's byte layout)."""

    tag: str
    digests: int = 0  # ICReq DGST: bit 0 header, bit 1 data
    subnqn: str = NQN
    steps: list[Step] = field(default_factory=list)
    _cid: int = 0

    def __post_init__(self) -> None:
        self.hostnqn, self.hostid = host_identity(self.tag)
        self.lba = random.Random(self.tag + "lba").randrange(0, NS_BLOCKS - 256, 128)

    @property
    def dg(self) -> dict[str, bool]:
        return {"hdgst": bool(self.digests & 1), "ddgst": bool(self.digests & 2)}

    def cid(self) -> int:
        self._cid += 1
        return self._cid

    def add(self, conn: int, pdu: Pdu, label: str, expect: int = 1, **kw: Any) -> Step:
        step = Step.of(conn, pdu, label, expect, **kw)
        self.steps.append(step)
        return step

    def admin(self, *, kato: int = 0, enable: bool = True, sqsize: int = 31) -> Session:
        self.add(0, P.icreq(dgst=self.digests), "icreq")
        self.add(0, P.connect(self.cid(), qid=0, sqsize=sqsize, hostnqn=self.hostnqn,
                              subnqn=self.subnqn, hostid=self.hostid, kato=kato, **self.dg),
                 "admin-connect")  # fmt: skip
        if enable:
            self.add(0, P.property_set(self.cid(), P.PROP_CC, P.CC_ENABLE, **self.dg), "cc-enable")
            self.add(0, P.property_get(self.cid(), P.PROP_CSTS, **self.dg), "csts")
        return self

    def identify_and_queues(self) -> Session:
        self.add(0, P.identify(self.cid(), 1, **self.dg), "identify-ctrl", expect=2)
        self.add(0, P.set_features(self.cid(), 0x07, 0, **self.dg), "set-num-queues")
        return self

    def io(self, conn: int = 1, qid: int = 1, sqsize: int = 31) -> Session:
        self.add(conn, P.icreq(dgst=self.digests), "io-icreq")
        pdu = P.connect(self.cid(), qid=qid, sqsize=sqsize, hostnqn=self.hostnqn,
                        subnqn=self.subnqn, hostid=self.hostid, cntlid=0, **self.dg)  # fmt: skip
        self.add(conn, pdu, "io-connect", cntlid_at=pdu.pdo + 16)
        return self

    def io_commands(self, conn: int = 1) -> Session:
        lba = self.lba
        self.add(conn, P.write_in_capsule(self.cid(), lba, P.pattern(4096, 1), **self.dg),
                 "write-in-capsule")  # fmt: skip
        cid = self.cid()
        self.add(conn, P.write_r2t(cid, lba + 8, 32768, **self.dg), "write-r2t")
        self.add(conn, P.h2c_data(cid, 0, 0, P.pattern(32768, 2), **self.dg), "h2c-data",
                 ttag_from_r2t=True)  # fmt: skip
        self.add(conn, P.read(self.cid(), lba, 72, **self.dg), "read", expect=2)
        self.add(conn, P.flush(self.cid(), **self.dg), "flush")
        return self

    def probe_admin(self) -> Session:
        """A harmless admin command: does the queue still serve?"""
        self.add(0, P.get_features(self.cid(), 0x07, **self.dg), "probe-admin")
        return self

    def full(self) -> Session:
        return self.admin().identify_and_queues().io().io_commands().probe_admin()


def base_session(tag: str, digests: int = 0) -> list[Step]:
    return Session(tag, digests).full().steps


# -- mutations --------------------------------------------------------------------------------


def _int_values(rng: random.Random, old: int, size: int) -> int:
    top = (1 << (8 * size)) - 1
    choice = rng.randrange(8)
    if choice == 0:
        return 0
    if choice == 1:
        return top
    if choice == 2:
        return (old + 1) & top
    if choice == 3:
        return (old - 1) & top
    if choice == 4:
        return old ^ (1 << rng.randrange(8 * size))
    if choice == 5:
        return rng.randrange(1, 256) & top
    return rng.randrange(top + 1)


def _mutate_field(rng: random.Random, step: Step, fld: Field) -> tuple[Op, str]:
    old = bytes(step.data[fld.offset : fld.offset + fld.size])
    patched = (step.cntlid_at is not None and fld.offset == step.cntlid_at) or (
        step.ttag_from_r2t and fld.name == "h2c.ttag"
    )
    if patched:  # wrong on both targets, whatever each one assigned
        delta = rng.randrange(1, 1 << (8 * fld.size)).to_bytes(fld.size, "little")
        return Op(fld.offset, delta, "xor"), f"{fld.name} ^= {delta.hex()}"
    if fld.kind == "nqn":
        text = old.rstrip(b"\0").decode(errors="replace")
        variants = [
            b"",
            text[:-1].encode(),
            (text + "x").encode(),
            b"A" * fld.size,
            b"nqn.2014-08.org.nvmexpress:uuid:" + bytes(rng.randrange(32, 127) for _ in range(36)),
            text.upper().encode(),
            text.encode() + b"\0junk",
        ]
        new = rng.choice(variants)[: fld.size].ljust(fld.size, b"\0")
        return Op(fld.offset, new), f"{fld.name} = {new.rstrip(bytes(1))[:48]!r}"
    if fld.kind == "bytes":
        pos = rng.randrange(fld.size)
        val = rng.randrange(1, 256)
        return Op(fld.offset + pos, bytes([val])), f"{fld.name}[{pos}] = {val:#x}"
    value = _int_values(rng, int.from_bytes(old, "little"), fld.size)
    return Op(fld.offset, value.to_bytes(fld.size, "little")), f"{fld.name} = {value:#x}"


def _resize_data(rng: random.Random, step: Step) -> tuple[bytes, str] | None:
    """In-capsule data shorter or longer than the SGL says, PLEN kept consistent."""
    data = step.data
    pdo = data[3]
    if data[0] != P.CAPSULE_CMD or not pdo:
        return None
    dd = 4 if step.ddgst else 0
    payload = data[pdo : len(data) - dd]
    delta = rng.choice([-len(payload) + 4, -512, -4, -1, 1, 4, 512, 4096])
    if len(payload) + delta <= 0:
        delta = -len(payload) + 4
    new_payload = payload[: len(payload) + delta] + P.pattern(max(delta, 0), 9)
    out = bytearray(data[:pdo]) + new_payload + bytes(dd)
    struct.pack_into("<I", out, 4, len(out))
    return bytes(out), f"in-capsule data {len(payload)} -> {len(new_payload)} bytes"


def mutation_cases(seed: int, count: int) -> list[Case]:
    """``count`` sessions, each with one field of one PDU changed (``seed`` makes them)."""
    rng = random.Random(seed)
    out = []
    for i in range(count):
        digests = rng.choice((0, 0, 0, 3, 1, 2))
        tag = f"mut-{seed}-{i}"
        steps = base_session(tag, digests)
        index = rng.randrange(len(steps))
        step = steps[index]
        rebuilt = _pdu_fields(step)
        if rng.random() < 0.08 and (resized := _resize_data(rng, step)) is not None:
            step.data, what = resized
        elif rng.random() < 0.05 and step.hdgst:
            step.ops.append(Op(step.hlen, rng.randbytes(4)))
            step.redigest = False
            what = "header digest garbled"
        elif rng.random() < 0.05 and step.ddgst and step.data[3]:
            step.ops.append(Op(len(step.data) - 4, rng.randbytes(4), "xor"))
            step.redigest = False
            what = "data digest garbled"
        else:
            op, what = _mutate_field(rng, step, rng.choice(rebuilt))
            step.ops.append(op)
        dg = {0: "", 1: " [hdgst]", 2: " [ddgst]", 3: " [hdgst+ddgst]"}[digests]
        out.append(Case(f"{tag}: {step.label}: {what}{dg}", steps, "mutation"))
    return out


def _pdu_fields(step: Step) -> list[Field]:
    """The mutable fields of a step's PDU (rebuilt from its bytes)."""
    kind = step.data[0]
    if kind == P.ICREQ:
        return P.CH_FIELDS + P.ICREQ_FIELDS
    if kind == P.H2C_DATA:
        return P.CH_FIELDS + P.H2C_FIELDS
    fields = P.CH_FIELDS + P.SQE_FIELDS
    if step.data[8] == P.FABRICS:
        fields = fields + P.FABRICS_FIELDS
        fctype = step.data[12]
        if fctype == P.FCTYPE_CONNECT:
            pdo = step.data[3]
            fields = fields + P.CONNECT_FIELDS
            fields = fields + [Field(f.name, pdo + f.offset, f.size, f.kind)
                               for f in P.CONNECT_DATA_FIELDS]  # fmt: skip
        elif fctype in (P.FCTYPE_PROPERTY_GET, P.FCTYPE_PROPERTY_SET):
            fields = fields + P.PROPERTY_FIELDS
    return fields
