"""The controller side of DH-HMAC-CHAP, after nvmet (drivers/nvme/target/auth.c and
fabrics-cmd-auth.c), sans-IO.

:class:`ControllerAuth` is the per-controller part (``struct nvmet_ctrl``'s ``shash_id``,
``dh_gid``, DH key, host and controller keys: ``nvmet_setup_auth``); :class:`QueueAuth` the
per-queue part (``struct nvmet_sq``'s ``dhchap_step``, ``dhchap_tid``, ``dhchap_s1/s2``,
``dhchap_c1/c2``, session key, ``authenticated``). The plumbing hands each AUTH_Send's data to
:meth:`QueueAuth.auth_send` and answers each AUTH_Receive with :meth:`QueueAuth.auth_receive`.

Failure reason codes, exactly as nvmet gives them (REASON CODE EXPLANATION of failure1):

============================  =======================================================  ==========================
check                         kernel function                                          reason
============================  =======================================================  ==========================
negotiate shorter than 72     ``nvmet_auth_negotiate``                                 INCORRECT_PAYLOAD (6)
SC_C not 0 (no TLS here)      ``nvmet_auth_negotiate``                                 CONCAT_MISMATCH (3)
NAPD not 1                    ``nvmet_auth_negotiate``                                 HASH_UNUSABLE (4)
AUTHID not 1                  ``nvmet_auth_negotiate``                                 INCORRECT_PAYLOAD (6)
HALEN or DHLEN over 30        ``nvmet_auth_negotiate``                                 INCORRECT_PAYLOAD (6)
no known hash offered         ``nvmet_auth_negotiate``                                 HASH_UNUSABLE (4)
no usable DH group            ``nvmet_auth_negotiate``                                 DHGROUP_UNUSABLE (5)
T_ID differs from negotiate   ``nvmet_execute_auth_send``                              INCORRECT_PAYLOAD (6)
reply shorter than its HL/DH  ``nvmet_auth_reply``                                     INCORRECT_PAYLOAD (6)
DH value but NULL group       ``nvmet_auth_reply``                                     INCORRECT_PAYLOAD (6)
DH value unusable             ``nvmet_auth_reply`` / ``nvmet_auth_ctrl_sesskey``       DHGROUP_UNUSABLE (5)
HL not the digest size        ``nvmet_auth_reply`` / ``nvmet_auth_host_hash``          FAILED (1)
host response wrong           ``nvmet_auth_reply``                                     FAILED (1)
C2 sent, no controller key    ``nvmet_auth_success1``                                  FAILED (1)
message out of sequence       ``nvmet_execute_auth_send`` (``done_failure1``)          INCORRECT_MESSAGE (7) *
failure2 from the host        ``nvmet_execute_auth_send`` (``done_failure1``)          INCORRECT_MESSAGE (7) *
AUTH_Receive in a wrong step  ``nvmet_execute_auth_receive`` (default case)            FAILED (1)
============================  =======================================================  ==========================

\\* These move straight to the FAILURE2 step, which is final: nvmet frees the transaction and
declares the controller fatal (``nvmet_ctrl_fatal_error``) without sending a failure1; a later
AUTH_Receive lands in the default case and answers failure1 FAILED. The Linux host sends its
failure2 as a *common* message (type 0), which nvmet matches against the step, never against
FAILURE2, so the host's failure2 always ends this way.

Quirks kept on purpose, because a Linux host will see them from a Linux target:

* DH group choice (``nvmet_auth_negotiate``): the configured group is used whenever the host
  lists any other group; only a list made of nothing but the configured group takes the
  "fallback", which needs a kpp for it, so a host offering only NULL to a NULL-configured target
  gets DHGROUP_UNUSABLE, as does an empty list. The host's list is never otherwise honoured.
* Hash choice: the configured hash when the host lists it, else the first known hash the host
  lists; that fallback sticks to the controller (``ctrl->shash_id``) for later queues.
* An AUTH_Receive AL too small for the challenge completes with status 0 and AL zero bytes
  (``nvmet_execute_auth_receive`` overwrites NVME_SC_INTERNAL with the copy's status), and the
  step stays CHALLENGE.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from nvmeof.auth.constants import (
    DHCHAP_AUTH_ID,
    MAX_DH_IDS,
    MAX_HASH_IDS,
    SECP_DHCHAP,
    SPSP0_DHCHAP,
    SPSP1_DHCHAP,
    AuthType,
    DhGroup,
    FailureReason,
    HashId,
    MessageId,
    SecureChannel,
    connect_result,
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
    HEADER_SIZE,
    OFFSET_LENGTH,
    OFFSET_SECP,
    OFFSET_SPSP0,
    OFFSET_SPSP1,
    SUCCESS1_HEAD_SIZE,
    Challenge,
    Failure,
    Negotiate,
    Success1,
    build_challenge,
    build_failure,
    build_success1,
    parse_failure,
    parse_header,
    parse_negotiate,
    parse_reply,
)
from nvmeof.auth.secret import DhchapSecret, transform_key
from nvmeof.status import Status, StatusCode

#: How long nvmet lets a transaction sit between messages when KATO is 0
#: (``nvmet_execute_auth_send``: ``ctrl->kato ? ctrl->kato : 120`` seconds).
DEFAULT_EXPIRY_SECONDS = 120
#: ``dhchap_tid`` after expiry (``nvmet_auth_expired_work`` stores -1 in a u16).
_EXPIRED_TID = 0xFFFF


@dataclass(frozen=True)
class HostAuthConfig:
    """What nvmet's configfs holds for an allowed host (``hosts/<hostnqn>/dhchap_*``)."""

    key: DhchapSecret  # dhchap_key
    ctrl_key: DhchapSecret | None = None  # dhchap_ctrl_key: bidirectional when set
    hash_id: int = HashId.SHA256  # dhchap_hash, nvmet's default hmac(sha256)
    dh_group: int = DhGroup.NULL  # dhchap_dhgroup, nvmet's default null


