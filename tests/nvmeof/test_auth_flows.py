"""Our host state machine against our controller state machine (nvmeof/auth/host.py,
nvmeof/auth/controller.py): every hash and DH group, one-way and bidirectional, and the
failure reason codes the kernel host and nvmet give."""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytest
from hypothesis import given, settings, strategies as st

from nvmeof.auth.constants import (
    CONNECT_AUTHREQ_ATR,
    AuthType,
    DhGroup,
    FailureReason,
    HashId,
    MessageId,
)
from nvmeof.auth.controller import (
    ControllerAuth,
    HostAuthConfig,
    QueueAuth,
    check_auth_command,
    expiry_seconds,
)
from nvmeof.auth.crypto import SequenceCounter
from nvmeof.auth.host import HostAuth, HostResult
from nvmeof.auth.messages import (
    Challenge,
    Failure,
    Negotiate,
    ProtocolDescriptor,
    Reply,
    Success1,
    build_challenge,
    build_failure,
    build_negotiate,
    build_reply,
    build_success1,
    parse_challenge,
    parse_failure,
    parse_success1,
)
from nvmeof.auth.secret import DhchapSecret, generate_secret
from nvmeof.status import StatusCode

HOSTNQN = "nqn.2014-08.org.nvmexpress:uuid:0b7d3b2a-1c5e-4d2f-9a61-3f0a2c9e7d11"
SUBNQN = "nqn.2024-01.io.example:subsys1"
RNG = random.Random(2026)
HOST_KEY = generate_secret(RNG.randbytes(32), 1)
CTRL_KEY = generate_secret(RNG.randbytes(48), 2)
OTHER_KEY = generate_secret(RNG.randbytes(32), 1)


@dataclass
class Pair:
    ctrl: ControllerAuth
    queue: QueueAuth
    host: HostAuth


def make_pair(
    config: HostAuthConfig,
    *,
    host_key: DhchapSecret = HOST_KEY,
    host_ctrl_key: DhchapSecret | None = None,
    seed: int = 1,
    t_id: int = 7,
) -> Pair:
    rng = random.Random(seed)
    seqnum = SequenceCounter.from_random(rng.randbytes)
    ctrl = ControllerAuth(
        config, hostnqn=HOSTNQN, subsysnqn=SUBNQN, random_bytes=rng.randbytes, seqnum=seqnum
    )
    host = HostAuth(
        host_key,
        ctrl_secret=host_ctrl_key,
        hostnqn=HOSTNQN,
        subsysnqn=SUBNQN,
        transaction_id=t_id,
        random_bytes=rng.randbytes,
        seqnum=seqnum,
    )
    return Pair(ctrl, ctrl.queue(0), host)


def run(pair: Pair) -> HostResult:
    """The plumbing's loop from nvmeof/auth/host.py's docstring."""
    queue, host = pair.queue, pair.host
    assert queue.auth_send(host.negotiate()).status.ok
    payload = host.handle_challenge(queue.auth_receive(host.receive_length).data)
    if payload is not None:
        queue.auth_send(payload)
    if host.result is None:
        payload = host.handle_success1(queue.auth_receive(host.receive_length).data)
        if payload is not None:
            queue.auth_send(payload)
    assert host.result is not None
    return host.result


@pytest.mark.parametrize("group", list(DhGroup))
@pytest.mark.parametrize("hash_id", list(HashId))
@pytest.mark.parametrize("bidirectional", [False, True], ids=["one-way", "bidirectional"])
def test_every_hash_and_group_succeeds(
    group: DhGroup, hash_id: HashId, bidirectional: bool
) -> None:
    ctrl_key = CTRL_KEY if bidirectional else None
    pair = make_pair(HostAuthConfig(HOST_KEY, ctrl_key, hash_id, group), host_ctrl_key=ctrl_key)
    assert run(pair) == HostResult(True)
    assert pair.queue.authenticated and not pair.queue.fatal_error
    assert pair.queue.step == MessageId.SUCCESS2 and not pair.queue.timer_armed
    assert pair.host.hash_id == hash_id and pair.host.dh_group == group
    assert (pair.host.session_key is None) == (group == DhGroup.NULL)


