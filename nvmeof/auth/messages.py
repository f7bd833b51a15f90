"""DH-HMAC-CHAP messages (the AUTH_Send / AUTH_Receive data) and the two commands.

Declared once with ``construct`` after ``include/linux/nvme.h``:
``struct nvmf_auth_dhchap_negotiate_data`` (8 bytes + 64-byte protocol descriptors),
``_protocol_descriptor``, ``_challenge_data`` / ``_reply_data`` / ``_success1_data``
(16-byte heads followed by variable values), ``_success2_data`` (16 bytes) and
``_failure_data`` (8 bytes, failure1 and failure2), ``struct nvmf_auth_send_command`` /
``_receive_command`` (64-byte fabrics commands, FCTYPE 0x05 / 0x06).

Every ``parse_*`` raises ValueError, and only ValueError, on bytes it cannot read. The parsers
keep the raw length fields (HL, DHVLEN, HALEN, DHLEN, NAPD) so the state machines can judge
them the way the kernel does; the builders compute them from the values given.
"""

from __future__ import annotations

from dataclasses import dataclass

from construct import Bytes, Default, Int8ul, Int16ul, Int32ul, Struct

from nvmeof.auth.constants import (
    DHCHAP_AUTH_ID,
    MAX_DH_IDS,
    MAX_HASH_IDS,
    RESCODE_AUTHENTICATION_FAILED,
    SECP_DHCHAP,
    SPSP0_DHCHAP,
    SPSP1_DHCHAP,
    AuthType,
    DhGroup,
    HashId,
    MessageId,
)
from nvmeof.constants import FabricsType
from nvmeof.wire.fields import Reserved, build_strict, parse_strict
from nvmeof.wire.sqe import SGL_DESCRIPTOR

HEADER_SIZE = 6
NEGOTIATE_HEAD_SIZE = 8
PROTOCOL_DESCRIPTOR_SIZE = 64
CHALLENGE_HEAD_SIZE = REPLY_HEAD_SIZE = SUCCESS1_HEAD_SIZE = SUCCESS2_SIZE = 16
FAILURE_SIZE = 8
#: Smallest negotiate nvmet accepts: the head and one descriptor (``nvmet_auth_negotiate``).
NEGOTIATE_MIN_SIZE = NEGOTIATE_HEAD_SIZE + PROTOCOL_DESCRIPTOR_SIZE

#: The first 6 bytes every message starts with.
HEADER = Struct(
    "auth_type" / Int8ul,
    "auth_id" / Int8ul,
    Reserved(2),
    "t_id" / Int16ul,
)

NEGOTIATE_HEAD = Struct(
    "auth_type" / Default(Int8ul, AuthType.COMMON),
    "auth_id" / Default(Int8ul, MessageId.NEGOTIATE),
    Reserved(2),
    "t_id" / Int16ul,
    "sc_c" / Default(Int8ul, 0),
    "napd" / Default(Int8ul, 1),
)

PROTOCOL_DESCRIPTOR = Struct(
    "authid" / Default(Int8ul, DHCHAP_AUTH_ID),
    Reserved(1),
    "halen" / Int8ul,
    "dhlen" / Int8ul,
    # Hash ids in bytes 0-29, DH group ids in bytes 30-59.
    "idlist" / Default(Bytes(60), bytes(60)),
)

CHALLENGE_HEAD = Struct(
    "auth_type" / Default(Int8ul, AuthType.DHCHAP),
    "auth_id" / Default(Int8ul, MessageId.CHALLENGE),
    Reserved(2),
    "t_id" / Int16ul,
    "hl" / Int8ul,
    Reserved(1),
    "hashid" / Int8ul,
    "dhgid" / Default(Int8ul, DhGroup.NULL),
    "dhvlen" / Default(Int16ul, 0),
    "seqnum" / Int32ul,
)

REPLY_HEAD = Struct(
    "auth_type" / Default(Int8ul, AuthType.DHCHAP),
    "auth_id" / Default(Int8ul, MessageId.REPLY),
    Reserved(2),
    "t_id" / Int16ul,
    "hl" / Int8ul,
    Reserved(1),
    "cvalid" / Default(Int8ul, 0),
    Reserved(1),
    "dhvlen" / Default(Int16ul, 0),
    "seqnum" / Default(Int32ul, 0),
)

SUCCESS1_HEAD = Struct(
    "auth_type" / Default(Int8ul, AuthType.DHCHAP),
    "auth_id" / Default(Int8ul, MessageId.SUCCESS1),
    Reserved(2),
    "t_id" / Int16ul,
    "hl" / Int8ul,
    Reserved(1),
    "rvalid" / Default(Int8ul, 0),
    Reserved(7),
)

SUCCESS2 = Struct(
    "auth_type" / Default(Int8ul, AuthType.DHCHAP),
    "auth_id" / Default(Int8ul, MessageId.SUCCESS2),
    Reserved(2),
    "t_id" / Int16ul,
    Reserved(10),
)