@dataclass(frozen=True)
class CommandResult:
    """How to complete an AUTH_Send / AUTH_Receive: status, error location, returned data."""

    status: Status = field(default_factory=Status)
    error_location: int | None = None
    data: bytes = b""


def _invalid_field(offset: int) -> CommandResult:
    return CommandResult(Status(StatusCode.INVALID_FIELD, dnr=True), offset)


def check_auth_command(secp: int, spsp0: int, spsp1: int, length: int) -> CommandResult | None:
    """nvmet's checks of an AUTH_Send / AUTH_Receive command, in its order: Invalid Field
    with DNR and the byte offset as error location, or None when the command is acceptable.
    ``length`` is TL or AL (a zero one is refused)."""
    for value, expected, offset in (
        (secp, SECP_DHCHAP, OFFSET_SECP),
        (spsp0, SPSP0_DHCHAP, OFFSET_SPSP0),
        (spsp1, SPSP1_DHCHAP, OFFSET_SPSP1),
    ):
        if value != expected:
            return _invalid_field(offset)
    return _invalid_field(OFFSET_LENGTH) if length == 0 else None


def expiry_seconds(kato_seconds: int) -> int:
    """The transaction timer nvmet arms after each non-final AUTH_Send."""
    return kato_seconds or DEFAULT_EXPIRY_SECONDS


class ControllerAuth:
    """One controller's authentication state (``nvmet_setup_auth``, ``nvmet_setup_dhgroup``).

    ``random_bytes`` supplies the DH private value and the challenges; ``seqnum`` the S1
    values (:class:`nvmeof.auth.crypto.SequenceCounter`). The DH key pair is made once per
    controller and reused by every queue, as nvmet does.
    """

    def __init__(
        self,
        config: HostAuthConfig,
        *,
        hostnqn: str,
        subsysnqn: str,
        random_bytes: RandomSource,
        seqnum: Callable[[], int],
    ) -> None:
        if hash_length(config.hash_id) == 0:
            raise ValueError(f"unknown hash id {config.hash_id}")
        if config.dh_group != DhGroup.NULL and config.dh_group not in PRIMES:
            raise ValueError(f"unknown DH group {config.dh_group}")
        self.config = config
        self.hostnqn = hostnqn
        self.subsysnqn = subsysnqn
        self.random_bytes = random_bytes
        self.seqnum = seqnum
        self.hash_id = config.hash_id
        self.dh_group: int = DhGroup.NULL
        self.dh_key: DhKeyPair | None = None
        self.reconfigure(config)

    def reconfigure(self, config: HostAuthConfig) -> None:
        """Take the host's configuration as it is now (keys rotated since Connect): nvmet reads
        configfs again when a negotiate restarts authentication on the admin queue
        (``nvmet_setup_auth`` from ``nvmet_execute_auth_send``)."""
        self.config = config
        self.host_key = transform_key(config.key, self.hostnqn)
        self.ctrl_key = (
            None if config.ctrl_key is None else transform_key(config.ctrl_key, self.subsysnqn)
        )
        self.setup()

    def setup(self) -> None:
        """(Re)apply the host's configuration; nvmet does it at Connect and when a negotiate
        restarts authentication on the admin queue. The key pair survives if the group stays."""
        self.hash_id = self.config.hash_id
        if self.dh_key is not None and self.dh_group == self.config.dh_group:
            return
        self.dh_group = self.config.dh_group
        self.dh_key = None
        if self.dh_group != DhGroup.NULL:
            group = DhGroup(self.dh_group)
            self.dh_key = DhKeyPair(group, private_value_from_random(group, self.random_bytes))

    @property
    def authentication_required(self) -> bool:
        """``nvmet_has_auth``: a host key is configured (and no TLS PSK on the queue)."""
        return True

    def connect_result(self, cntlid: int) -> int:
        """Connect response DW0 for any queue of this controller: CNTLID | ATR."""
        return connect_result(cntlid, authentication_required=self.authentication_required)

    def queue(self, qid: int) -> QueueAuth:
        """A fresh per-queue state, as ``nvmet_auth_sq_init`` at that queue's Connect."""
        return QueueAuth(self, qid)