def test_transcript_fields() -> None:
    """Watch the wire: T_ID everywhere, S2 and C2 only when challenging the controller."""
    pair = make_pair(
        HostAuthConfig(HOST_KEY, CTRL_KEY, HashId.SHA384, DhGroup.FFDHE3072),
        host_ctrl_key=CTRL_KEY,
        t_id=0x4242,
    )
    queue, host = pair.queue, pair.host
    queue.auth_send(host.negotiate())
    challenge_data = queue.auth_receive(4096).data
    assert len(challenge_data) == 4096
    challenge = parse_challenge(challenge_data)
    assert (challenge.t_id, challenge.hash_id, challenge.dh_group) == (0x4242, 2, 2)
    assert len(challenge.challenge) == 48 and len(challenge.dh_value) == 384
    reply = host.handle_challenge(challenge_data)
    assert reply is not None and reply[6] == 48 and reply[8] == 1  # HL, CVALID
    queue.auth_send(reply)
    assert not queue.authenticated  # waits for success2
    success1 = parse_success1(queue.auth_receive(4096).data)
    assert success1.response is not None and success1.hl == 48
    assert queue.step == MessageId.SUCCESS2


def test_wrong_host_key_fails_on_the_controller() -> None:
    pair = make_pair(HostAuthConfig(HOST_KEY, None, HashId.SHA256, DhGroup.FFDHE2048),
                     host_key=OTHER_KEY)  # fmt: skip
    result = run(pair)
    # nvmet_auth_reply: host response mismatch -> failure1 FAILED; the host sends no failure2.
    assert result == HostResult(False, FailureReason.FAILED, from_controller=True)
    assert pair.queue.fatal_error and not pair.queue.authenticated
    assert pair.queue.step == MessageId.FAILURE1


def test_wrong_controller_key_fails_on_the_host() -> None:
    config = HostAuthConfig(HOST_KEY, CTRL_KEY, HashId.SHA512, DhGroup.NULL)
    pair = make_pair(config, host_ctrl_key=generate_secret(bytes(48), 2))
    queue, host = pair.queue, pair.host
    queue.auth_send(host.negotiate())
    queue.auth_send(host.handle_challenge(queue.auth_receive(4096).data) or b"")
    failure2 = host.handle_success1(queue.auth_receive(4096).data)
    # nvme_auth_process_dhchap_success1: controller response mismatch -> failure2 FAILED.
    assert host.result == HostResult(False, FailureReason.FAILED)
    assert failure2 is not None
    assert parse_failure(failure2) == Failure(7, FailureReason.FAILED, MessageId.FAILURE2)
    assert failure2[0] == AuthType.COMMON
    # nvmet matches a common-typed failure2 against its step (SUCCESS2): out of sequence,
    # INCORRECT_MESSAGE, FAILURE2 step, controller fatal.
    queue.auth_send(failure2)
    assert queue.step == MessageId.FAILURE2 and queue.fatal_error
    assert queue.status == FailureReason.INCORRECT_MESSAGE and not queue.authenticated
    # A later AUTH_Receive lands in nvmet's default case: failure1 FAILED.
    assert parse_failure(queue.auth_receive(16).data).reason_explanation == FailureReason.FAILED


def test_host_challenges_a_controller_without_key() -> None:
    pair = make_pair(HostAuthConfig(HOST_KEY), host_ctrl_key=CTRL_KEY)
    # nvmet_auth_success1: C2 but no controller key -> failure1 FAILED (step stays SUCCESS1).
    assert run(pair) == HostResult(False, FailureReason.FAILED, from_controller=True)
    assert pair.queue.step == MessageId.SUCCESS1 and not pair.queue.authenticated


def test_controller_key_without_host_challenge_is_one_way() -> None:
    pair = make_pair(HostAuthConfig(HOST_KEY, CTRL_KEY))
    assert run(pair) == HostResult(True)
    assert pair.queue.authenticated


def negotiate_reason(config: HostAuthConfig, negotiate: bytes) -> int:
    pair = make_pair(config)
    pair.queue.auth_send(negotiate)
    assert pair.queue.step == MessageId.FAILURE1
    failure = parse_failure(pair.queue.auth_receive(4096).data)
    assert failure.message == MessageId.FAILURE1 and pair.queue.fatal_error
    return failure.reason_explanation


def descriptor(hashes: tuple[int, ...], groups: tuple[int, ...]) -> ProtocolDescriptor:
    return ProtocolDescriptor.dhchap(hash_ids=hashes, dh_groups=groups)


