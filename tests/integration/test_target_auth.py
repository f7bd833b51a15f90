"""DH-HMAC-CHAP on the target over real TCP: raw Connect, then the sans-IO host side
(nvmeof.auth.host, what the Linux host does) through AUTH_Send / AUTH_Receive on the wire.

Checks: ATR in every queue's Connect answer exactly when nvmet would ask (allowed host with a
key, subsystem not open to any host); Authentication Required for everything but Fabrics
commands until the queue is authenticated; every hash x DH group one-way, bidirectional
across groups; a wrong key ends in failure1 (FAILED) and the association goes; I/O queues
authenticate on their own; the metrics count both outcomes."""

from __future__ import annotations

import os
from itertools import product

import pytest
import trio

from initiator.queue import HostQueue
from nvmeof.auth.constants import CONNECT_AUTHREQ_ATR, FailureReason, MessageId
from nvmeof.auth.crypto import SequenceCounter
from nvmeof.auth.host import HostAuth
from nvmeof.auth.messages import AUTH_RECEIVE_COMMAND, AUTH_SEND_COMMAND, parse_header
from nvmeof.auth.secret import format_secret, generate_secret, parse_secret
from nvmeof.constants import AdminOpcode, Cns, FabricsType
from nvmeof.status import StatusCode
from nvmeof.wire.sqe import IDENTIFY_COMMAND
from target.config import (
    DHCHAP_DHGROUPS,
    DHCHAP_HASHES,
    HostConfig,
    NamespaceConfig,
    PortConfig,
    SubsystemConfig,
    TargetConfig,
)

NQN = "nqn.2026-12.io.nvmeof-emu:auth"
HOST = "nqn.2014-08.org.nvmexpress:uuid:0a0a0a0a-1111-2222-3333-444444444444"
AUTH_REQUIRED_DNR = 0x8000 | (StatusCode.AUTH_REQUIRED << 1)


def secret(seed: int, hmac_id: int = 0, length: int = 32) -> str:
    return format_secret(generate_secret(bytes((seed + i) % 256 for i in range(length)), hmac_id))


HOST_KEY, CTRL_KEY, WRONG_KEY = secret(1, 1), secret(2, 2, 48), secret(3, 1)


def auth_config(host: HostConfig, *, allow_any_host: bool = False) -> TargetConfig:
    sub = SubsystemConfig(nqn=NQN, namespaces=(NamespaceConfig(nsid=1, size=1 << 20),),
                          allow_any_host=allow_any_host,
                          allowed_hosts=() if allow_any_host else (HOST,))  # fmt: skip
    return TargetConfig(subsystems=(sub,), hosts=(host,),
                        ports=(PortConfig(id=1, port=0, subsystems=(NQN,)),))  # fmt: skip


async def authenticate(queue: HostQueue, host: HostAuth) -> HostAuth:
    """Run ``host``'s exchange on ``queue`` as nvme_queue_auth_work does."""
    payload: bytes | None = host.negotiate()
    step = 0
    while payload is not None or host.result is None:
        if payload is not None:
            send = AUTH_SEND_COMMAND.build(dict(tl=len(payload)))
            done = await queue.submit(send, write=payload, timeout=5)
            assert done.status_word & ~1 == 0, hex(done.status_word)
            payload = None
            if host.result is not None:
                break
        buffer = bytearray(host.receive_length)
        receive = AUTH_RECEIVE_COMMAND.build(dict(al=len(buffer)))
        done = await queue.submit(receive, read=buffer, timeout=5)
        assert done.status_word & ~1 == 0, hex(done.status_word)
        handle = host.handle_challenge if step == 0 else host.handle_success1
        payload = handle(bytes(buffer))
        step += 1
    return host


def host_auth(key: str, qid: int = 0, ctrl_key: str | None = None, tid: int = 0) -> HostAuth:
    return HostAuth(parse_secret(key), ctrl_secret=None if ctrl_key is None else parse_secret(ctrl_key),
                    hostnqn=HOST, subsysnqn=NQN, transaction_id=tid, random_bytes=os.urandom,
                    seqnum=SequenceCounter.from_random(os.urandom), qid=qid)  # fmt: skip


async def enable(queue: HostQueue) -> None:
    """Property Set CC.EN (IOSQES 6, IOCQES 4), as a host does after Connect."""
    sqe = bytearray(64)
    sqe[0], sqe[1], sqe[4] = 0x7F, 0x40, FabricsType.PROPERTY_SET
    sqe[44:48] = (0x14).to_bytes(4, "little")
    sqe[48:56] = (0x460001).to_bytes(8, "little")
    assert (await queue.submit(sqe, timeout=5)).status_word & ~1 == 0


