"""In-band authentication (DH-HMAC-CHAP) on the target's queues: who must authenticate, the
Authentication Send / Receive commands, and what an unauthenticated queue may do.

The protocol is :mod:`nvmeof.auth.controller` (sans-IO, nvmet's rules); this module wires it to
queues the way nvmet does (docs/AUTH.md):

* ``nvmet_setup_auth``: a controller authenticates its host when the subsystem does not allow
  any host and the host, one of its allowed hosts, has a DH-HMAC-CHAP key (a subsystem that
  allows any host never asks, whatever keys its hosts have). The Connect response of every queue
  of such a controller then carries ATR, and each queue runs its own transaction.
* ``nvmet_check_auth_status``: until its queue is authenticated, a command other than a
  Fabrics one is refused with Authentication Required (0x191), DNR.
* the transaction timer (``nvmet_auth_expired_work``, KATO or 120 s): kept as a deadline looked
  at when the next authentication command arrives, which is when nvmet's reset shows.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

from nvmeof.auth.constants import DHGROUP_NAMES, HASH_NAMES, AuthType, FailureReason, MessageId
from nvmeof.auth.controller import (
    CommandResult,
    ControllerAuth,
    HostAuthConfig,
    QueueAuth,
    check_auth_command,
    expiry_seconds,
)
from nvmeof.auth.crypto import SequenceCounter
from nvmeof.auth.messages import AUTH_RECEIVE_COMMAND, AUTH_SEND_COMMAND
from nvmeof.auth.secret import parse_secret
from nvmeof.errors import CommandError
from nvmeof.status import StatusCode
from target.commands.request import (
    ExecuteResult,
    QueueContext,
    Reply,
    Request,
    check_transfer_len,
    fail,
)

if TYPE_CHECKING:
    from target.controller import Controller

log = logging.getLogger("nvmeof.target")

_HASH_IDS = {name: hash_id for hash_id, name in HASH_NAMES.items()}
_DHGROUP_IDS = {name: group for group, name in DHGROUP_NAMES.items()}
#: One counter of S1 values for the whole target, as the kernel has one (nvme_auth_get_seqnum).
_SEQNUM = SequenceCounter.from_random(os.urandom)


def setup_controller_auth(q: QueueContext, ctrl: Controller, hostnqn: str) -> None:
    """nvmet_setup_auth at admin Connect: give ``ctrl`` its authentication state, or none."""
    sub = ctrl.subsystem
    if sub is None or sub.allow_any_host:
        return
    config = _host_auth_config(q, hostnqn)
    if config is not None:
        ctrl.auth = ControllerAuth(config, hostnqn=hostnqn, subsysnqn=sub.nqn,
                                   random_bytes=os.urandom, seqnum=_SEQNUM)  # fmt: skip


def _host_auth_config(q: QueueContext, hostnqn: str) -> HostAuthConfig | None:
    """The host's DH-HMAC-CHAP settings as the target holds them now (None: no key)."""
    host = q.state.host_config(hostnqn)
    if host is None or host.dhchap_key is None:
        return None
    return HostAuthConfig(
        key=parse_secret(host.dhchap_key),
        ctrl_key=None if host.dhchap_ctrl_key is None else parse_secret(host.dhchap_ctrl_key),
        hash_id=_HASH_IDS[host.dhchap_hash],
        dh_group=_DHGROUP_IDS[host.dhchap_dhgroup],
    )  # fmt: skip


def connect_result(q: QueueContext, ctrl: Controller, qid: int) -> int:
    """Connect's DW0 for queue ``qid`` (nvmet_connect_result): CNTLID, and ATR with a fresh
    transaction on the queue when its controller authenticates (nvmet_auth_sq_init)."""
    if ctrl.auth is None:
        return ctrl.cntlid
    q.auth = ctrl.auth.queue(qid)
    q.auth_deadline = float("inf")
    return ctrl.auth.connect_result(ctrl.cntlid)


def check_authenticated(q: QueueContext, command: str) -> None:
    """nvmet_check_auth_status, for a command other than a Fabrics one."""
    auth = q.auth
    if auth is not None and not auth.authenticated:
        raise fail(StatusCode.AUTH_REQUIRED, f"{command} before authentication")


