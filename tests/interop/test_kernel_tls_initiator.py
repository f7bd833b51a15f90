"""Our initiator over NVMe/TCP TLS 1.3 with a pre-shared key (TP 8011) against the Linux kernel's
nvmet and tlshd (Linux 6.12, ktls-utils 1.0.0: the trixie guest of ../shared/linuxvm): verified
I/O with an 01 (SHA-256) key and an 02 (SHA-384, 48-byte) key, a TLS-optional port served in the
clear and over TLS, ``nvmeof bench --verify --tls-key`` from the command line, and the
refusals: a wrong key and a host the target has no key for (a permanent, clear TLS error, no
hang, no reconnect), a plaintext ICReq to the TLS-required port (closed by nvmet: an error that
says the port may need ``--tls``).

One VM for the module (guest script tests/interop/guest/nvmet_tls_target.sh): tlshd, the keys of
:data:`KEYS` filed in the .nvme keyring by nvme-cli 2.13 (compat derivation, docs/TLS.md), nvmet
with one subsystem (any host), a 64 MiB null_blk namespace, guest port 4420 with
``addr_tsas=tls1.3 addr_treq=required`` and 4421 with ``addr_treq="not required"``, both and a
control port forwarded from free host ports. Skips on the default bookworm guest (Linux 6.1 has
no NVMe/TCP TLS): run with ``LINUXVM_RELEASE=trixie``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path as FsPath

import pytest
import trio
from interop_harness import (
    FIGURES,
    GUEST_DIR,
    REPO_ROOT,
    LinuxVM,
    _stop_group,
    tail,
    tls_interchange_key,
)
from test_kernel_target import KernelTarget, free_port

from initiator import ControllerOptions, open_host
from initiator.metrics import initiator_registry
from initiator.tls import TlsHandshakeError

pytestmark = pytest.mark.interop

NQN = "nqn.2014-08.org.nvmexpress:nvmeof-emu-tls"
GUEST_PORTS = (4420, 4421)  # TLS required, TLS not required
GUEST_CTL_PORT = 9998
VM_TIMEOUT = 300  # s, `run -t`
SERVE_TIMEOUT = 240  # s, the guest stops serving after this
READY_TIMEOUT = 120.0  # s until NVMET-READY
CONNECT_TIMEOUT = 30.0  # s for one controller's connect
REFUSAL_LIMIT = 15.0  # s: a refused handshake must end well before this
BLOCK = 512


def hostnqn(tag: str) -> str:
    return f"nqn.2014-08.org.nvmexpress:uuid:{tag:0>8}-1111-2222-3333-444444444444"


H01, H02, HCLI, HNOKEY = (hostnqn(t) for t in ("7a01", "7b02", "7c03", "7d04"))
#: host -> (its key as filed in the guest, first LBA of the namespace region it writes)
KEYS = {H01: (tls_interchange_key(1), 0), H02: (tls_interchange_key(2), 8192),
        HCLI: (tls_interchange_key(1), 16384)}  # fmt: skip
SHA256_SUITES = ("AES-128-GCM", "CHACHA20-POLY1305", "AES-128-CCM")


# ---------------------------------------------------------------------------------------------
# the VM


@contextlib.contextmanager
def tls_target_vm(linuxvm: LinuxVM, workdir: FsPath, figures: list[str]) -> Iterator[KernelTarget]:
    release = os.environ.get("LINUXVM_RELEASE", "bookworm")
    if release != "trixie":
        pytest.skip(f"LINUXVM_RELEASE={release}: NVMe/TCP TLS needs the trixie guest (Linux 6.12 "
                    "+ tlshd); Debian 12's Linux 6.1 has no CONFIG_NVME_TARGET_TCP_TLS (TLS came "
                    "in 6.7)")  # fmt: skip
    keys_file = workdir / "tls_keys.txt"
    keys_file.write_text("".join(f"{nqn} {key}\n" for nqn, (key, _) in KEYS.items()))
    ports, ctl_port = (free_port(), free_port()), free_port()
    argv = [str(linuxvm.run_path), "-t", str(VM_TIMEOUT)]
    for host_port, guest_port in zip((*ports, ctl_port), (*GUEST_PORTS, GUEST_CTL_PORT),
                                     strict=True):  # fmt: skip
        argv += ["-p", f"{host_port}:{guest_port}"]
    argv += ["-a", f"{keys_file}:/root/tls_keys.txt"]
    for name, value in {"NQN": NQN, "PORT": GUEST_PORTS[0], "PORT2": GUEST_PORTS[1],
                        "CTL_PORT": GUEST_CTL_PORT, "TIMEOUT": SERVE_TIMEOUT}.items():  # fmt: skip
        argv += ["-e", f"{name}={value}"]
    argv.append(str(GUEST_DIR / "nvmet_tls_target.sh"))
    log_path = workdir / "vm.log"
    started = time.monotonic()
    proc = subprocess.Popen(argv, cwd=REPO_ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, errors="replace",
                            start_new_session=True)  # fmt: skip
    target = KernelTarget(proc, log_path, ports, ctl_port)
    ready, notls = threading.Event(), threading.Event()

    def pump() -> None:
        assert proc.stdout is not None
        with log_path.open("w") as log:
            for line in proc.stdout:
                log.write(line)
                log.flush()
                target.lines.append(line.rstrip("\n"))
                if line.startswith("NVMET-READY"):
                    ready.set()
                elif line.startswith("NVMET-NOTLS"):
                    notls.set()

    reader = threading.Thread(target=pump, name="linuxvm-output", daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        while not ready.wait(0.2):
            if notls.is_set():
                pytest.skip(next(x for x in target.lines if x.startswith("NVMET-NOTLS")))
            if proc.poll() is not None:
                reader.join(5)
                pytest.fail(f"linuxvm exited with status {proc.returncode} before NVMET-READY:"
                            f"\n{tail(target.output())}")  # fmt: skip
            if time.monotonic() > deadline:
                pytest.fail(f"no NVMET-READY within {READY_TIMEOUT:g} s:\n{tail(target.output())}")
        ready_line = next(x for x in target.lines if x.startswith("NVMET-READY"))
        figures.append(f"kernel TLS target: {ready_line} after {time.monotonic() - started:.1f} s"
                       f" (release {release}); host ports {ports}; VM log {log_path}")  # fmt: skip
        target.new_kernel_lines()
        target.control("tlshd")
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
        figures.append(f"kernel TLS target: VM {note}, exit status {proc.returncode}, "
                       f"{time.monotonic() - started:.1f} s in all")  # fmt: skip


@pytest.fixture(scope="module")
def tls_target(
    linuxvm: LinuxVM, tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config
) -> Iterator[KernelTarget]:
    figures = pytestconfig.stash.setdefault(FIGURES, [])
    with tls_target_vm(linuxvm, tmp_path_factory.mktemp("kernel-tls"), figures) as target:
        yield target


def options(host: str, key: str | None = None, **extra: object) -> ControllerOptions:
    """Host ``host`` with its own key (``key``: another one; "": no TLS)."""
    key = KEYS[host][0] if key is None else key
    return ControllerOptions(hostnqn=host, io_queues=2, kato_ms=5000,
                             command_timeout=CONNECT_TIMEOUT, tls_key=key,
                             **extra)  # type: ignore[arg-type]  # fmt: skip


def tlshd_lines(target: KernelTarget) -> str:
    """The guest tlshd's handshake lines since the last call."""
    return target.control("tlshd").partition("\n")[2]


