"""DH-HMAC-CHAP on a host queue: AUTH_Send / AUTH_Receive around :class:`nvmeof.auth.host.HostAuth`.

As the Linux host (drivers/nvme/host/fabrics.c ``nvmf_connect_admin_queue`` /
``nvmf_connect_io_queue``, host/auth.c ``nvme_queue_auth_work``): after each queue's Connect
whose result DW0 has ATR (or ASCR) set, the queue authenticates, the admin queue first, then
each I/O queue on itself (``nvme_auth_submit``: the admin queue for qid 0, the I/O queue for
qid > 0). T_ID comes from a per-controller counter (``ctrl->transaction++``) that lives as
long as the controller, across reconnects: :class:`AuthState`, owned by the session.

A queue whose Connect result has ATR clear is not authenticated, whatever secret is configured
(the kernel calls ``nvme_auth_negotiate`` only when ATR or ASCR is set).

Failures raise :class:`AuthenticationError`; ``permanent`` marks the ones the Linux host does
not reconnect after (``nvmf_should_reconnect``): -EKEYREJECTED (a failure1, an unusable message,
a wrong controller response), -ENOKEY (no key for a controller that requires one: a 2025
fabrics.c change; 6.12 still retries it) and an AUTH_Send/AUTH_Receive refused with DNR. A
lost connection, a timeout, an unusable challenge and ASCR (-EOPNOTSUPP) are retried.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NoReturn

import trio

from initiator.queue import Completion, HostQueue, PeerClosed, QueueClosed
from nvmeof.auth.constants import (
    CONNECT_AUTHREQ_ASCR,
    CONNECT_AUTHREQ_ATR,
    DHGROUP_NAMES,
    HASH_NAMES,
    DhGroup,
    FailureReason,
    HashId,
)
from nvmeof.auth.crypto import SequenceCounter
from nvmeof.auth.host import HostAuth, HostResult
from nvmeof.auth.messages import AUTH_RECEIVE_COMMAND, AUTH_SEND_COMMAND
from nvmeof.auth.secret import (
    KEY_LENGTHS,
    DhchapSecret,
    format_secret,
    generate_secret,
    parse_secret,
)
from nvmeof.errors import NvmeofError
from nvmeof.status import Status

log = logging.getLogger("nvmeof.initiator")

#: What each failure2 reason the host finds means (``nvme_queue_auth_work``'s checks).
_HOST_REASONS: dict[int, str] = {
    FailureReason.FAILED: "the controller's response did not match (bidirectional)",
    FailureReason.HASH_UNUSABLE: "the controller chose an unusable hash or hash length",
    FailureReason.DHGROUP_UNUSABLE: "the controller chose an unusable DH group",
    FailureReason.INCORRECT_PAYLOAD: "the controller's message or DH value was unusable",
    FailureReason.INCORRECT_MESSAGE: "the controller sent an unexpected message (type or T_ID)",
}


class AuthenticationError(NvmeofError):
    """In-band authentication of a queue failed (or could not start).

    ``reason``: the DH-HMAC-CHAP reason code explanation (0 if none); ``permanent``: the
    Linux host would not reconnect after it (see the module docstring).
    """

    def __init__(self, message: str, *, qid: int, reason: int = 0, permanent: bool = True) -> None:
        super().__init__(message)
        self.qid = qid
        self.reason = reason
        self.permanent = permanent


def reason_text(reason: int) -> str:
    """``FAILED (1)``: a reason code explanation's name and number."""
    try:
        return f"{FailureReason(reason).name} ({reason})"
    except ValueError:
        return f"unknown ({reason})"


def parse_secrets(secret: str, ctrl_secret: str) -> tuple[DhchapSecret | None, DhchapSecret | None]:
    """The two ``DHHC-1:`` options, checked: a one-line ValueError naming the option."""
    if ctrl_secret and not secret:
        raise ValueError("--dhchap-ctrl-secret needs --dhchap-secret (the host's own key)")
    parsed: list[DhchapSecret | None] = []
    for flag, text in (("--dhchap-secret", secret), ("--dhchap-ctrl-secret", ctrl_secret)):
        try:
            parsed.append(parse_secret(text) if text else None)
        except ValueError as exc:
            raise ValueError(f"{flag}: {exc}") from None
    return parsed[0], parsed[1]


