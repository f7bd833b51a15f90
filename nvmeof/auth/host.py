"""The host side of DH-HMAC-CHAP, after the Linux host (drivers/nvme/host/auth.c
``nvme_queue_auth_work``), sans-IO.

One :class:`HostAuth` per queue and per authentication run. The plumbing drives it::

    send AUTH_Send(auth.negotiate())
    data = AUTH_Receive(AL = auth.receive_length)      # the challenge
    payload = auth.handle_challenge(data)             # reply, failure2, or None
    if payload: send AUTH_Send(payload)
    if auth.result is None:                           # still running: reply was sent
        data = AUTH_Receive(AL = auth.receive_length) # success1 (or failure1)
        payload = auth.handle_success1(data)          # success2, failure2, or None
        if payload: send AUTH_Send(payload)
    auth.result.authenticated                         # the queue may be used

Reasons, as the kernel host sets ``chap->status`` (sent in failure2's REASON CODE EXPLANATION):

=============================================  ==========================================  ======================
check                                          kernel function                             reason / failure2?
=============================================  ==========================================  ======================
controller sent failure1                       ``nvme_auth_receive_validate``              its reason; no failure2
wrong message type/id, or T_ID                 ``nvme_auth_receive_validate``              INCORRECT_MESSAGE; none
challenge longer than the 4 KiB buffer         ``nvme_auth_process_dhchap_challenge``      INCORRECT_PAYLOAD
unknown hash id, or HL not its digest size     ``nvme_auth_process_dhchap_challenge``      HASH_UNUSABLE
unknown DH group, or no DH value for a group   ``nvme_auth_process_dhchap_challenge``      DHGROUP_UNUSABLE
DH value with the NULL group                   ``nvme_auth_process_dhchap_challenge``      INCORRECT_PAYLOAD
controller's DH value unusable                 ``nvme_auth_dhchap_exponential``            INCORRECT_PAYLOAD
success1 HL not the hash length                ``nvme_auth_process_dhchap_success1``       HASH_UNUSABLE
controller response wrong                      ``nvme_auth_process_dhchap_success1``       FAILED
=============================================  ==========================================  ======================

The kernel accepts a success1 without RVALID even when it challenged the controller, and then
still sends success2; kept.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from nvmeof.auth.constants import (
    HOST_RECEIVE_LENGTH,
    AuthType,
    DhGroup,
    FailureReason,
    MessageId,
)
from nvmeof.auth.crypto import (
    DhKeyPair,
    RandomSource,
    controller_response,
    hash_length,
    host_response,
    private_value_from_random,
)
from nvmeof.auth.ffdhe import PRIMES
from nvmeof.auth.messages import (
    FAILURE_SIZE,
    Challenge,
    Failure,
    Negotiate,
    ProtocolDescriptor,
    Reply,
    Success2,
    build_failure,
    build_negotiate,
    build_reply,
    build_success2,
    parse_challenge,
    parse_failure,
    parse_success1,
)
from nvmeof.auth.secret import DhchapSecret, transform_key


@dataclass(frozen=True)
class HostResult:
    """How a run ended: authenticated, or the reason (``chap->status``) and who gave it."""

    authenticated: bool
    reason: int = 0
    #: True when the reason came in the controller's failure1; False when the host found it
    #: (and sent it in failure2 unless the message itself was unusable).
    from_controller: bool = False


class HostAuth:
    """One queue's authentication run on the host.

    ``transaction_id`` is the T_ID (the kernel takes ``ctrl->transaction++``, a per-controller
    counter from 0); ``random_bytes`` supplies C2 and the DH private value; ``seqnum`` gives
    S2 (:class:`nvmeof.auth.crypto.SequenceCounter`). ``ctrl_secret`` makes it bidirectional.
    """

    receive_length = HOST_RECEIVE_LENGTH

    def __init__(
        self,
        host_secret: DhchapSecret,
        *,
        hostnqn: str,
        subsysnqn: str,
        transaction_id: int,
        random_bytes: RandomSource,
        seqnum: Callable[[], int],
        ctrl_secret: DhchapSecret | None = None,
        qid: int = 0,
    ) -> None:
        self.hostnqn = hostnqn
        self.subsysnqn = subsysnqn
        self.qid = qid
        self.transaction_id = transaction_id & 0xFFFF
        self.random_bytes = random_bytes
        self.seqnum = seqnum
        self.host_key = transform_key(host_secret, hostnqn)
        self.ctrl_key = None if ctrl_secret is None else transform_key(ctrl_secret, subsysnqn)
        self.result: HostResult | None = None
        self.hash_id = 0
        self.dh_group: int = DhGroup.NULL
        self.session_key: bytes | None = None
        self.response = b""  # R1 sent, then R2 expected
        self.s2 = 0
        self.c2 = b""
        self._expected: MessageId = MessageId.CHALLENGE

    def negotiate(self) -> bytes:
        """The negotiate the Linux host sends: no secure channel, one DH-HMAC-CHAP descriptor
        offering every hash and group (``nvme_auth_set_dhchap_negotiate_data``)."""
        return build_negotiate(Negotiate(self.transaction_id, (ProtocolDescriptor.dhchap(),)))

    # -- outcomes -------------------------------------------------------------------------------

    def _finish(self, reason: int, *, from_controller: bool = False) -> None:
        self.result = HostResult(False, reason, from_controller)

    def _failure2(self, reason: int) -> bytes:
        """End with a failure2 (``nvme_auth_set_dhchap_failure2_data``, the ``fail2`` label)."""
        self._finish(reason)
        return build_failure(Failure(self.transaction_id, reason, MessageId.FAILURE2))

    def _validate(self, data: bytes, expected: MessageId) -> bool:
        """``nvme_auth_receive_validate``: False (and finished, no failure2) when unusable."""
        failure = parse_failure(data[:FAILURE_SIZE].ljust(FAILURE_SIZE, b"\0"))
        if failure.message == MessageId.FAILURE1 and data[0] == AuthType.COMMON:
            self._finish(failure.reason_explanation, from_controller=True)
            return False
        if data[0] != AuthType.DHCHAP or failure.message != expected:
            self._finish(FailureReason.INCORRECT_MESSAGE)
            return False
        if failure.t_id != self.transaction_id:
            self._finish(FailureReason.INCORRECT_MESSAGE)
            return False
        return True

    def _check_turn(self, expected: MessageId) -> None:
        if self.result is not None or self._expected != expected:
            raise RuntimeError(f"host authentication is not waiting for {expected.name}")

    # -- the challenge --------------------------------------------------------------------------

    def handle_challenge(self, data: bytes) -> bytes | None:
        """Take the AUTH_Receive data of the challenge; return the reply to send, a failure2,
        or None when the run ended without one (see :attr:`result`)."""
        self._check_turn(MessageId.CHALLENGE)
        self._expected = MessageId.SUCCESS1
        if not self._validate(data.ljust(FAILURE_SIZE, b"\0"), MessageId.CHALLENGE):
            return None
        try:
            challenge = parse_challenge(data[:HOST_RECEIVE_LENGTH])
        except ValueError:
            return self._failure2(FailureReason.INCORRECT_PAYLOAD)
        reason = self._check_challenge(challenge)
        if reason:
            return self._failure2(reason)
        self.hash_id = challenge.hash_id
        self.dh_group = challenge.dh_group
        host_value = b""
        if challenge.dh_value:
            group = DhGroup(challenge.dh_group)
            key = DhKeyPair(group, private_value_from_random(group, self.random_bytes))
            host_value = key.public_value
            try:
                self.session_key = key.shared_secret(challenge.dh_value)
            except ValueError:
                return self._failure2(FailureReason.INCORRECT_PAYLOAD)
        hash_len = hash_length(self.hash_id)
        self.response = host_response(
            self.hash_id,
            self.host_key,
            challenge.challenge,
            seqnum=challenge.seqnum,
            transaction_id=self.transaction_id,
            hostnqn=self.hostnqn,
            subsysnqn=self.subsysnqn,
            session_key=self.session_key,
        )
        if self.ctrl_key is not None:
            self.c2 = self.random_bytes(hash_len)
            self.s2 = self.seqnum()
        else:
            self.c2, self.s2 = bytes(hash_len), 0
        return build_reply(
            Reply(
                t_id=self.transaction_id,
                response=self.response,
                challenge=self.c2,
                cvalid=self.ctrl_key is not None,
                seqnum=self.s2,
                dh_value=host_value,
            )
        )

    @staticmethod
    def _check_challenge(challenge: Challenge) -> int:
        """``nvme_auth_process_dhchap_challenge``'s checks: 0 or the reason."""
        if hash_length(challenge.hash_id) != len(challenge.challenge) or not hash_length(
            challenge.hash_id
        ):
            return FailureReason.HASH_UNUSABLE
        if challenge.dh_group != DhGroup.NULL and challenge.dh_group not in PRIMES:
            return FailureReason.DHGROUP_UNUSABLE
        if challenge.dh_group != DhGroup.NULL and not challenge.dh_value:
            return FailureReason.DHGROUP_UNUSABLE
        if challenge.dh_group == DhGroup.NULL and challenge.dh_value:
            return FailureReason.INCORRECT_PAYLOAD
        return 0

    # -- success1 -------------------------------------------------------------------------------

    def handle_success1(self, data: bytes) -> bytes | None:
        """Take the AUTH_Receive data after the reply; return success2 (bidirectional), a
        failure2, or None (one-way success, or a failure1 / unusable message)."""
        self._check_turn(MessageId.SUCCESS1)
        self._expected = MessageId.SUCCESS2
        if not self._validate(data.ljust(FAILURE_SIZE, b"\0"), MessageId.SUCCESS1):
            return None
        try:
            success1 = parse_success1(data[:HOST_RECEIVE_LENGTH])
        except ValueError:
            return self._failure2(FailureReason.INCORRECT_PAYLOAD)
        hash_len = hash_length(self.hash_id)
        if success1.hl != hash_len:
            return self._failure2(FailureReason.HASH_UNUSABLE)
        if success1.response is not None:
            expected = controller_response(
                self.hash_id,
                self.ctrl_key if self.ctrl_key is not None else b"",
                self.c2,
                seqnum=self.s2,
                transaction_id=self.transaction_id,
                hostnqn=self.hostnqn,
                subsysnqn=self.subsysnqn,
                session_key=self.session_key,
            )
            if expected != success1.response:
                return self._failure2(FailureReason.FAILED)
        self.result = HostResult(True)
        if self.ctrl_key is None:
            return None
        return build_success2(Success2(self.transaction_id))
