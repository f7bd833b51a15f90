"""Golden bytes of the DH-HMAC-CHAP messages and commands (nvmeof/auth/messages.py), written by
hand from the ``nvmf_auth_*`` structs of include/linux/nvme.h, and a hypothesis check that no
parser fails on random bytes other than with ValueError."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, strategies as st

from nvmeof.auth.constants import DhGroup, HashId, MessageId
from nvmeof.auth.messages import (
    AUTH_RECEIVE_COMMAND,
    AUTH_SEND_COMMAND,
    Challenge,
    Failure,
    Negotiate,
    ProtocolDescriptor,
    Reply,
    Success1,
    Success2,
    build_challenge,
    build_failure,
    build_negotiate,
    build_reply,
    build_success1,
    build_success2,
    parse_challenge,
    parse_failure,
    parse_header,
    parse_negotiate,
    parse_reply,
    parse_success1,
    parse_success2,
)
from nvmeof.wire.fields import build_strict, parse_strict

T_ID = 0x0102


def test_linux_host_negotiate_golden() -> None:
    # nvme_auth_set_dhchap_negotiate_data: common message 0, SC_C 0, NAPD 1, one descriptor
    # with AUTHID 1, HALEN 3 (SHA-256/384/512), DHLEN 6 (NULL, ffdhe2048..8192 from byte 30).
    data = build_negotiate(Negotiate(T_ID))
    expected = bytes.fromhex("0000 0000 0201 00 01".replace(" ", ""))
    expected += bytes.fromhex("01000306") + bytes([1, 2, 3]) + bytes(27)
    expected += bytes([0, 1, 2, 3, 4, 5]) + bytes(24)
    assert data == expected
    assert len(data) == 72
    parsed = parse_negotiate(data)
    assert parsed.napd == 1 and parsed.sc_c == 0 and parsed.t_id == T_ID
    assert parsed.descriptors[0].hash_ids == (1, 2, 3)
    assert parsed.descriptors[0].dh_group_ids == (0, 1, 2, 3, 4, 5)


def test_challenge_golden() -> None:
    message = Challenge(T_ID, HashId.SHA256, 0x11223344, b"\xaa" * 32)
    data = build_challenge(message)
    assert data == bytes.fromhex("01010000020120000100000044332211") + b"\xaa" * 32
    with_dh = Challenge(T_ID, HashId.SHA384, 7, b"\x01" * 48, DhGroup.FFDHE2048, b"\x02" * 256)
    data = build_challenge(with_dh)
    assert data[:16] == bytes.fromhex("01010000020130000201000107000000")
    assert len(data) == 16 + 48 + 256
    assert parse_challenge(data) == with_dh
    assert parse_challenge(data + bytes(100)) == with_dh  # the host reads a zero-filled 4 KiB


def test_reply_golden() -> None:
    message = Reply(T_ID, b"\x11" * 32, b"\x22" * 32, cvalid=True, seqnum=0x01020304)
    data = build_reply(message)
    assert data == bytes.fromhex("01020000020120000100000004030201") + b"\x11" * 32 + b"\x22" * 32
    one_way = Reply(T_ID, b"\x11" * 32, bytes(32), dh_value=b"\x05" * 256)
    data = build_reply(one_way)
    assert data[:16] == bytes.fromhex("01020000020120000000000100000000")
    assert parse_reply(data) == one_way
    with pytest.raises(ValueError, match="HL bytes"):
        build_reply(Reply(T_ID, b"\x11" * 32, b""))


def test_success_and_failure_golden() -> None:
    assert build_success1(Success1(T_ID, 48)) == bytes.fromhex("01030000020130000000000000000000")
    with_response = build_success1(Success1(T_ID, 32, b"\x33" * 32))
    assert with_response == bytes.fromhex("01030000020120000100000000000000") + b"\x33" * 32
    assert parse_success1(with_response) == Success1(T_ID, 32, b"\x33" * 32)
    assert build_success2(Success2(T_ID)) == bytes.fromhex("01040000020100000000000000000000")
    failure1 = build_failure(Failure(T_ID, 7))
    assert failure1 == bytes.fromhex("00f1000002010107")
    failure2 = build_failure(Failure(T_ID, 1, MessageId.FAILURE2))
    assert failure2 == bytes.fromhex("00f0000002010101")
    assert parse_failure(failure2) == Failure(T_ID, 1, MessageId.FAILURE2)
    assert parse_header(failure1).auth_id == MessageId.FAILURE1


def test_auth_commands_golden() -> None:
    # nvme_auth_submit: SECP 0xE9, SPSP0 = SPSP1 = 1, TL/AL in bytes 44-47.
    send = build_strict(AUTH_SEND_COMMAND, dict(cid=5, tl=72))
    assert send == (
        bytes.fromhex("7f40050005")
        + bytes(19)
        + bytes(15)
        + b"\x5a"
        + bytes.fromhex("000101e9")
        + (72).to_bytes(4, "little")
        + bytes(16)
    )
    receive = build_strict(AUTH_RECEIVE_COMMAND, dict(al=4096))
    assert receive[4] == 0x06 and receive[41:48] == bytes.fromhex("0101e900100000")
    parsed = parse_strict(AUTH_RECEIVE_COMMAND, receive)
    assert (parsed.secp, parsed.spsp0, parsed.spsp1, parsed.al) == (0xE9, 1, 1, 4096)


def test_descriptor_limits_and_raw_lengths() -> None:
    with pytest.raises(ValueError, match="at most 30"):
        ProtocolDescriptor.dhchap(hash_ids=(1,) * 31)
    # HALEN/DHLEN past 30 stay visible for the controller's check; the id lists are capped.
    odd = ProtocolDescriptor(halen=40, dhlen=0, idlist=bytes(range(60)))
    assert odd.hash_ids == tuple(range(30)) and odd.dh_group_ids == ()
    parsed = parse_negotiate(build_negotiate(Negotiate(1, (odd,), napd=3)))
    assert parsed.napd == 3 and parsed.descriptors == (odd,)
    with pytest.raises(ValueError, match="less than 72"):
        parse_negotiate(build_negotiate(Negotiate(1))[:71])


def test_truncated_messages_are_refused() -> None:
    data = build_challenge(Challenge(T_ID, 1, 1, bytes(32), 1, bytes(256)))
    with pytest.raises(ValueError, match="challenge needs 304 bytes"):
        parse_challenge(data[:-1])
    reply = build_reply(Reply(T_ID, bytes(32), bytes(32)))
    with pytest.raises(ValueError, match="reply needs 80 bytes"):
        parse_reply(reply[:-1])
    with pytest.raises(ValueError, match="success1 needs 48 bytes"):
        parse_success1(build_success1(Success1(T_ID, 32, bytes(32)))[:-1])
    with pytest.raises(ValueError, match="cannot parse"):
        parse_success2(bytes(15))


PARSERS: list[Callable[[bytes], Any]] = [
    parse_header,
    parse_negotiate,
    parse_challenge,
    parse_reply,
    parse_success1,
    parse_success2,
    parse_failure,
]


@pytest.mark.parametrize("parser", PARSERS, ids=lambda p: p.__name__)
@given(data=st.binary(max_size=400))
def test_parsers_raise_only_value_error(parser: Callable[[bytes], Any], data: bytes) -> None:
    with contextlib.suppress(ValueError):
        parser(data)


@given(
    t_id=st.integers(0, 0xFFFF),
    hash_id=st.integers(0, 255),
    seqnum=st.integers(0, 0xFFFFFFFF),
    challenge=st.binary(max_size=64),
    dh_value=st.binary(max_size=300),
    group=st.integers(0, 255),
)
def test_challenge_round_trip(
    t_id: int, hash_id: int, seqnum: int, challenge: bytes, dh_value: bytes, group: int
) -> None:
    message = Challenge(t_id, hash_id, seqnum, challenge, group, dh_value)
    assert parse_challenge(build_challenge(message)) == message