@dataclass
class AuthState:
    """Per controller, kept across reconnects like ``struct nvme_ctrl``: the T_ID counter,
    the sequence numbers (S2), and the outcome counts for metrics."""

    transaction: int = 0
    seqnum: Callable[[], int] = field(
        default_factory=lambda: SequenceCounter.from_random(os.urandom), repr=False
    )
    random_bytes: Callable[[int], bytes] = field(default=os.urandom, repr=False)
    successes: int = 0
    failures: int = 0

    def next_transaction_id(self) -> int:
        t_id = self.transaction & 0xFFFF
        self.transaction += 1
        return t_id


async def authenticate_queue(
    queue: HostQueue,
    qid: int,
    connect_dw0: int,
    *,
    secret: DhchapSecret | None,
    ctrl_secret: DhchapSecret | None,
    hostnqn: str,
    subsysnqn: str,
    state: AuthState,
    timeout: float,  # noqa: ASYNC109 - the per-command timeout, like admin_timeout
) -> bool:
    """Authenticate ``queue`` (a :class:`~initiator.queue.HostQueue`) if its Connect result
    ``connect_dw0`` asks for it; True when it did. Raises :class:`AuthenticationError`."""
    if not connect_dw0 & (CONNECT_AUTHREQ_ATR | CONNECT_AUTHREQ_ASCR):
        return False
    if connect_dw0 & CONNECT_AUTHREQ_ASCR:
        state.failures += 1
        raise AuthenticationError(
            f"qid {qid}: the controller requires a secure channel (ASCR): secure channel "
            "concatenation is not supported",
            qid=qid,
            permanent=False,  # -EOPNOTSUPP: the Linux host retries it until ctrl_loss_tmo
        )
    if secret is None:
        state.failures += 1
        raise AuthenticationError(
            f"qid {qid}: the controller requires authentication: give --dhchap-secret", qid=qid
        )
    host = HostAuth(
        secret,
        ctrl_secret=ctrl_secret,
        hostnqn=hostnqn,
        subsysnqn=subsysnqn,
        transaction_id=state.next_transaction_id(),
        random_bytes=state.random_bytes,
        seqnum=state.seqnum,
        qid=qid,
    )

    async def submit(sqe: bytes, what: str, **data: bytes | bytearray) -> Completion:
        try:
            done = await queue.submit(sqe, timeout=timeout, **data)  # type: ignore[arg-type]
        except QueueClosed as exc:
            raise _lost(qid, what, queue.error or exc) from None
        except trio.TooSlowError:  # the queue is closed now, as after any command timeout
            raise AuthenticationError(
                f"qid {qid}: authentication failed: no answer to {what} within {timeout:g} s",
                qid=qid,
                permanent=False,
            ) from None
        if not done.ok:
            _refused(qid, what, done.status)
        return done

    async def send(payload: bytes, what: str) -> None:
        sqe = AUTH_SEND_COMMAND.build(dict(tl=len(payload)))
        await submit(sqe, f"AUTH_Send ({what})", write=payload)

    async def receive(what: str) -> bytes:
        buffer = bytearray(host.receive_length)
        sqe = AUTH_RECEIVE_COMMAND.build(dict(al=len(buffer)))
        await submit(sqe, f"AUTH_Receive ({what})", read=buffer)
        return bytes(buffer)

    try:
        await send(host.negotiate(), "negotiate")
        payload = host.handle_challenge(await receive("challenge"))
        if payload is not None and host.result is None:
            await send(payload, "reply")
            payload = host.handle_success1(await receive("success1"))
        if payload is not None and host.result is not None and host.result.authenticated:
            await send(payload, "success2")
        elif payload is not None:
            # failure2 is best effort (nvme_queue_auth_work's fail2: its error counts only
            # when no other was set, and there is always one here)
            try:
                await send(payload, "failure2")
            except (NvmeofError, OSError) as exc:
                log.debug("qid %d: failure2 not delivered: %s", qid, exc)
    except AuthenticationError:
        state.failures += 1
        raise
    result = host.result
    assert result is not None
    if not result.authenticated:
        state.failures += 1
        raise _failed(qid, result)
    state.successes += 1
    log.info(
        "qid %d: authenticated (%s, %s%s)",
        qid,
        HASH_NAMES.get(HashId(host.hash_id), str(host.hash_id)),
        DHGROUP_NAMES.get(DhGroup(host.dh_group), str(host.dh_group)),
        ", bidirectional" if ctrl_secret is not None else "",
    )
    return True