def execute_auth_send(q: QueueContext, req: Request) -> ExecuteResult:
    """nvmet_execute_auth_send."""
    auth = _transaction(q)
    cmd = AUTH_SEND_COMMAND.parse(req.sqe)
    if check_auth_command(cmd.secp, cmd.spsp0, cmd.spsp1, cmd.tl) is None:
        check_transfer_len(req, cmd.tl)  # nvmet_check_transfer_len: answered, nothing else
    data = bytes(req.data or b"")
    ctrl = q.controller
    if q.qid == 0 and ctrl is not None and ctrl.auth is not None and _starts_over(data):
        config = _host_auth_config(q, ctrl.hostnqn)  # keys rotated since Connect apply now
        if config is not None:
            ctrl.auth.reconfigure(config)
    before = auth.successes
    result = auth.auth_send(data, secp=cmd.secp, spsp0=cmd.spsp0, spsp1=cmd.spsp1)
    if auth.timer_armed:
        ctrl = q.controller
        kato_s = ctrl.kato_ms // 1000 if ctrl is not None else 0
        q.auth_deadline = q.now() + expiry_seconds(kato_s)
    # A host's failure2 (it refused our response) reaches nvmet as a common message out of step:
    # INCORRECT_MESSAGE; say what it was.
    refused_us = len(data) >= 2 and data[1] == MessageId.FAILURE2
    return _finish(q, auth, result, before, "the host refused the controller" if refused_us else "")


def execute_auth_receive(q: QueueContext, req: Request) -> ExecuteResult:
    """nvmet_execute_auth_receive: exactly AL bytes of the step's message."""
    auth = _transaction(q)
    cmd = AUTH_RECEIVE_COMMAND.parse(req.sqe)
    if check_auth_command(cmd.secp, cmd.spsp0, cmd.spsp1, cmd.al) is None:
        check_transfer_len(req, cmd.al)
    before = auth.successes
    result = auth.auth_receive(cmd.al, secp=cmd.secp, spsp0=cmd.spsp0, spsp1=cmd.spsp1)
    return _finish(q, auth, result, before)


def _starts_over(data: bytes) -> bool:
    """A negotiate: (re-)authentication begins."""
    return len(data) >= 2 and data[0] == AuthType.COMMON and data[1] == MessageId.NEGOTIATE


def _transaction(q: QueueContext) -> QueueAuth:
    auth = q.auth
    assert auth is not None  # dispatch routes here only for queues that authenticate
    if q.now() >= q.auth_deadline:  # the timer ran out since the last message
        auth.expire()
        q.auth_deadline = float("inf")
    return auth


def _finish(q: QueueContext, auth: QueueAuth, result: CommandResult, successes_before: int,
            why: str = "") -> ExecuteResult:  # fmt: skip
    ctrl = q.controller
    who = f"host={ctrl.hostnqn} cntlid={ctrl.cntlid} qid={q.qid}" if ctrl else f"qid={q.qid}"
    if auth.successes > successes_before and not auth.fatal_error:
        q.state.auth_results["success"] = q.state.auth_results.get("success", 0) + 1
        if q.qid == 0:
            log.info("authenticated %s", who)
    if auth.fatal_error:
        # nvmet_ctrl_fatal_error once the answer (a failure1, say) is out; logged once
        known = auth.status in {r.value for r in FailureReason}
        reason = FailureReason(auth.status).name if known else str(auth.status)
        log.warning("authentication failed %s reason=%s%s", who, reason,
                    f" ({why}: failure2)" if why else "")  # fmt: skip
        q.state.auth_results["failure"] = q.state.auth_results.get("failure", 0) + 1
        q.fatal(f"authentication failed: {reason}")
    if result.status.code:
        raise CommandError(result.status, "authentication command refused",
                           loc=result.error_location)  # fmt: skip
    return Reply(data=result.data) if result.data else Reply()


AUTH_HANDLERS = {0x05: execute_auth_send, 0x06: execute_auth_receive}