FAILURE = Struct(
    "auth_type" / Default(Int8ul, AuthType.COMMON),
    "auth_id" / Int8ul,  # FAILURE1 (controller to host) or FAILURE2 (host to controller)
    Reserved(2),
    "t_id" / Int16ul,
    "rescode" / Default(Int8ul, RESCODE_AUTHENTICATION_FAILED),
    "rescode_exp" / Int8ul,
)


def _auth_command(fctype: int, length_name: str) -> Struct:
    command = Struct(
        "opcode" / Default(Int8ul, 0x7F),
        "flags" / Default(Int8ul, 0x40),
        "cid" / Default(Int16ul, 0),
        "fctype" / Default(Int8ul, fctype),
        Reserved(19),
        "sgl" / Default(SGL_DESCRIPTOR, {}),
        Reserved(1),
        "spsp0" / Default(Int8ul, SPSP0_DHCHAP),
        "spsp1" / Default(Int8ul, SPSP1_DHCHAP),
        "secp" / Default(Int8ul, SECP_DHCHAP),
        length_name / Int32ul,
        Reserved(16),
    )
    assert command.sizeof() == 64, command.sizeof()
    return command


#: AUTH_Send: TL is the byte count of the message the host sends.
AUTH_SEND_COMMAND = _auth_command(FabricsType.AUTH_SEND, "tl")
#: AUTH_Receive: AL is the byte count the host will take (nvmet returns exactly AL bytes).
AUTH_RECEIVE_COMMAND = _auth_command(FabricsType.AUTH_RECEIVE, "al")
#: Byte offsets in both commands, for nvmet's error locations (``req->error_loc``).
OFFSET_SPSP0 = 41
OFFSET_SPSP1 = 42
OFFSET_SECP = 43
OFFSET_LENGTH = 44  # TL of AUTH_Send, AL of AUTH_Receive


@dataclass(frozen=True)
class MessageHeader:
    auth_type: int
    auth_id: int
    t_id: int


@dataclass(frozen=True)
class ProtocolDescriptor:
    """One negotiate protocol descriptor, its id list as raw bytes."""

    halen: int
    dhlen: int
    idlist: bytes = bytes(60)
    authid: int = DHCHAP_AUTH_ID

    @classmethod
    def dhchap(
        cls,
        hash_ids: tuple[int, ...] = tuple(HashId),
        dh_groups: tuple[int, ...] = tuple(DhGroup),
    ) -> ProtocolDescriptor:
        """A DH-HMAC-CHAP descriptor; the defaults are what the Linux host offers
        (``nvme_auth_set_dhchap_negotiate_data``: SHA-256/384/512, NULL and ffdhe2048-8192)."""
        if len(hash_ids) > MAX_HASH_IDS or len(dh_groups) > MAX_DH_IDS:
            raise ValueError("at most 30 hash ids and 30 DH group ids")
        idlist = bytes(hash_ids).ljust(MAX_HASH_IDS, b"\0") + bytes(dh_groups).ljust(
            MAX_DH_IDS, b"\0"
        )
        return cls(halen=len(hash_ids), dhlen=len(dh_groups), idlist=idlist)

    @property
    def hash_ids(self) -> tuple[int, ...]:
        return tuple(self.idlist[: min(self.halen, MAX_HASH_IDS)])

    @property
    def dh_group_ids(self) -> tuple[int, ...]:
        return tuple(self.idlist[MAX_HASH_IDS : MAX_HASH_IDS + min(self.dhlen, MAX_DH_IDS)])


@dataclass(frozen=True)
class Negotiate:
    t_id: int
    descriptors: tuple[ProtocolDescriptor, ...] = (ProtocolDescriptor.dhchap(),)
    sc_c: int = 0
    #: NAPD as sent (a parsed negotiate may claim more descriptors than it carries).
    napd: int | None = None


@dataclass(frozen=True)
class Challenge:
    t_id: int
    hash_id: int
    seqnum: int
    challenge: bytes  # C1, HL bytes
    dh_group: int = DhGroup.NULL
    dh_value: bytes = b""  # the controller's public value, DHVLEN bytes


@dataclass(frozen=True)
class Reply:
    t_id: int
    response: bytes  # R1, HL bytes
    #: C2, HL bytes; the Linux host sends HL zero bytes when it does not challenge.
    challenge: bytes
    cvalid: bool = False
    seqnum: int = 0  # S2, 0 when not challenging
    dh_value: bytes = b""  # the host's public value


@dataclass(frozen=True)
class Success1:
    t_id: int
    hl: int
    response: bytes | None = None  # R2 when RVALID


@dataclass(frozen=True)
class Success2:
    t_id: int


@dataclass(frozen=True)
class Failure:
    t_id: int
    reason_explanation: int
    message: int = MessageId.FAILURE1  # or MessageId.FAILURE2
    reason: int = RESCODE_AUTHENTICATION_FAILED


def parse_header(data: bytes) -> MessageHeader:
    head = parse_strict(HEADER, data[:HEADER_SIZE])
    return MessageHeader(head.auth_type, head.auth_id, head.t_id)