@pytest.mark.parametrize(
    ("negotiate", "reason"),
    [
        (build_negotiate(Negotiate(7))[:71], FailureReason.INCORRECT_PAYLOAD),
        (build_negotiate(Negotiate(7, sc_c=1)), FailureReason.CONCAT_MISMATCH),
        (build_negotiate(Negotiate(7, napd=2)), FailureReason.HASH_UNUSABLE),
        (
            build_negotiate(Negotiate(7, (ProtocolDescriptor(3, 6, bytes(60), authid=2),))),
            FailureReason.INCORRECT_PAYLOAD,
        ),
        (
            build_negotiate(Negotiate(7, (ProtocolDescriptor(31, 1, bytes([1]) * 60),))),
            FailureReason.INCORRECT_PAYLOAD,
        ),
        (build_negotiate(Negotiate(7, (descriptor((4, 9), (0, 1)),))), FailureReason.HASH_UNUSABLE),
        (build_negotiate(Negotiate(7, (descriptor((1,), ()),))), FailureReason.DHGROUP_UNUSABLE),
        # Quirk of nvmet_auth_negotiate: only NULL offered to a NULL target is unusable.
        (build_negotiate(Negotiate(7, (descriptor((1,), (0,)),))), FailureReason.DHGROUP_UNUSABLE),
    ],
    ids=["short", "sc_c", "napd", "authid", "halen", "hash", "no-groups", "null-only"],
)
def test_negotiate_failures(negotiate: bytes, reason: int) -> None:
    assert negotiate_reason(HostAuthConfig(HOST_KEY), negotiate) == reason


def test_negotiate_choices_and_quirks() -> None:
    # Hash fallback: the configured SHA-256 is not offered, the first known offered one wins
    # and sticks to the controller.
    pair = make_pair(HostAuthConfig(HOST_KEY, None, HashId.SHA256, DhGroup.FFDHE2048))
    pair.queue.auth_send(build_negotiate(Negotiate(7, (descriptor((9, 3, 2), (3,)),))))
    challenge = parse_challenge(pair.queue.auth_receive(4096).data)
    assert challenge.hash_id == HashId.SHA512 and pair.ctrl.hash_id == HashId.SHA512
    # DH group: the configured ffdhe2048 is used although the host offered only ffdhe4096.
    assert challenge.dh_group == DhGroup.FFDHE2048
    # Offering only the configured (non-NULL) group is fine.
    pair = make_pair(HostAuthConfig(HOST_KEY, None, HashId.SHA256, DhGroup.FFDHE2048))
    pair.queue.auth_send(build_negotiate(Negotiate(7, (descriptor((1,), (1,)),))))
    assert pair.queue.step == MessageId.CHALLENGE


def test_reply_failures() -> None:
    config = HostAuthConfig(HOST_KEY, None, HashId.SHA256, DhGroup.NULL)
    cases = {
        "t_id": (
            lambda c: Reply(c.t_id + 1, bytes(32), bytes(32)),
            FailureReason.INCORRECT_PAYLOAD,
        ),
        "dh-on-null": (
            lambda c: Reply(c.t_id, bytes(32), bytes(32), dh_value=b"\x02" * 256),
            FailureReason.INCORRECT_PAYLOAD,
        ),
        "hl": (lambda c: Reply(c.t_id, bytes(48), bytes(48)), FailureReason.FAILED),
        "response": (lambda c: Reply(c.t_id, bytes(32), bytes(32)), FailureReason.FAILED),
    }
    for name, (make_reply, reason) in cases.items():
        pair = make_pair(config)
        pair.queue.auth_send(pair.host.negotiate())
        challenge = parse_challenge(pair.queue.auth_receive(4096).data)
        pair.queue.auth_send(build_reply(make_reply(challenge)))
        assert pair.queue.step == MessageId.FAILURE1, name
        assert pair.queue.status == reason, name
    # A truncated reply, and a DH value nvmet cannot use.
    pair = make_pair(HostAuthConfig(HOST_KEY, None, HashId.SHA256, DhGroup.FFDHE2048))
    pair.queue.auth_send(pair.host.negotiate())
    challenge = parse_challenge(pair.queue.auth_receive(4096).data)
    reply = build_reply(Reply(challenge.t_id, bytes(32), bytes(32), dh_value=(1).to_bytes(256)))
    pair.queue.auth_send(reply)
    assert pair.queue.status == FailureReason.DHGROUP_UNUSABLE
    pair = make_pair(config)
    pair.queue.auth_send(pair.host.negotiate())
    pair.queue.auth_receive(4096)
    pair.queue.auth_send(build_reply(Reply(7, bytes(32), bytes(32)))[:-1])
    assert pair.queue.status == FailureReason.INCORRECT_PAYLOAD


def test_out_of_sequence_message_is_fatal() -> None:
    pair = make_pair(HostAuthConfig(HOST_KEY))
    pair.queue.auth_send(build_reply(Reply(7, bytes(32), bytes(32))))  # before negotiate
    assert pair.queue.step == MessageId.FAILURE2 and pair.queue.fatal_error
    assert pair.queue.status == FailureReason.INCORRECT_MESSAGE