class QueueAuth:
    """One queue's DH-HMAC-CHAP transaction on the controller side.

    After every call the plumbing looks at :attr:`authenticated` (commands other than Fabrics
    ones need it: nvmet answers them AUTH_REQUIRED, 0x191, DNR), :attr:`fatal_error` (nvmet
    would call ``nvmet_ctrl_fatal_error``: tear the association down) and :attr:`timer_armed`
    (arm :func:`expiry_seconds`; call :meth:`expire` when it runs out).
    """

    def __init__(self, controller: ControllerAuth, qid: int) -> None:
        self.controller = controller
        self.qid = qid
        self.step: int = MessageId.NEGOTIATE
        self.transaction_id = 0
        self.status = 0  # dhchap_status: the reason a failure1 will carry
        self.authenticated = False
        #: Transactions that ended authenticated on this queue (a re-authentication adds one).
        self.successes = 0
        self.fatal_error = False
        self.timer_armed = False
        self._clear()

    def _clear(self) -> None:  # nvmet_auth_sq_free
        self.s1 = 0
        self.s2 = 0
        self.c1: bytes | None = None
        self.c2: bytes | None = None
        self.session_key: bytes | None = None
        self.timer_armed = False

    def _succeeded(self) -> None:
        self.authenticated = True
        self.successes += 1

    def expire(self) -> None:
        """The transaction timer ran out (``nvmet_auth_expired_work``)."""
        self.step = MessageId.NEGOTIATE
        self.transaction_id = _EXPIRED_TID
        self.timer_armed = False

    def _fail1(self, reason: int) -> None:
        self.step = MessageId.FAILURE1
        self.status = reason

    # -- AUTH_Send ------------------------------------------------------------------------------

    def auth_send(
        self,
        data: bytes,
        *,
        secp: int = SECP_DHCHAP,
        spsp0: int = SPSP0_DHCHAP,
        spsp1: int = SPSP1_DHCHAP,
    ) -> CommandResult:
        """Take one AUTH_Send's data (TL = ``len(data)``) (``nvmet_execute_auth_send``)."""
        refused = check_auth_command(secp, spsp0, spsp1, len(data))
        if refused is None:
            self._take(data)
        # nvmet's epilogue (the done label) runs for refused commands too.
        if self.step in (MessageId.SUCCESS2, MessageId.FAILURE2):
            self._clear()  # final: nvmet_auth_sq_free cancels the timer
            if self.step == MessageId.FAILURE2:
                self.fatal_error = True
        else:
            self.timer_armed = True
        return refused or CommandResult()

    def _take(self, data: bytes) -> None:
        # nvmet reads the header even from a shorter TL (past its buffer); read zeros instead.
        header = parse_header(data.ljust(HEADER_SIZE, b"\0"))
        if header.auth_type == AuthType.COMMON:
            self._send_common(header.auth_id, data)
        elif header.auth_type != AuthType.DHCHAP or header.auth_id != self.step:
            self._out_of_sequence()
        elif header.t_id != self.transaction_id:
            self._fail1(FailureReason.INCORRECT_PAYLOAD)
        else:
            self._send_dhchap(header.auth_id, data)

    def _out_of_sequence(self) -> None:  # the done_failure1 label
        self.status = FailureReason.INCORRECT_MESSAGE
        self.step = MessageId.FAILURE2

    def _send_common(self, auth_id: int, data: bytes) -> None:
        if auth_id == MessageId.NEGOTIATE:
            if self.qid == 0:
                self.controller.setup()  # re-authentication resets the controller's choices
            self.step = MessageId.NEGOTIATE
        elif auth_id != self.step:
            self._out_of_sequence()
            return
        # nvmet parses any common message that matches the step as a negotiate.
        reason = self._negotiate(data)
        if reason:
            self._fail1(reason)
        else:
            self.step = MessageId.CHALLENGE

    def _send_dhchap(self, auth_id: int, data: bytes) -> None:
        if auth_id == MessageId.REPLY:
            reason = self._reply(data)
            if reason:
                self._fail1(reason)
            else:
                self.step = MessageId.SUCCESS1
        elif auth_id == MessageId.SUCCESS2:
            self._succeeded()
        elif auth_id == MessageId.FAILURE2:  # only a DH-HMAC-CHAP-typed failure2 gets here
            reason = parse_failure(data.ljust(8, b"\0")).reason_explanation
            if reason:
                self.status = reason
                self.authenticated = False
        else:
            self.status = FailureReason.INCORRECT_MESSAGE
            self.step = MessageId.FAILURE2
            self.authenticated = False

    def _negotiate(self, data: bytes) -> int:
        """``nvmet_auth_negotiate``: 0 or the failure reason."""
        try:
            negotiate: Negotiate = parse_negotiate(data)
        except ValueError:
            return FailureReason.INCORRECT_PAYLOAD
        ctrl = self.controller
        self.transaction_id = negotiate.t_id  # set before any check: failure1 carries it
        if negotiate.sc_c != SecureChannel.NONE:
            return FailureReason.CONCAT_MISMATCH  # as nvmet built without NVME_TARGET_TCP_TLS
        if negotiate.napd != 1:
            return FailureReason.HASH_UNUSABLE
        descriptor = negotiate.descriptors[0]
        if descriptor.authid != DHCHAP_AUTH_ID:
            return FailureReason.INCORRECT_PAYLOAD
        if descriptor.dhlen > MAX_DH_IDS or descriptor.halen > MAX_HASH_IDS:
            return FailureReason.INCORRECT_PAYLOAD
        offered = descriptor.hash_ids
        if ctrl.hash_id not in offered:
            fallback = next((h for h in offered if hash_length(h)), 0)
            if not fallback:
                return FailureReason.HASH_UNUSABLE
            ctrl.hash_id = fallback
        groups = descriptor.dh_group_ids
        # Only when every offered group is the configured one (or none was offered) does nvmet
        # take its fallback, which wants a kpp for the group: none for NULL ("null").
        only_configured = not any(g != ctrl.dh_group for g in groups)
        if only_configured and (not groups or ctrl.dh_group not in PRIMES):
            return FailureReason.DHGROUP_UNUSABLE
        return 0

    def _reply(self, data: bytes) -> int:
        """``nvmet_auth_reply``: 0 or the failure reason."""
        try:
            reply = parse_reply(data)
        except ValueError:
            return FailureReason.INCORRECT_PAYLOAD  # shorter than 16 + 2 HL + DHVLEN
        ctrl = self.controller
        if reply.dh_value:
            if ctrl.dh_key is None:
                return FailureReason.INCORRECT_PAYLOAD
            try:
                self.session_key = ctrl.dh_key.shared_secret(reply.dh_value)
            except ValueError:
                return FailureReason.DHGROUP_UNUSABLE
        hl = len(reply.response)
        if hl != hash_length(ctrl.hash_id) or self.c1 is None:
            return FailureReason.FAILED  # nvmet_auth_host_hash refuses the length
        session_key = None
        if ctrl.dh_group != DhGroup.NULL:
            session_key = self.session_key or b""  # nvmet hashes a missing key as empty
        try:
            expected = host_response(
                ctrl.hash_id,
                ctrl.host_key,
                self.c1,
                seqnum=self.s1,
                transaction_id=self.transaction_id,
                hostnqn=ctrl.hostnqn,
                subsysnqn=ctrl.subsysnqn,
                session_key=session_key,
            )
        except ValueError:  # another queue's negotiate changed the hash since C1 was drawn
            return FailureReason.FAILED
        if expected != reply.response:
            return FailureReason.FAILED
        self.s2 = reply.seqnum
        self.c2 = reply.challenge if reply.cvalid else None
        if self.s2 == 0:  # a C2 without S2 only feeds a TLS PSK: no controller response
            self._succeeded()
            self.c2 = None
        elif not reply.cvalid:
            self._succeeded()
        return 0

    # -- AUTH_Receive ---------------------------------------------------------------------------

    def _minimum_receive_length(self) -> int | None:
        """``nvmet_auth_receive_data_len``: None means any AL will do."""
        if self.step == MessageId.CHALLENGE:
            return None
        if self.step == MessageId.SUCCESS1:
            return SUCCESS1_HEAD_SIZE + (hash_length(self.controller.hash_id) if self.c2 else 0)
        return 8  # a failure1

    def auth_receive(
        self,
        al: int,
        *,
        secp: int = SECP_DHCHAP,
        spsp0: int = SPSP0_DHCHAP,
        spsp1: int = SPSP1_DHCHAP,
    ) -> CommandResult:
        """Answer one AUTH_Receive of ``al`` bytes (``nvmet_execute_auth_receive``): the data
        is exactly ``al`` bytes, the message zero-padded, as nvmet copies its whole buffer."""
        minimum = self._minimum_receive_length()
        if minimum is not None and al < minimum:
            al = 0  # nvmet turns a too-short AL into 0, then refuses it
        refused = check_auth_command(secp, spsp0, spsp1, al)
        message = b""
        if refused is None:
            message = self._produce(al)
        # nvmet's epilogue (the done label) runs for refused commands too.
        if self.step == MessageId.SUCCESS2:
            self._clear()
        elif self.step == MessageId.FAILURE1:
            self._clear()
            self.fatal_error = True
        return refused or CommandResult(data=message[:al].ljust(al, b"\0"))

    def _produce(self, al: int) -> bytes:
        message = b""
        if self.step == MessageId.CHALLENGE:
            message = self._challenge(al)
        elif self.step == MessageId.SUCCESS1:
            message, reason = self._success1()
            if reason:
                self.status = reason
                self.authenticated = False
                message = self._failure1()
            else:
                self.step = MessageId.SUCCESS2
        elif self.step == MessageId.FAILURE1:
            self.authenticated = False
            message = self._failure1()
        else:
            self._fail1(FailureReason.FAILED)
            message = self._failure1()
        return message

    def _challenge(self, al: int) -> bytes:
        """``nvmet_auth_challenge``; empty when AL is too small (the step then stays)."""
        ctrl = self.controller
        hash_len = hash_length(ctrl.hash_id)
        dh_value = ctrl.dh_key.public_value if ctrl.dh_key is not None else b""
        if al < 16 + hash_len + len(dh_value):
            return b""
        self.s1 = ctrl.seqnum()
        self.c1 = ctrl.random_bytes(hash_len)
        self.step = MessageId.REPLY
        return build_challenge(
            Challenge(
                t_id=self.transaction_id,
                hash_id=ctrl.hash_id,
                seqnum=self.s1,
                challenge=self.c1,
                dh_group=ctrl.dh_group if ctrl.dh_key is not None else DhGroup.NULL,
                dh_value=dh_value,
            )
        )

    def _success1(self) -> tuple[bytes, int]:
        """``nvmet_auth_success1``: the message, or a failure reason."""
        ctrl = self.controller
        hash_len = hash_length(ctrl.hash_id)
        response = None
        if self.c2 is not None:
            if ctrl.ctrl_key is None:
                return b"", FailureReason.FAILED
            session_key = None
            if ctrl.dh_group != DhGroup.NULL:
                session_key = self.session_key or b""
            try:
                response = controller_response(
                    ctrl.hash_id,
                    ctrl.ctrl_key,
                    self.c2,
                    seqnum=self.s2,
                    transaction_id=self.transaction_id,
                    hostnqn=ctrl.hostnqn,
                    subsysnqn=ctrl.subsysnqn,
                    session_key=session_key,
                )
            except ValueError:  # nvmet_auth_ctrl_hash refuses C2's length
                return b"", FailureReason.HASH_UNUSABLE
        return build_success1(Success1(self.transaction_id, hash_len, response)), 0

    def _failure1(self) -> bytes:  # nvmet_auth_failure1
        return build_failure(Failure(self.transaction_id, self.status))