def sessions_of(text: str) -> list[str]:
    """The cipher of every "Session description" (one per queue handshake)."""
    return re.findall(r"Session description: \(TLS1\.3\)--\(([^)]+)\)", text)


async def first_connect_error(opts: ControllerOptions, port: int) -> tuple[BaseException, float]:
    """The one error a first connect fails with (Host.connect raises it inside the session's
    ExceptionGroup) and how long it took; asserts that nothing kept or retried it."""
    found: list[BaseException] = []
    started = time.monotonic()
    with trio.fail_after(CONNECT_TIMEOUT):
        async with open_host(opts) as ours:
            try:
                await ours.connect("127.0.0.1", port, NQN)
            except* Exception as group:
                found += _leaves(group)
            else:
                raise AssertionError("connected")
            assert not ours.sessions  # not kept: the first connect failed, nothing retries
    assert len(found) == 1, found
    return found[0], time.monotonic() - started


def _leaves(error: BaseException) -> list[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        return [leaf for sub in error.exceptions for leaf in _leaves(sub)]
    return [error]


async def verified_io(ours: object, session: object, region: int) -> None:
    """Write and read back on every I/O queue, then through the multipath head."""
    assoc = session.assoc  # type: ignore[attr-defined]
    head = ours.namespace(NQN, 1)  # type: ignore[attr-defined]
    with trio.fail_after(30):
        for queue_index in range(len(assoc.io_queues)):
            data = os.urandom(8 * BLOCK)
            lba = region + 64 * queue_index
            done = await assoc.write(1, lba, data, BLOCK, queue=queue_index)
            assert done.ok, done.status
            done, back = await assoc.read(1, lba, 8, BLOCK, queue=queue_index)
            assert done.ok and bytes(back) == data
        data = os.urandom(256 * 1024)  # larger than the in-capsule limit: R2T + H2CData
        await head.write(region + 512, data)
        assert bytes(await head.read(region + 512, len(data) // BLOCK)) == data


# ---------------------------------------------------------------------------------------------
# TLS I/O


@pytest.mark.parametrize("host", [H01, H02], ids=["01-sha256", "02-sha384"])
async def test_tls_verified_io(
    tls_target: KernelTarget, host: str, caplog: pytest.LogCaptureFixture,
    interop_figures: Callable[[str], None],
) -> None:  # fmt: skip
    key, region = KEYS[host]
    hh = key.split(":")[1]
    caplog.set_level(logging.INFO, logger="nvmeof.initiator")
    started = time.monotonic()
    async with open_host(options(host)) as ours:
        with trio.fail_after(CONNECT_TIMEOUT):
            session = await ours.connect("127.0.0.1", tls_target.ports[0], NQN)
        connect_s = time.monotonic() - started
        assoc = session.assoc
        assert assoc is not None
        queues = 1 + len(assoc.io_queues)
        assert (session.tls.ok, session.tls.failed) == (queues, 0)
        cipher = assoc.admin.tls_cipher
        assert cipher is not None and all(q.tls_cipher for q in assoc.io_queues)
        registry = initiator_registry(ours)
        labels = {"path": session.label, "subsystem": NQN, "result": "ok"}
        assert registry.get_sample_value("nvmeof_initiator_tls_handshakes_total",
                                         labels) == float(queues)  # fmt: skip
        await verified_io(ours, session, region)
    # the identity we sent (the guest's tlshd does not log it as a server)
    messages = [r.getMessage() for r in caplog.records]
    assert any(f"identity=NVMe0R{hh} {host} {NQN}" in m for m in messages), messages
    assert not any(key in m for m in messages)  # no secret in the log
    guest = tlshd_lines(tls_target)
    suites = sessions_of(guest)
    assert len(suites) == queues, guest  # each queue its own handshake
    if hh == "02":  # tlshd 1.0.0 checks an 02 key's binder with SHA-256 (docs/TLS.md)
        assert all(s in SHA256_SUITES for s in suites), guest
        assert cipher.endswith("SHA256"), cipher
    log = "\n".join(tls_target.new_kernel_lines())
    assert "error" not in log.lower() and "failed" not in log.lower(), log
    interop_figures(f"TLS {hh} key -> nvmet: {queues} queues, our cipher {cipher}, tlshd "
                    f"{sorted(set(suites))}, connect {connect_s:.2f} s")  # fmt: skip


async def test_tls_optional_port_plain_and_tls(tls_target: KernelTarget) -> None:
    """addr_treq "not required": a plaintext host is served in the clear, a TLS host over TLS."""
    port = tls_target.ports[1]
    region = KEYS[H01][1] + 4096
    async with open_host(options(H01, key="")) as ours:
        with trio.fail_after(CONNECT_TIMEOUT):
            session = await ours.connect("127.0.0.1", port, NQN)
        assert session.assoc is not None and session.assoc.admin.tls_cipher is None
        assert (session.tls.ok, session.tls.failed) == (0, 0)
        await verified_io(ours, session, region)
    assert sessions_of(tlshd_lines(tls_target)) == []
    async with open_host(options(H01)) as ours:
        with trio.fail_after(CONNECT_TIMEOUT):
            session = await ours.connect("127.0.0.1", port, NQN)
        assert session.assoc is not None and session.assoc.admin.tls_cipher is not None
        queues = 1 + len(session.assoc.io_queues)
        assert session.tls.ok == queues
        await verified_io(ours, session, region + 2048)
    assert len(sessions_of(tlshd_lines(tls_target))) == queues


def nvmeof(*args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    script = FsPath(sys.executable).with_name("nvmeof")
    argv = [str(script)] if script.is_file() else [sys.executable, "-m", "initiator"]
    return subprocess.run([*argv, *args], cwd=REPO_ROOT, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=timeout)  # fmt: skip


def test_cli_bench_verify_over_tls(
    tls_target: KernelTarget, interop_figures: Callable[[str], None]
) -> None:
    """``nvmeof bench --verify --tls-key``; and the same command with a wrong key fails fast
    with one line that names TLS."""
    key = KEYS[HCLI][0]
    common = ["--path", f"127.0.0.1:{tls_target.ports[0]}", "-n", NQN, "-q", HCLI]
    done = nvmeof("bench", *common, "--tls", "--tls-key", key, "--rw", "randrw", "--bs", "4k",
                  "--iodepth", "8", "--size", "4M", "--runtime", "3", "--verify", "--json")  # fmt: skip
    assert done.returncode == 0, f"{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    job = json.loads(done.stdout[done.stdout.find("{") :])["jobs"][0]
    assert (job["error"], job["verify_errors"], job["io_errors"]) == (0, 0, 0), job
    ios = job["read"]["total_ios"] + job["write"]["total_ios"]
    assert job["read"]["total_ios"] > 0 and job["write"]["total_ios"] > 0, job
    assert sessions_of(tlshd_lines(tls_target)), "no TLS session on the guest"
    started = time.monotonic()
    wrong = nvmeof("id-ctrl", *common, "--tls-key", tls_interchange_key(1), timeout=60)
    took = time.monotonic() - started
    assert wrong.returncode != 0, wrong.stdout
    assert "TLS handshake" in wrong.stderr and "failed" in wrong.stderr, wrong.stderr
    assert key not in wrong.stderr and "NVMeTLSkey-1" not in wrong.stderr, wrong.stderr
    assert took < REFUSAL_LIMIT + 5, (took, wrong.stderr)
    interop_figures(f"TLS CLI: nvmeof bench --verify {ios} I/Os over TLS; wrong key refused in "
                    f"{took:.1f} s: {wrong.stderr.strip().splitlines()[-1]}")  # fmt: skip


# ---------------------------------------------------------------------------------------------
# refusals


@pytest.mark.parametrize("host", [H01, HNOKEY], ids=["wrong-key", "no-key"])
async def test_refused_handshake_is_a_clear_permanent_tls_error(
    tls_target: KernelTarget, host: str, interop_figures: Callable[[str], None]
) -> None:
    """tlshd refuses a key that is not the one filed for the identity (the binder does not
    verify), or an identity it has no key for: it closes the connection mid-handshake."""
    opts = options(host, key=tls_interchange_key(1), reconnect_delay=1.0, ctrl_loss_tmo=60.0)
    err, took = await first_connect_error(opts, tls_target.ports[0])
    assert isinstance(err, TlsHandshakeError), repr(err)
    assert err.permanent
    text = str(err)
    assert text.startswith(f"TLS handshake with 127.0.0.1:{tls_target.ports[0]} failed"), text
    assert "wrong key?" in text, text
    assert "NVMeTLSkey-1" not in text
    assert took < REFUSAL_LIMIT, (took, text)
    guest = tlshd_lines(tls_target)
    assert "failed" in guest and sessions_of(guest) == [], guest
    interop_figures(f"TLS refusal ({'no key' if host == HNOKEY else 'wrong key'}) in "
                    f"{took:.2f} s: {text}")  # fmt: skip


async def test_plaintext_to_the_tls_required_port_is_refused(
    tls_target: KernelTarget, interop_figures: Callable[[str], None]
) -> None:
    """nvmet hands the connection to tlshd, which gets an ICReq instead of a ClientHello and
    closes it: our error says the port may require TLS."""
    err, took = await first_connect_error(options(H01, key=""), tls_target.ports[0])
    text = str(err)
    assert "--tls" in text and "TLS" in text, repr(err)
    assert took < REFUSAL_LIMIT, (took, text)
    guest = tlshd_lines(tls_target)
    assert "failed" in guest, guest
    interop_figures(f"TLS: plaintext to the required port refused in {took:.2f} s: {text}")