def test_command_checks() -> None:
    pair = make_pair(HostAuthConfig(HOST_KEY))
    negotiate = pair.host.negotiate()
    for kwargs, offset in (
        (dict(secp=0xEA), 43),
        (dict(spsp0=0), 41),
        (dict(spsp1=2), 42),
    ):
        result = pair.queue.auth_send(negotiate, **kwargs)
        assert result.status.code == StatusCode.INVALID_FIELD and result.status.dnr
        assert result.error_location == offset
    assert pair.queue.auth_send(b"").error_location == 44
    assert pair.queue.step == MessageId.NEGOTIATE  # nothing was taken
    assert pair.queue.timer_armed  # but nvmet's epilogue armed the transaction timer
    assert check_auth_command(0xE9, 1, 1, 72) is None
    pair.queue.auth_send(negotiate)
    # AL too small for the challenge: status 0, AL zero bytes, the step stays (nvmet quirk).
    small = pair.queue.auth_receive(40)
    assert small.status.ok and small.data == bytes(40)
    assert pair.queue.step == MessageId.CHALLENGE
    pair.queue.auth_send(pair.host.handle_challenge(pair.queue.auth_receive(4096).data) or b"")
    # success1 needs 16 bytes: a smaller AL is refused like AL 0.
    refused = pair.queue.auth_receive(15)
    assert refused.status.code == StatusCode.INVALID_FIELD and refused.error_location == 44
    assert expiry_seconds(0) == 120 and expiry_seconds(5) == 5


def test_expiry_and_reauthentication() -> None:
    pair = make_pair(HostAuthConfig(HOST_KEY, None, HashId.SHA256, DhGroup.FFDHE2048))
    pair.queue.auth_send(pair.host.negotiate())
    assert pair.queue.timer_armed
    pair.queue.expire()
    assert pair.queue.step == MessageId.NEGOTIATE and not pair.queue.timer_armed
    # A fresh run on the same queue (and re-authentication after success) works, and the
    # controller keeps its DH key pair across it.
    public = pair.ctrl.dh_key.public_value if pair.ctrl.dh_key else b""
    for t_id in (8, 9):
        pair.host = HostAuth(
            HOST_KEY,
            hostnqn=HOSTNQN,
            subsysnqn=SUBNQN,
            transaction_id=t_id,
            random_bytes=random.Random(t_id).randbytes,
            seqnum=SequenceCounter(t_id),
        )
        assert run(pair) == HostResult(True)
    assert pair.ctrl.dh_key is not None and pair.ctrl.dh_key.public_value == public
    # An I/O queue of the same controller authenticates on its own state.
    io_queue = pair.ctrl.queue(1)
    pair.queue = io_queue
    pair.host = HostAuth(HOST_KEY, hostnqn=HOSTNQN, subsysnqn=SUBNQN, transaction_id=10,
                         random_bytes=random.Random(3).randbytes, seqnum=SequenceCounter(5))  # fmt: skip
    assert run(pair) == HostResult(True) and io_queue.authenticated


def test_connect_result() -> None:
    pair = make_pair(HostAuthConfig(HOST_KEY))
    assert pair.ctrl.connect_result(0x21) == 0x21 | CONNECT_AUTHREQ_ATR == 0x20021


def host_after_negotiate() -> HostAuth:
    pair = make_pair(HostAuthConfig(HOST_KEY))
    pair.host.negotiate()
    return pair.host


@pytest.mark.parametrize(
    ("challenge", "reason"),
    [
        (Challenge(7, 9, 1, bytes(32)), FailureReason.HASH_UNUSABLE),
        (Challenge(7, 1, 1, bytes(48)), FailureReason.HASH_UNUSABLE),
        (Challenge(7, 1, 1, bytes(32), 6, b"\x02"), FailureReason.DHGROUP_UNUSABLE),
        (Challenge(7, 1, 1, bytes(32), 1), FailureReason.DHGROUP_UNUSABLE),
        (Challenge(7, 1, 1, bytes(32), 0, b"\x02"), FailureReason.INCORRECT_PAYLOAD),
        (Challenge(7, 1, 1, bytes(32), 1, (1).to_bytes(256)), FailureReason.INCORRECT_PAYLOAD),
    ],
    ids=["hash-id", "hl", "group-id", "no-dh-value", "dh-on-null", "bad-dh-value"],
)
def test_host_challenge_failures(challenge: Challenge, reason: int) -> None:
    host = host_after_negotiate()
    failure2 = host.handle_challenge(build_challenge(challenge))
    assert host.result == HostResult(False, reason)
    assert failure2 == build_failure(Failure(7, reason, MessageId.FAILURE2))


