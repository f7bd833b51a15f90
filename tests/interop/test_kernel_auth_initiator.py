"""Our initiator's DH-HMAC-CHAP against the Linux kernel's nvmet (Linux 6.12, the trixie guest of
../shared/linuxvm): one-way and bidirectional authentication with verified I/O (write, read
back) under three hash x DH group combinations, a wrong host key (failure1 from nvmet, no
retry), a wrong controller key (our host refuses nvmet), no key, and reconnects that
authenticate again until the host's key stops matching (then no endless reconnecting).

One VM for the module (guest script tests/interop/guest/nvmet_auth_target.sh): nvmet with one
subsystem (attr_allow_any_host 0), one 64 MiB null_blk namespace, one port, and every host of
:data:`HOSTS` configured at once in configfs (hosts/<nqn>/dhchap_key, dhchap_ctrl_key,
dhchap_hash, dhchap_dhgroup). Keys are made here with :func:`nvmeof.auth.secret.generate_secret`
(one as nvme-cli 2.x ``gen-dhchap-key --nqn`` does). The guest port and a control port are
forwarded from free host ports. Skips on the default bookworm guest (Linux 6.1 has no NVMe
in-band authentication): run with ``LINUXVM_RELEASE=trixie``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path as FsPath

import pytest
import trio
from interop_harness import FIGURES, GUEST_DIR, REPO_ROOT, LinuxVM, _stop_group, tail
from test_kernel_target import KernelTarget, free_port

from initiator import ControllerOptions, SessionState, open_host
from initiator.auth import AuthenticationError
from initiator.metrics import initiator_registry
from nvmeof.auth.secret import format_secret, generate_secret

pytestmark = pytest.mark.interop

NQN = "nqn.2014-08.org.nvmexpress:nvmeof-emu-auth"
GUEST_PORT = 4420
GUEST_CTL_PORT = 9998
VM_TIMEOUT = 420  # s, `run -t`
SERVE_TIMEOUT = 360  # s, the guest stops serving after this
READY_TIMEOUT = 180.0  # s until NVMET-READY
CONNECT_TIMEOUT = 60.0  # s for one host's connect (FFDHE under TCG is slow)
BLOCK = 512


def hostnqn(tag: str) -> str:
    return f"nqn.2014-08.org.nvmexpress:uuid:{tag:0>8}-1111-2222-3333-444444444444"


def key(length: int, hmac_id: int, nqn: str | None = None) -> str:
    return format_secret(generate_secret(os.urandom(length), hmac_id, nqn=nqn))


@dataclass(frozen=True)
class AuthHost:
    """One configfs host: what nvmet knows, and the region of the namespace it writes."""

    nqn: str
    key: str
    hash: str
    group: str
    ctrl_key: str | None
    region: int  # first LBA


_H1, _H2, _H3, _H4, _H5 = (hostnqn(t) for t in ("a1", "b2", "c3", "d4", "e5"))
HOSTS = {
    # sha256 + null, one-way; a key used as it is (hash id 0)
    "sha256-null": AuthHost(_H1, key(32, 0), "hmac(sha256)", "null", None, 0),
    # sha384 + ffdhe2048, bidirectional; the host key as nvme-cli 2.x --nqn makes it
    "sha384-ffdhe2048": AuthHost(
        _H2, key(48, 2, _H2), "hmac(sha384)", "ffdhe2048", key(32, 1), 4096
    ),
    # sha512 + ffdhe4096, bidirectional, 64-byte keys transformed with SHA-512
    "sha512-ffdhe4096": AuthHost(_H3, key(64, 3), "hmac(sha512)", "ffdhe4096", key(64, 3), 8192),
    # for the wrong-key cases and the reconnects
    "reconnect": AuthHost(_H4, key(32, 1), "hmac(sha256)", "ffdhe2048", None, 12288),
    "ctrl": AuthHost(_H5, key(32, 1), "hmac(sha256)", "null", key(48, 2), 16384),
}


# ---------------------------------------------------------------------------------------------
# the VM


@contextlib.contextmanager
def auth_target_vm(linuxvm: LinuxVM, workdir: FsPath, figures: list[str]) -> Iterator[KernelTarget]:
    release = os.environ.get("LINUXVM_RELEASE", "bookworm")
    if release != "trixie":
        pytest.skip(
            f"LINUXVM_RELEASE={release}: NVMe in-band authentication needs the trixie guest "
            "(Linux 6.12); Debian 12's Linux 6.1 has CONFIG_NVME_AUTH off"
        )
    hosts_file = workdir / "auth_hosts.txt"
    hosts_file.write_text(
        "".join(f"{h.nqn} {h.key} {h.hash} {h.group} {h.ctrl_key or '-'}\n" for h in HOSTS.values())
    )
    port, ctl_port = free_port(), free_port()
    argv = [str(linuxvm.run_path), "-t", str(VM_TIMEOUT), "-p", f"{port}:{GUEST_PORT}",
            "-p", f"{ctl_port}:{GUEST_CTL_PORT}", "-a", f"{hosts_file}:/root/auth_hosts.txt"]  # fmt: skip
    for name, value in {"NQN": NQN, "PORT": GUEST_PORT, "CTL_PORT": GUEST_CTL_PORT,
                        "TIMEOUT": SERVE_TIMEOUT}.items():  # fmt: skip
        argv += ["-e", f"{name}={value}"]
    argv.append(str(GUEST_DIR / "nvmet_auth_target.sh"))
    log_path = workdir / "vm.log"
    started = time.monotonic()
    proc = subprocess.Popen(argv, cwd=REPO_ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, errors="replace",
                            start_new_session=True)  # fmt: skip
    target = KernelTarget(proc, log_path, (port, port), ctl_port)
    ready, noauth = threading.Event(), threading.Event()

    def pump() -> None:
        assert proc.stdout is not None
        with log_path.open("w") as log:
            for line in proc.stdout:
                log.write(line)
                log.flush()
                target.lines.append(line.rstrip("\n"))
                if line.startswith("NVMET-READY"):
                    ready.set()
                elif line.startswith("NVMET-NOAUTH"):
                    noauth.set()

    reader = threading.Thread(target=pump, name="linuxvm-output", daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        while not ready.wait(0.2):
            if noauth.is_set():
                pytest.skip(next(x for x in target.lines if x.startswith("NVMET-NOAUTH")))
            if proc.poll() is not None:
                reader.join(5)
                pytest.fail(f"linuxvm exited with status {proc.returncode} before NVMET-READY:"
                            f"\n{tail(target.output())}")  # fmt: skip
            if time.monotonic() > deadline:
                pytest.fail(f"no NVMET-READY within {READY_TIMEOUT:g} s:\n{tail(target.output())}")
        ready_line = next(x for x in target.lines if x.startswith("NVMET-READY"))
        figures.append(f"kernel auth target: {ready_line} after {time.monotonic() - started:.1f} s"
                       f" (release {release}); host port {port}; VM log {log_path}")  # fmt: skip
        target.new_kernel_lines()
        yield target
    finally:
        note = "stopped"
        if proc.poll() is None:
            try:
                target.control("stop", timeout=10)
                proc.wait(timeout=60)
            except (AssertionError, subprocess.TimeoutExpired):
                note = "did not stop on request: killed"
                _stop_group(proc, grace=10.0)
        reader.join(10)
        if proc.stdout is not None and not reader.is_alive():
            proc.stdout.close()
        figures.append(f"kernel auth target: VM {note}, exit status {proc.returncode}, "
                       f"{time.monotonic() - started:.1f} s in all")  # fmt: skip


@pytest.fixture(scope="module")
def auth_target(
    linuxvm: LinuxVM, tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config
) -> Iterator[KernelTarget]:
    figures = pytestconfig.stash.setdefault(FIGURES, [])
    with auth_target_vm(linuxvm, tmp_path_factory.mktemp("kernel-auth"), figures) as target:
        yield target


def options(host: AuthHost, *, secret: str | None = None, ctrl_secret: str | None = None,
            **extra: object) -> ControllerOptions:  # fmt: skip
    return ControllerOptions(
        hostnqn=host.nqn,
        io_queues=2,
        kato_ms=5000,
        command_timeout=CONNECT_TIMEOUT,
        dhchap_secret=host.key if secret is None else secret,
        dhchap_ctrl_secret=(host.ctrl_key or "") if ctrl_secret is None else ctrl_secret,
        **extra,  # type: ignore[arg-type]
    )


async def refused(opts: ControllerOptions, port: int) -> AuthenticationError:
    """The AuthenticationError a first connect fails with (Host.connect raises it inside the
    session's ExceptionGroup, as every connect error); asserts that nothing retried it."""
    found: list[AuthenticationError] = []
    with trio.fail_after(CONNECT_TIMEOUT):
        async with open_host(opts) as ours:
            try:
                await ours.connect("127.0.0.1", port, NQN)
            except* AuthenticationError as group:
                found += [e for e in _leaves(group) if isinstance(e, AuthenticationError)]
            assert not ours.sessions  # not kept: the first connect failed, nothing retries
    assert len(found) == 1, found
    return found[0]


def _leaves(error: BaseException) -> list[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        return [leaf for sub in error.exceptions for leaf in _leaves(sub)]
    return [error]


def kernel_lines(target: KernelTarget) -> str:
    return "\n".join(target.new_kernel_lines())


# ---------------------------------------------------------------------------------------------
# authenticated I/O


@pytest.mark.parametrize("name", ["sha256-null", "sha384-ffdhe2048", "sha512-ffdhe4096"])
async def test_authenticated_verified_io(
    auth_target: KernelTarget, name: str, interop_figures: Callable[[str], None]
) -> None:
    host = HOSTS[name]
    started = time.monotonic()
    async with open_host(options(host)) as ours:
        with trio.fail_after(CONNECT_TIMEOUT):
            session = await ours.connect("127.0.0.1", auth_target.ports[0], NQN)
        connect_s = time.monotonic() - started
        assoc = session.assoc
        assert assoc is not None
        queues = 1 + len(assoc.io_queues)
        # every queue authenticated: the admin queue, then each I/O queue on itself
        assert (session.auth.successes, session.auth.failures) == (queues, 0), kernel_lines(
            auth_target
        )
        assert session.auth.transaction == queues  # T_ID 0, 1, ... per controller
        registry = initiator_registry(ours)
        labels = {"path": session.label, "subsystem": NQN}
        assert registry.get_sample_value(
            "nvmeof_initiator_auth_total", {**labels, "result": "success"}
        ) == float(queues)
        head = ours.namespace(NQN, 1)
        with trio.fail_after(30):
            for queue_index in range(len(assoc.io_queues)):
                data = os.urandom(8 * BLOCK)
                lba = host.region + 64 * queue_index
                done = await assoc.write(1, lba, data, BLOCK, queue=queue_index)
                assert done.ok, done.status
                done, back = await assoc.read(1, lba, 8, BLOCK, queue=queue_index)
                assert done.ok and bytes(back) == data
            data = os.urandom(64 * 1024)
            await head.write(host.region + 512, data)
            assert bytes(await head.read(host.region + 512, len(data) // BLOCK)) == data
    log = kernel_lines(auth_target)
    assert "mismatch" not in log and "failed" not in log.lower(), log
    interop_figures(f"auth {name} ({'bidirectional' if host.ctrl_key else 'one-way'}): {queues} queues "
           f"authenticated, connect {connect_s:.2f} s")  # fmt: skip


# ---------------------------------------------------------------------------------------------
# refusals


FAILURE1_TEXT = "qid 0: authentication failed: the controller answered failure1, reason FAILED (1)"
LOST_TEXT = (
    "qid 0: authentication failed: the connection was lost during AUTH_Receive (success1): "
    "connection closed by the target; nvmet closes it so when it refuses the host's response "
    "(wrong key?)"
)
WRONG_KEY_ATTEMPTS = 8


async def test_wrong_host_key_is_refused_with_the_reason(
    auth_target: KernelTarget, interop_figures: Callable[[str], None]
) -> None:
    """nvmet answers failure1 (reason FAILED) to a wrong host response, but it tears the
    controller down (``nvmet_ctrl_fatal_error``) before completing that AUTH_Receive, so the
    failure1 races the connection's end: both outcomes are clear, and at least one of a few
    attempts must show the failure1."""
    seen: list[str] = []
    for _ in range(WRONG_KEY_ATTEMPTS):
        err = await refused(options(HOSTS["sha256-null"], secret=key(32, 0)), auth_target.ports[0])
        assert str(err) in (FAILURE1_TEXT, LOST_TEXT), kernel_lines(auth_target)
        assert (err.reason, err.permanent) == ((1, True) if err.permanent else (0, False))
        seen.append("failure1" if err.permanent else "lost")
        if err.permanent:
            break
    interop_figures(f"wrong host key: {', '.join(seen)} (nvmet's failure1 vs its teardown)")
    assert seen[-1] == "failure1", seen
    log = kernel_lines(auth_target)
    assert "failure1" in log or "response mismatch" in log, log


async def test_wrong_controller_key_makes_our_host_refuse(auth_target: KernelTarget) -> None:
    host = HOSTS["ctrl"]
    err = await refused(options(host, ctrl_secret=key(48, 2)), auth_target.ports[0])
    assert str(err) == (
        "qid 0: authentication failed: the controller's response did not match "
        "(bidirectional): reason FAILED (1)"
    ), kernel_lines(auth_target)
    assert (err.reason, err.permanent) == (1, True)
    # the right controller key works (nvmet computed R2 as we do)
    async with open_host(options(host)) as ours:
        with trio.fail_after(CONNECT_TIMEOUT):
            session = await ours.connect("127.0.0.1", auth_target.ports[0], NQN)
        assert (session.auth.successes, session.auth.failures) == (3, 0)


async def test_no_key_for_a_controller_that_requires_one(auth_target: KernelTarget) -> None:
    err = await refused(
        options(HOSTS["sha256-null"], secret="", ctrl_secret=""), auth_target.ports[0]
    )
    assert str(err) == "qid 0: the controller requires authentication: give --dhchap-secret"


# ---------------------------------------------------------------------------------------------
# reconnects


async def wait_for(predicate: Callable[[], bool], limit: float, what: str) -> None:
    with trio.move_on_after(limit):
        while not predicate():  # noqa: ASYNC110 - polling session counters, as the other tests do
            await trio.sleep(0.1)
        return
    raise AssertionError(f"{what}: not within {limit:g} s")


async def test_reconnects_authenticate_again_and_stop_when_the_key_changes(
    auth_target: KernelTarget, caplog: pytest.LogCaptureFixture
) -> None:
    host = HOSTS["reconnect"]
    opts = options(host, reconnect_delay=1.0, ctrl_loss_tmo=120.0)
    caplog.set_level(logging.INFO, logger="nvmeof.initiator")
    async with open_host(opts) as ours:
        with trio.fail_after(CONNECT_TIMEOUT):
            session = await ours.connect("127.0.0.1", auth_target.ports[0], NQN)
        queues = session.auth.successes
        assert queues == 3
        head = ours.namespace(NQN, 1)
        data = os.urandom(4096)
        with trio.fail_after(30):
            await head.write(host.region, data)
        # nvmet drops the controller: the host reconnects and authenticates every queue again
        await auth_target.acontrol("bounce")
        await wait_for(lambda: session.auth.successes >= 2 * queues and session.live, 60,
                       "reconnect with authentication")  # fmt: skip
        assert session.auth.failures == 0
        assert session.auth.transaction == 2 * queues  # the T_ID counter carried on
        with trio.fail_after(30):
            assert bytes(await head.read(host.region, 8)) == data
        # the host's key changes on the target: the next reconnect fails and is the last
        before = session.reconnects
        await auth_target.acontrol(f"key {host.nqn} {key(32, 1)}")
        await auth_target.acontrol("bounce")
        await wait_for(lambda: session.state is SessionState.DELETED, 60, "giving up")
        attempts = session.reconnects
        await trio.sleep(3 * opts.reconnect_delay)  # no more attempts
        assert session.reconnects == attempts and session.state is SessionState.DELETED
        # one failure1 ends it; an attempt whose failure1 lost the race with nvmet's teardown
        # is retried, as the Linux host retries it
        assert 1 <= session.auth.failures <= attempts - before, (before, attempts)
    messages = [r.getMessage() for r in caplog.records]
    gave_up = [m for m in messages if "not reconnecting" in m]
    assert gave_up and gave_up[0].endswith(
        "not reconnecting: qid 0: authentication failed: the controller answered failure1, "
        "reason FAILED (1)"
    ), messages
    assert not any(host.key in m for m in messages)  # no secret in the log