def build_negotiate(message: Negotiate) -> bytes:
    napd = len(message.descriptors) if message.napd is None else message.napd
    head = build_strict(NEGOTIATE_HEAD, dict(t_id=message.t_id, sc_c=message.sc_c, napd=napd))
    return head + b"".join(
        build_strict(
            PROTOCOL_DESCRIPTOR,
            dict(authid=d.authid, halen=d.halen, dhlen=d.dhlen, idlist=d.idlist),
        )
        for d in message.descriptors
    )


def parse_negotiate(data: bytes) -> Negotiate:
    """A negotiate of at least one descriptor; descriptors past the data are not read."""
    if len(data) < NEGOTIATE_MIN_SIZE:
        raise ValueError(f"negotiate is {len(data)} bytes, less than {NEGOTIATE_MIN_SIZE}")
    head = parse_strict(NEGOTIATE_HEAD, data[:NEGOTIATE_HEAD_SIZE])
    fit = (len(data) - NEGOTIATE_HEAD_SIZE) // PROTOCOL_DESCRIPTOR_SIZE
    descriptors = []
    for index in range(max(1, min(head.napd, fit))):
        offset = NEGOTIATE_HEAD_SIZE + index * PROTOCOL_DESCRIPTOR_SIZE
        raw = parse_strict(PROTOCOL_DESCRIPTOR, data[offset : offset + PROTOCOL_DESCRIPTOR_SIZE])
        descriptors.append(ProtocolDescriptor(raw.halen, raw.dhlen, raw.idlist, raw.authid))
    return Negotiate(head.t_id, tuple(descriptors), head.sc_c, head.napd)


def build_challenge(message: Challenge) -> bytes:
    head = build_strict(
        CHALLENGE_HEAD,
        dict(
            t_id=message.t_id,
            hl=len(message.challenge),
            hashid=message.hash_id,
            dhgid=message.dh_group,
            dhvlen=len(message.dh_value),
            seqnum=message.seqnum,
        ),
    )
    return head + message.challenge + message.dh_value


def parse_challenge(data: bytes) -> Challenge:
    head = parse_strict(CHALLENGE_HEAD, data[:CHALLENGE_HEAD_SIZE])
    end = CHALLENGE_HEAD_SIZE + head.hl + head.dhvlen
    if len(data) < end:
        raise ValueError(f"challenge needs {end} bytes, has {len(data)}")
    values = data[CHALLENGE_HEAD_SIZE:end]
    return Challenge(
        t_id=head.t_id,
        hash_id=head.hashid,
        seqnum=head.seqnum,
        challenge=bytes(values[: head.hl]),
        dh_group=head.dhgid,
        dh_value=bytes(values[head.hl :]),
    )


def build_reply(message: Reply) -> bytes:
    if len(message.challenge) != len(message.response):
        raise ValueError("reply's challenge and response must both be HL bytes")
    head = build_strict(
        REPLY_HEAD,
        dict(
            t_id=message.t_id,
            hl=len(message.response),
            cvalid=int(message.cvalid),
            dhvlen=len(message.dh_value),
            seqnum=message.seqnum,
        ),
    )
    return head + message.response + message.challenge + message.dh_value


def parse_reply(data: bytes) -> Reply:
    head = parse_strict(REPLY_HEAD, data[:REPLY_HEAD_SIZE])
    hl = head.hl
    end = REPLY_HEAD_SIZE + 2 * hl + head.dhvlen
    if len(data) < end:
        raise ValueError(f"reply needs {end} bytes, has {len(data)}")
    values = bytes(data[REPLY_HEAD_SIZE:end])
    return Reply(
        t_id=head.t_id,
        response=values[:hl],
        challenge=values[hl : 2 * hl],
        cvalid=bool(head.cvalid),
        seqnum=head.seqnum,
        dh_value=values[2 * hl :],
    )


def build_success1(message: Success1) -> bytes:
    rvalid = message.response is not None
    head = build_strict(SUCCESS1_HEAD, dict(t_id=message.t_id, hl=message.hl, rvalid=int(rvalid)))
    return head + (message.response or b"")


def parse_success1(data: bytes) -> Success1:
    head = parse_strict(SUCCESS1_HEAD, data[:SUCCESS1_HEAD_SIZE])
    if not head.rvalid:
        return Success1(head.t_id, head.hl)
    end = SUCCESS1_HEAD_SIZE + head.hl
    if len(data) < end:
        raise ValueError(f"success1 needs {end} bytes, has {len(data)}")
    return Success1(head.t_id, head.hl, bytes(data[SUCCESS1_HEAD_SIZE:end]))


def build_success2(message: Success2) -> bytes:
    return build_strict(SUCCESS2, dict(t_id=message.t_id))


def parse_success2(data: bytes) -> Success2:
    return Success2(parse_strict(SUCCESS2, data[:SUCCESS2_SIZE]).t_id)


def build_failure(message: Failure) -> bytes:
    return build_strict(
        FAILURE,
        dict(
            auth_id=message.message,
            t_id=message.t_id,
            rescode=message.reason,
            rescode_exp=message.reason_explanation,
        ),
    )


def parse_failure(data: bytes) -> Failure:
    raw = parse_strict(FAILURE, data[:FAILURE_SIZE])
    return Failure(raw.t_id, raw.rescode_exp, raw.auth_id, raw.rescode)