def test_host_refuses_unusable_messages_without_failure2() -> None:
    host = host_after_negotiate()
    assert host.handle_challenge(build_challenge(Challenge(8, 1, 1, bytes(32)))) is None
    assert host.result == HostResult(False, FailureReason.INCORRECT_MESSAGE)
    host = host_after_negotiate()
    assert host.handle_challenge(build_failure(Failure(7, FailureReason.HASH_UNUSABLE))) is None
    assert host.result == HostResult(False, FailureReason.HASH_UNUSABLE, from_controller=True)
    with pytest.raises(RuntimeError, match="not waiting for SUCCESS1"):
        host.handle_success1(build_success1(Success1(7, 32)))


def test_host_success1_checks() -> None:
    pair = make_pair(HostAuthConfig(HOST_KEY, CTRL_KEY), host_ctrl_key=CTRL_KEY)
    pair.queue.auth_send(pair.host.negotiate())
    pair.host.handle_challenge(pair.queue.auth_receive(4096).data)
    # HL other than the hash length -> failure2 HASH_UNUSABLE.
    failure2 = pair.host.handle_success1(build_success1(Success1(7, 48)))
    assert failure2 is not None and parse_failure(failure2).reason_explanation == 4
    # The kernel host takes a success1 without RVALID even when it challenged (and still
    # sends success2).
    pair = make_pair(HostAuthConfig(HOST_KEY, CTRL_KEY), host_ctrl_key=CTRL_KEY)
    pair.queue.auth_send(pair.host.negotiate())
    pair.host.handle_challenge(pair.queue.auth_receive(4096).data)
    success2 = pair.host.handle_success1(build_success1(Success1(7, 32)))
    assert pair.host.result == HostResult(True) and success2 is not None


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.one_of(st.binary(max_size=120), st.integers(0, 5000)),
        max_size=8,
    ),
    st.sampled_from(list(DhGroup)),
)
def test_controller_survives_any_sequence(steps: list[bytes | int], group: DhGroup) -> None:
    pair = make_pair(HostAuthConfig(HOST_KEY, CTRL_KEY, HashId.SHA256, group))
    for step in steps:
        if isinstance(step, bytes):
            result = pair.queue.auth_send(step)
        else:
            result = pair.queue.auth_receive(step)
            assert result.data == b"" or len(result.data) == step
        assert result.status.ok or result.error_location is not None


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=600), st.binary(max_size=200))
def test_host_survives_any_answer(challenge: bytes, success1: bytes) -> None:
    host = host_after_negotiate()
    host.handle_challenge(challenge)
    if host.result is None:
        host.handle_success1(success1)
    assert host.result is not None


@settings(max_examples=150, deadline=None)
@given(
    st.sampled_from(list(DhGroup)),
    st.booleans(),
    st.integers(0, 3),  # which message is corrupted
    st.integers(0, 400),  # where
    st.integers(1, 255),  # xor mask
)
def test_one_corrupted_byte_never_crashes(
    group: DhGroup, bidirectional: bool, which: int, where: int, mask: int
) -> None:
    ctrl_key = CTRL_KEY if bidirectional else None
    pair = make_pair(
        HostAuthConfig(HOST_KEY, ctrl_key, HashId.SHA256, group), host_ctrl_key=ctrl_key
    )
    queue, host = pair.queue, pair.host
    count = 0

    def corrupt(data: bytes) -> bytes:
        nonlocal count
        count += 1
        if count - 1 != which or not data:
            return data
        index = where % len(data)
        return data[:index] + bytes([data[index] ^ mask]) + data[index + 1 :]

    queue.auth_send(corrupt(host.negotiate()))
    payload = host.handle_challenge(corrupt(queue.auth_receive(4096).data))
    if payload is not None:
        queue.auth_send(corrupt(payload))
    if host.result is None:
        payload = host.handle_success1(corrupt(queue.auth_receive(4096).data))
        if payload is not None:
            queue.auth_send(payload)
    assert host.result is not None
    if host.result.authenticated and not bidirectional:
        assert queue.authenticated


def test_refused_receive_in_failure1_is_still_fatal() -> None:
    # nvmet_execute_auth_receive's done label runs for a refused command as well.
    pair = make_pair(HostAuthConfig(HOST_KEY))
    pair.queue.auth_send(build_negotiate(Negotiate(7, sc_c=1)))
    refused = pair.queue.auth_receive(7)  # a failure1 needs 8 bytes
    assert refused.error_location == 44 and pair.queue.fatal_error