def _lost(qid: int, what: str, cause: BaseException) -> AuthenticationError:
    """The queue died with an AUTH command outstanding. nvmet ends a refused authentication by
    tearing the controller down (``nvmet_ctrl_fatal_error``) before it completes the
    AUTH_Receive carrying failure1, so the failure1 may never arrive. The Linux host reconnects
    after such an error (it is not -EKEYREJECTED): not permanent."""
    hint = ""
    if isinstance(cause, PeerClosed) and "success1" in what:
        hint = "; nvmet closes it so when it refuses the host's response (wrong key?)"
    return AuthenticationError(
        f"qid {qid}: authentication failed: the connection was lost during {what}: {cause}{hint}",
        qid=qid,
        permanent=False,
    )


def _refused(qid: int, what: str, status: Status) -> NoReturn:
    raise AuthenticationError(
        f"qid {qid}: authentication failed: {what} refused: {status.describe(fabrics=True)}",
        qid=qid,
        permanent=status.dnr,  # nvmf_should_reconnect: a positive status with DNR
    )


def _failed(qid: int, result: HostResult) -> AuthenticationError:
    reason = result.reason
    if result.from_controller:
        text = f"the controller answered failure1, reason {reason_text(reason)}"
        permanent = True  # -EKEYREJECTED
    else:
        what = _HOST_REASONS.get(reason, "the exchange failed")
        text = f"{what}: reason {reason_text(reason)}"
        # -EKEYREJECTED for an unusable message and a wrong R2; -EPROTO and the like
        # (a reconnect may help) for the challenge's parameters.
        permanent = reason in (FailureReason.INCORRECT_MESSAGE, FailureReason.FAILED)
    return AuthenticationError(
        f"qid {qid}: authentication failed: {text}", qid=qid, reason=reason, permanent=permanent
    )


def gen_dhchap_key(
    key_length: int | None = None,
    hmac_id: int = 0,
    *,
    nqn: str | None = None,
    secret_hex: str | None = None,
    random_bytes: Callable[[int], bytes] = os.urandom,
) -> str:
    """``nvme gen-dhchap-key``: a ``DHHC-1:`` secret; one-line ValueError on bad input.

    ``key_length`` 32, 48 or 64 (default: the hash's digest size, 32 with no hash);
    ``secret_hex`` gives the key instead of random bytes. With ``nqn`` and a hash, the key is
    transformed as nvme-cli 2.x does (:func:`nvmeof.auth.secret.generate_secret`), which then
    wants the key as long as the digest.
    """
    if not 0 <= hmac_id <= 3:
        raise ValueError(f"--hmac {hmac_id}: not 0 (none), 1 (SHA-256), 2 (SHA-384), 3 (SHA-512)")
    if secret_hex is not None:
        try:
            key = bytes.fromhex(secret_hex)
        except ValueError:
            raise ValueError("--secret: not a hexadecimal string") from None
        if key_length is not None and len(key) != key_length:
            raise ValueError(f"--secret is {len(key)} bytes, --key-length says {key_length}")
        key_length = len(key)
    if key_length is None:
        key_length = (0, 32, 48, 64)[hmac_id] or 32
    if key_length not in KEY_LENGTHS:
        raise ValueError(f"key length {key_length}: not 32, 48 or 64")
    if secret_hex is None:
        key = random_bytes(key_length)
    return format_secret(generate_secret(key, hmac_id, nqn=nqn))