async def identify_status(queue: HostQueue) -> int:
    sqe = IDENTIFY_COMMAND.build(dict(opcode=AdminOpcode.IDENTIFY, cns=Cns.CONTROLLER))
    done = await queue.submit(sqe, read=bytearray(4096), timeout=5)
    return done.status_word & ~1


async def test_atr_and_authentication_required_until_authenticated(start_target) -> None:  # type: ignore[no-untyped-def]
    lb = await start_target(auth_config(HostConfig(nqn=HOST, dhchap_key=HOST_KEY)))
    with trio.fail_after(20):
        admin = await lb.queue(1)
        done = await lb.raw_connect(admin, subnqn=NQN, hostnqn=HOST, kato=5000)
        assert done.status_word & ~1 == 0 and done.dw0 & CONNECT_AUTHREQ_ATR
        cntlid = done.dw0 & 0xFFFF
        assert await identify_status(admin) == AUTH_REQUIRED_DNR  # not before authentication
        prop = bytearray(64)  # a Fabrics Property Get is allowed (nvmet_parse_fabrics_admin_cmd)
        prop[0], prop[1], prop[4], prop[40] = 0x7F, 0x40, FabricsType.PROPERTY_GET, 1  # CAP, 8 B
        assert (await admin.submit(prop, timeout=5)).status_word & ~1 == 0
        host = await authenticate(admin, host_auth(HOST_KEY))
        assert host.result is not None and host.result.authenticated
        await enable(admin)
        assert await identify_status(admin) == 0
        # an I/O queue has its own transaction: ATR again, refused until it authenticates
        io = await lb.queue(1, qid=1)
        done = await lb.raw_connect(io, qid=1, cntlid=cntlid, subnqn=NQN, hostnqn=HOST)
        assert done.dw0 & CONNECT_AUTHREQ_ATR
        await authenticate(io, host_auth(HOST_KEY, qid=1, tid=1))
    metrics = lb.target.state.auth_results
    assert metrics.get("success") == 2 and not metrics.get("failure")


async def test_reauthentication_picks_up_a_rotated_key(start_target) -> None:  # type: ignore[no-untyped-def]
    """nvmet reads the host's keys again when a negotiate restarts authentication on the admin
    queue: after `ctl host set-key`, the host re-authenticates with the new key, on the live
    association (the Linux host does when its sysfs dhchap_secret changes)."""
    lb = await start_target(auth_config(HostConfig(nqn=HOST, dhchap_key=HOST_KEY)))
    new_key = secret(9, 3, 64)
    with trio.fail_after(20):
        admin = await lb.queue(1)
        await lb.raw_connect(admin, subnqn=NQN, hostnqn=HOST, kato=5000)
        await authenticate(admin, host_auth(HOST_KEY))
        await lb.target.host_set_key(HOST, dhchap_key=new_key)
        again = await authenticate(admin, host_auth(new_key, tid=1))
        assert again.result is not None and again.result.authenticated
        await enable(admin)
        assert await identify_status(admin) == 0  # the association carries on
    assert lb.target.state.auth_results == {"success": 2}


async def test_allow_any_host_never_asks(start_target) -> None:  # type: ignore[no-untyped-def]
    """nvmet_setup_auth: a subsystem open to any host does not authenticate, keys or not."""
    lb = await start_target(auth_config(HostConfig(nqn=HOST, dhchap_key=HOST_KEY),
                                        allow_any_host=True))  # fmt: skip
    with trio.fail_after(20):
        admin = await lb.queue(1)
        done = await lb.raw_connect(admin, subnqn=NQN, hostnqn=HOST)
        assert not done.dw0 & CONNECT_AUTHREQ_ATR
        await enable(admin)
        assert await identify_status(admin) == 0


@pytest.mark.parametrize(("hash_name", "group"), list(product(DHCHAP_HASHES, DHCHAP_DHGROUPS)))
async def test_every_hash_and_group_bidirectional(start_target, hash_name: str, group: str) -> None:  # type: ignore[no-untyped-def]
    host = HostConfig(nqn=HOST, dhchap_key=HOST_KEY, dhchap_ctrl_key=CTRL_KEY,
                      dhchap_hash=hash_name, dhchap_dhgroup=group)  # fmt: skip
    lb = await start_target(auth_config(host))
    with trio.fail_after(30):
        admin = await lb.queue(1)
        await lb.raw_connect(admin, subnqn=NQN, hostnqn=HOST)
        result = (await authenticate(admin, host_auth(HOST_KEY, ctrl_key=CTRL_KEY))).result
        assert result is not None and result.authenticated, result
        await enable(admin)
        assert await identify_status(admin) == 0


async def test_a_wrong_key_ends_in_failure1_and_the_association(start_target) -> None:  # type: ignore[no-untyped-def]
    lb = await start_target(auth_config(HostConfig(nqn=HOST, dhchap_key=HOST_KEY,
                                                   dhchap_dhgroup="ffdhe2048")))  # fmt: skip
    with trio.fail_after(20):
        admin = await lb.queue(1)
        await lb.raw_connect(admin, subnqn=NQN, hostnqn=HOST)
        host = host_auth(WRONG_KEY)
        payload = host.negotiate()
        for message in (payload, None):
            if message is not None:
                await admin.submit(AUTH_SEND_COMMAND.build(dict(tl=len(message))), write=message,
                                   timeout=5)  # fmt: skip
            buffer = bytearray(4096)
            await admin.submit(AUTH_RECEIVE_COMMAND.build(dict(al=4096)), read=buffer, timeout=5)
            if message is not None:  # the challenge: answer it with the wrong key
                reply = host.handle_challenge(bytes(buffer))
                assert reply is not None
                await admin.submit(AUTH_SEND_COMMAND.build(dict(tl=len(reply))), write=reply,
                                   timeout=5)  # fmt: skip
        failure = parse_header(bytes(buffer[:8]))
        assert failure.auth_id == MessageId.FAILURE1
        assert buffer[7] == FailureReason.FAILED  # rescode_exp
        await lb.wait_until(lambda: not lb.target.state.subsystems[NQN].controllers)
    assert lb.target.state.auth_results.get("failure") == 1


async def test_fault_rules_fail_or_delay_authentication_messages(start_target) -> None:  # type: ignore[no-untyped-def]
    """A rule on the Fabrics type (fctype 5 AUTH_Send, 6 AUTH_Receive) of one host: the host's
    authentication breaks or slows down, like any other command's."""
    lb = await start_target(auth_config(HostConfig(nqn=HOST, dhchap_key=HOST_KEY)))
    lb.target.fault_add({"action": "delay", "opcode": 0x7F, "fctype": 0x06, "host": HOST,
                         "delay_ms": 300, "queue": "admin", "count": 1})  # fmt: skip
    lb.target.fault_add({"action": "status", "opcode": 0x7F, "fctype": 0x05, "host": HOST,
                         "status": StatusCode.INTERNAL, "dnr": True, "queue": "admin",
                         "count": 1})  # fmt: skip
    with trio.fail_after(20):
        admin = await lb.queue(1)
        await lb.raw_connect(admin, subnqn=NQN, hostnqn=HOST)  # Connect: not fctype 5 or 6
        host = host_auth(HOST_KEY)
        negotiate = host.negotiate()
        send = AUTH_SEND_COMMAND.build(dict(tl=len(negotiate)))
        refused = await admin.submit(send, write=negotiate, timeout=5)
        assert refused.status_word & ~1 == 0x8000 | (StatusCode.INTERNAL << 1)  # injected
        started = trio.current_time()
        await authenticate(admin, host_auth(HOST_KEY))  # the next run: its receive is late
        assert trio.current_time() - started >= 0.3
    assert lb.target.state.faults_fired == {"status": 1, "delay": 1}


async def test_our_host_and_our_target_authenticate_each_other(start_target) -> None:  # type: ignore[no-untyped-def]
    """Both sides' plumbing: our initiator (ControllerOptions' secrets) against our target,
    admin and I/O queues, bidirectional, then verified I/O; a wrong key is a clear, permanent
    error and the target logged the failure."""
    from initiator.auth import AuthenticationError

    host = HostConfig(nqn=HOST, dhchap_key=HOST_KEY, dhchap_ctrl_key=CTRL_KEY,
                      dhchap_hash="hmac(sha512)", dhchap_dhgroup="ffdhe3072")  # fmt: skip
    lb = await start_target(auth_config(host))
    with trio.fail_after(30):
        ctrl = await lb.connect(1, NQN, hostnqn=HOST, dhchap_secret=HOST_KEY,
                                dhchap_ctrl_secret=CTRL_KEY, io_queues=2)  # fmt: skip
        data = bytes(range(256)) * 16
        assert (await ctrl.write(1, 16, data, 512)).ok
        done, back = await ctrl.read(1, 16, len(data) // 512, 512)
        assert done.ok and back == data
        assert lb.target.state.auth_results == {"success": 3}  # the admin and two I/O queues
        with pytest.raises(AuthenticationError, match=r"failure1, reason FAILED \(1\)") as err:
            await lb.connect(1, NQN, hostnqn=HOST, dhchap_secret=WRONG_KEY)
        assert err.value.permanent
    assert lb.target.state.auth_results == {"success": 3, "failure": 1}
