"""Our initiator (initiator/) against the Linux kernel's NVMe/TCP target (nvmet, kernel 6.1 in
../shared/linuxvm): discovery, two paths, Identify, ANA log, verified ring I/O (plain and
with header + data digests, passthrough included), and failover while verified I/O runs:
port 1 inaccessible, both ports inaccessible (I/O waits), back to optimized, port 1 unlinked
from the subsystem and relinked, port 1 through the ANA "change" state.

One VM for the module (guest script tests/interop/guest/nvmet_target.sh): nvmet with one
subsystem, one 256 MiB null_blk namespace (512-byte blocks, ANA group 1) on guest ports 4420
(optimized) and 4421 (non-optimized), plus a control port through which the tests change ANA
states and unlink/relink ports. All three are forwarded from free host ports. A second VM
no longer carries a probe of nvmet 6.1's data digest check over two H2CData PDUs: nvmet 6.1
digests the command's whole buffer instead of the PDU (``nvmet_tcp_prep_recv_ddgst``), so a
write above MAXH2CDATA (4 MiB) with data digests got "data digest error" and left nvmet wedged
(verified here; docs/PROTOCOL.md §9.1). The initiator now caps every command at the controller's
MDTS, or 1 MiB when it reports none, so it never sends one. About a minute in all under TCG.

Every I/O is verified: a shadow table remembers which version of each 4 KiB page was written
last, the written data is a function of (page, version) and every read is compared with it;
no two commands in flight touch the same 128 KiB unit. Figures (IOPS, failovers, stall
times) go to the "interop figures" section of the pytest summary.
"""

from __future__ import annotations

import contextlib
import functools
import random
import re
import socket
import struct
import subprocess
import threading
import time
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path as FsPath
from typing import Any

import pytest
import trio
from interop_harness import FIGURES, GUEST_DIR, REPO_ROOT, LinuxVM, _stop_group, tail

from initiator import ControllerOptions, Host, MultipathHead, Ring, Session, open_host
from initiator.ring import Slot
from nvmeof.constants import AnaState, Cns, DiscoverySubtype, IoOpcode
from nvmeof.wire.identify import parse_identify_ctrl, parse_identify_ns

pytestmark = pytest.mark.interop

NQN = "nqn.2014-08.org.nvmexpress:nvmeof-emu-interop"
GUEST_PORTS = (4420, 4421)  # nvmet port ids 1 and 2
GUEST_CTL_PORT = 9998
GUEST_IP = "10.0.2.15"  # what nvmet puts in the discovery log for a 0.0.0.0 port
SIZE_MB = 256
BLOCK_SIZE = 512
VM_TIMEOUT = 600  # s, `run -t`: bounds QEMU even if everything else fails
SERVE_TIMEOUT = 540  # s, the guest script stops serving after this
READY_TIMEOUT = 180.0  # s until NVMET-READY (about 10 s under TCG)

KiB = 1024
MiB = 1024 * KiB
PAGE = 4 * KiB  # verification granularity
UNIT = 128 * KiB  # no two commands in flight share a unit
IN_CAPSULE = 16 * KiB  # nvmet inline_data_size: bigger writes go R2T + H2CData
# Transfer sizes: 16 KiB is the largest in-capsule write, 20 KiB the smallest R2T one.
SIZES = (4 * KiB, 4 * KiB, 8 * KiB, 8 * KiB, 12 * KiB, 16 * KiB, 20 * KiB, 32 * KiB,
         64 * KiB, 128 * KiB)  # fmt: skip
REGION = 16 * MiB  # one per test: never-written pages read as zeros (fresh null_blk)

# Kernel log lines that would mean our initiator upset nvmet.
KERNEL_TROUBLE = re.compile(
    r"digest|unexpected|invalid|failed|error|unsupported|bad |Call Trace|WARNING|BUG",
    re.IGNORECASE,
)


# ---------------------------------------------------------------------------------------------
# the VM


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class KernelTarget:
    """The running guest: forwarded host ports, its output, the control channel."""

    proc: subprocess.Popen[str]
    log_path: FsPath
    ports: tuple[int, int]  # host ports forwarded to guest 4420 and 4421
    ctl_port: int
    lines: list[str] = field(default_factory=list)
    _kernel_seen: float = -1.0

    def output(self) -> str:
        return "\n".join(self.lines)

    def control(self, command: str, timeout: float = 20.0) -> str:
        """One control command; returns the reply (first line "OK ..."), raises on "ERR"."""
        deadline = time.monotonic() + timeout
        while True:
            reply = b""
            try:
                with socket.create_connection(("127.0.0.1", self.ctl_port), timeout=timeout) as s:
                    s.settimeout(max(deadline - time.monotonic(), 1.0))
                    s.sendall(command.encode() + b"\n")
                    while chunk := s.recv(65536):
                        reply += chunk
            except OSError:
                pass
            # QEMU accepts and closes when nothing listens in the guest: try again.
            if reply:
                text = reply.decode("utf-8", "replace")
                if not text.startswith("OK"):
                    raise AssertionError(f"guest control {command!r}: {text.strip()}")
                return text
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise AssertionError(
                    f"guest control {command!r}: no reply\n{tail(self.output(), 20)}"
                    + self.blocked_tasks(command)
                )
            time.sleep(0.2)

    def blocked_tasks(self, command: str) -> str:
        """The guest's load and blocked tasks' kernel stacks, after ``command`` had no reply."""
        if command in ("blocked", "stop") or self.proc.poll() is not None:
            return ""
        try:
            return "\nthe guest's blocked tasks:\n" + self.control("blocked", timeout=15)
        except AssertionError as err:
            return f"\nthe guest's blocked tasks: none reported ({err})"

    async def acontrol(self, command: str) -> str:
        with trio.fail_after(30):
            return await trio.to_thread.run_sync(self.control, command)

    def new_kernel_lines(self) -> list[str]:
        """nvme/nvmet kernel log lines logged since the last call."""
        lines = []
        for line in self.control("dmesg").splitlines()[1:]:
            m = re.match(r"\[\s*(\d+\.\d+)\]", line)
            if m and float(m.group(1)) > self._kernel_seen:
                self._kernel_seen = float(m.group(1))
                lines.append(line)
        return lines


@contextlib.contextmanager
def kernel_target_vm(
    linuxvm: LinuxVM,
    log_dir: FsPath,
    figures: list[str],
    *,
    name: str = "kernel target",
    stop_grace: float = 60.0,
) -> Iterator[KernelTarget]:
    """Boot a guest running nvmet_target.sh (ports forwarded from free host ports), wait for
    NVMET-READY; at the end ask it to stop (``stop_grace`` s), else kill `run`'s group."""
    ports = (free_port(), free_port())
    ctl_port = free_port()
    argv = [str(linuxvm.run_path), "-t", str(VM_TIMEOUT)]
    for host_port, guest_port in zip(
        (*ports, ctl_port), (*GUEST_PORTS, GUEST_CTL_PORT), strict=True
    ):
        argv += ["-p", f"{host_port}:{guest_port}"]
    env = {
        "NQN": NQN,
        "PORTS": " ".join(map(str, GUEST_PORTS)),
        "CTL_PORT": str(GUEST_CTL_PORT),
        "SIZE_MB": str(SIZE_MB),
        "BS": str(BLOCK_SIZE),
        "TIMEOUT": str(SERVE_TIMEOUT),
    }
    for key, value in env.items():
        argv += ["-e", f"{key}={value}"]
    argv.append(str(GUEST_DIR / "nvmet_target.sh"))
    log_path = log_dir / "vm.log"
    started = time.monotonic()
    proc = subprocess.Popen(
        argv,
        cwd=REPO_ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        start_new_session=True,  # so a stuck run can be killed with everything it started
    )
    target = KernelTarget(proc, log_path, ports, ctl_port)
    ready = threading.Event()

    def pump() -> None:
        assert proc.stdout is not None
        with log_path.open("w") as log:
            for line in proc.stdout:
                log.write(line)
                log.flush()
                target.lines.append(line.rstrip("\n"))
                if line.startswith("NVMET-READY"):
                    ready.set()

    reader = threading.Thread(target=pump, name="linuxvm-output", daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        while not ready.wait(0.2):
            if proc.poll() is not None:
                reader.join(5)
                pytest.fail(
                    f"linuxvm exited with status {proc.returncode} before NVMET-READY:\n"
                    f"{tail(target.output())}"
                )
            if time.monotonic() > deadline:
                pytest.fail(f"no NVMET-READY within {READY_TIMEOUT:g} s:\n{tail(target.output())}")
        figures.append(
            f"{name}: nvmet ready {time.monotonic() - started:.1f} s after boot start;"
            f" host ports {ports[0]}, {ports[1]} -> guest {GUEST_PORTS[0]}, {GUEST_PORTS[1]}"
            f" (control {ctl_port}); VM log {log_path}"
        )
        target.new_kernel_lines()  # start the kernel log from here
        yield target
    finally:
        stop_note = "stopped"
        if proc.poll() is None:
            try:
                target.control("stop", timeout=10)
                proc.wait(timeout=stop_grace)
            except (AssertionError, subprocess.TimeoutExpired) as err:
                why = "no reply" if isinstance(err, AssertionError) else f"{stop_grace:g} s"
                stop_note = f"did not stop on request ({why}): killed"
                _stop_group(proc, grace=10.0)
        reader.join(10)
        if proc.stdout is not None and not reader.is_alive():
            proc.stdout.close()
        figures.append(
            f"{name}: VM {stop_note}, exit status {proc.returncode},"
            f" {time.monotonic() - started:.1f} s in all"
        )


@pytest.fixture(scope="module")
def kernel_target(
    linuxvm: LinuxVM, tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config
) -> Iterator[KernelTarget]:
    """The module's guest: nvmet on two ports plus the control channel."""
    figures = pytestconfig.stash.setdefault(FIGURES, [])
    with kernel_target_vm(linuxvm, tmp_path_factory.mktemp("kernel-target"), figures) as target:
        yield target


# ---------------------------------------------------------------------------------------------
# verified I/O


_POOL = [random.Random(seed).randbytes(PAGE) for seed in range(61)]
_ZERO_PAGE = bytes(PAGE)
_PAGE_HEADER = struct.Struct("<QQ")


def page_data(page: int, version: int) -> bytes:
    """What page ``page`` holds after the write with ``version`` (0: never written = zeros)."""
    if version == 0:
        return _ZERO_PAGE
    data = bytearray(_POOL[(page * 131 + version) % len(_POOL)])
    _PAGE_HEADER.pack_into(data, 0, page, version)
    return bytes(data)


def raw_rw_command(opcode: int, nsid: int, slba: int, nblocks: int) -> bytes:
    """A 64-byte NVM Read/Write SQE as a passthrough user builds it (CID/SGL: transport's)."""
    cmd = bytearray(64)
    cmd[0] = opcode
    cmd[1] = 0x40  # PSDT 01b: SGL
    cmd[4:8] = nsid.to_bytes(4, "little")
    cmd[40:48] = slba.to_bytes(8, "little")
    cmd[48:50] = (nblocks - 1).to_bytes(2, "little")
    return bytes(cmd)


class Op:
    __slots__ = ("buf", "npages", "page", "passthru", "size", "unit", "version", "write")

    def __init__(self, write: bool, passthru: bool, unit: int, page: int, npages: int,
                 version: int, buf: bytes | bytearray) -> None:  # fmt: skip
        self.write = write
        self.passthru = passthru
        self.unit = unit
        self.page = page
        self.npages = npages
        self.version = version
        self.buf = buf
        self.size = npages * PAGE


@dataclass
class Workload:
    """Random verified reads and writes (some as passthrough) over one region of a head."""

    head: MultipathHead
    region: int  # index of the REGION-sized slice of the namespace this workload owns
    seed: int = 1
    passthru_every: int = 6  # about one command in N is a raw passthrough SQE
    rng: random.Random = field(init=False)
    versions: array[int] = field(init=False)
    free_units: list[int] = field(init=False)
    next_version: int = 1
    # results
    submitted: int = 0
    completed: int = 0
    bytes_moved: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    by_path: dict[str, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    mismatches: list[str] = field(default_factory=list)
    slot_failovers: int = 0  # sum of per-command failover counts
    slot_retries: int = 0
    times: list[float] = field(default_factory=list)  # completion times
    paths: list[str] = field(default_factory=list)  # path label per completion
    started: float = 0.0
    finished: float = 0.0

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.versions = array("Q", bytes(8 * (REGION // PAGE)))
        self.free_units = list(range(REGION // UNIT))
        assert PAGE % self.head.block_size == 0
        assert (self.region + 1) * REGION <= self.head.nlbas * self.head.block_size

    @property
    def ok(self) -> bool:
        return not self.failures and not self.mismatches

    def _count(self, key: str) -> None:
        self.counts[key] = self.counts.get(key, 0) + 1

    def _lba(self, page: int) -> int:
        return (self.region * REGION + page * PAGE) // self.head.block_size

    def prep(self, slot: Slot) -> None:
        rng = self.rng
        units = self.free_units
        i = rng.randrange(len(units))
        units[i], units[-1] = units[-1], units[i]
        unit = units.pop()
        npages = rng.choice(SIZES) // PAGE
        page = unit * (UNIT // PAGE) + rng.randrange(UNIT // PAGE - npages + 1)
        write = rng.random() < 0.5
        passthru = rng.randrange(self.passthru_every) == 0
        slba, nblocks = self._lba(page), npages * PAGE // self.head.block_size
        if write:
            version = self.next_version
            self.next_version += 1
            data = b"".join(page_data(p, version) for p in range(page, page + npages))
            op = Op(True, passthru, unit, page, npages, version, data)
            if passthru:
                cmd = raw_rw_command(IoOpcode.WRITE, self.head.nsid, slba, nblocks)
                slot.prep_cmd(cmd, data_out=data, user_data=op)
            else:
                slot.prep_write(slba, nblocks, data, user_data=op)
        else:
            buf = bytearray(npages * PAGE)
            op = Op(False, passthru, unit, page, npages, 0, buf)
            if passthru:
                cmd = raw_rw_command(IoOpcode.READ, self.head.nsid, slba, nblocks)
                slot.prep_cmd(cmd, data_in=buf, user_data=op)
            else:
                slot.prep_read(slba, nblocks, buf, user_data=op)
        self.submitted += 1

    def complete(self, cqe: Slot) -> None:
        op: Op = cqe.user_data
        now = trio.current_time()
        self.completed += 1
        self.times.append(now)
        self.paths.append(cqe.path_label)
        self.by_path[cqe.path_label] = self.by_path.get(cqe.path_label, 0) + 1
        self.slot_failovers += cqe.failovers
        self.slot_retries += cqe.retries
        kind = ("passthru-" if op.passthru else "") + ("write" if op.write else "read")
        if op.write:
            kind += " in-capsule" if op.size <= IN_CAPSULE else " R2T"
        self._count(kind)
        if not cqe.ok:
            self.failures.append(
                f"{kind} of {op.size} B at page {op.page} on {cqe.path_label or '-'}:"
                f" {cqe.status} (status word {cqe.status_word:#06x}, {cqe.failovers} failovers)"
            )
        elif op.write:
            for p in range(op.page, op.page + op.npages):
                self.versions[p] = op.version
            self.bytes_moved += op.size
        else:
            self.bytes_moved += op.size
            view = memoryview(op.buf)
            for i in range(op.npages):
                p = op.page + i
                want = page_data(p, self.versions[p])
                got = view[i * PAGE : (i + 1) * PAGE]
                if got != want:
                    page, version = _PAGE_HEADER.unpack_from(got)
                    self.mismatches.append(
                        f"{kind} on {cqe.path_label}: page {p} (LBA {self._lba(p)}) should hold"
                        f" version {self.versions[p]}, has header page={page} version={version}"
                    )
        self.free_units.append(op.unit)

    async def run(self, ring: Ring, *, count: int | None = None,
                  stop: trio.Event | None = None) -> None:  # fmt: skip
        """Keep the ring full until ``count`` commands were submitted or ``stop`` is set."""
        self.started = trio.current_time()

        def more() -> bool:
            if stop is not None and stop.is_set():
                return False
            return count is None or self.submitted < count

        while True:
            while more() and (slot := ring.get_sqe()) is not None:
                self.prep(slot)
            ring.submit()
            if ring.inflight == 0 and ring.ready == 0 and not more():
                break
            await ring.wait(1)
            for cqe in ring.completions():
                self.complete(cqe)
        self.finished = trio.current_time()

    # -- figures ---------------------------------------------------------------------------------

    def rate(self) -> str:
        elapsed = max(self.finished - self.started, 1e-9)
        return (
            f"{self.completed} I/Os in {elapsed:.1f} s = {self.completed / elapsed:.0f} IOPS,"
            f" {self.bytes_moved / MiB / elapsed:.1f} MiB/s"
        )

    def max_gap(self, start: float, end: float) -> float:
        """The longest wait for the next completion, among those that began in [start, end):
        from ``start`` or a completion in the window to the next completion."""
        gap = 0.0
        previous = start
        for t in self.times:
            if t < start:
                continue
            gap = max(gap, t - previous)
            if t >= end:
                break
            previous = t
        return gap

    def first_on(self, label: str, after: float) -> float | None:
        """Seconds from ``after`` to the first completion served by path ``label``."""
        for t, path in zip(self.times, self.paths, strict=True):
            if t >= after and path == label:
                return t - after
        return None

    def report(self) -> str:
        lines = [self.rate(), f"  commands: {dict(sorted(self.counts.items()))}",
                 f"  per path: {self.by_path}"]  # fmt: skip
        lines += [f"  FAILED: {line}" for line in self.failures[:20]]
        lines += [f"  MISMATCH: {line}" for line in self.mismatches[:20]]
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# helpers


def options(**overrides: Any) -> ControllerOptions:
    base: dict[str, Any] = dict(io_queues=2, queue_size=64, kato_ms=5000, command_timeout=15.0,
                                reconnect_delay=1.0, ctrl_loss_tmo=120.0)  # fmt: skip
    base.update(overrides)
    return ControllerOptions(**base)


async def connect_both(host: Host, target: KernelTarget) -> tuple[Session, Session]:
    with trio.fail_after(60):
        first = await host.connect("127.0.0.1", target.ports[0], NQN)
        second = await host.connect("127.0.0.1", target.ports[1], NQN)
    return first, second


def path_of(head: MultipathHead, session: Session) -> Any:
    (path,) = [p for p in head.paths if p.session is session]
    return path


def head_context(head: MultipathHead) -> str:
    lines = [f"head stats: {head.stats}"]
    lines += [f"  {p!r}: {p.stats}" for p in head.paths]
    base = head.events[0][0] if head.events else 0.0
    lines += [f"  +{t - base:7.3f} s {what}" for t, what in head.events[-30:]]
    return "\n".join(lines)


def kernel_trouble(lines: list[str]) -> list[str]:
    return [line for line in lines if KERNEL_TROUBLE.search(line)]


async def wait_for(what: str, condition: Callable[[], bool], limit: float,
                   context: Callable[[], str]) -> float:  # fmt: skip
    """Poll ``condition`` every 10 ms; returns the seconds it took, fails after ``limit`` s."""
    start = trio.current_time()
    try:
        with trio.fail_after(limit):
            while not condition():  # noqa: ASYNC110 - state changes come from other tasks
                await trio.sleep(0.01)
    except trio.TooSlowError:
        pytest.fail(f"{what}: not within {limit:g} s\n{context()}")
    return trio.current_time() - start


# ---------------------------------------------------------------------------------------------
# discovery, connect, Identify, ANA log


async def test_discover_nvmet_log_through_each_port(kernel_target: KernelTarget) -> None:
    async with open_host(options()) as host:
        for port_id, (host_port, guest_port) in enumerate(
            zip(kernel_target.ports, GUEST_PORTS, strict=True), start=1
        ):
            with trio.fail_after(30):
                entries = await host.discover("127.0.0.1", host_port)
            listing = "\n".join(map(repr, entries))
            nvme = [e for e in entries if e.subtype == DiscoverySubtype.NVME]
            assert len(nvme) == 1, listing
            (entry,) = nvme
            # nvmet shows its own view: the guest's address and port numbers.
            assert entry.subnqn == NQN, listing
            assert (entry.trtype, entry.adrfam) == (3, 1), listing  # TCP, IPv4
            assert (entry.traddr, entry.trsvcid) == (GUEST_IP, str(guest_port)), listing
            assert entry.portid == port_id, listing
            # 6.1 also lists the discovery subsystem itself ("current discovery subsystem")
            current = [e for e in entries if e.subtype == DiscoverySubtype.CURRENT_DISCOVERY]
            assert [e.trsvcid for e in current] == [str(guest_port)], listing


async def test_connect_two_ports_identify_and_ana_log(
    kernel_target: KernelTarget, interop_figures: Callable[[str], None]
) -> None:
    async with open_host(options()) as host:
        first, second = await connect_both(host, kernel_target)
        head = host.namespace(NQN, 1)
        cntlids = set()
        for session, want in ((first, AnaState.OPTIMIZED), (second, AnaState.NON_OPTIMIZED)):
            assoc = session.assoc
            assert assoc is not None
            with trio.fail_after(30):
                ident = parse_identify_ctrl(await assoc.identify_raw(Cns.CONTROLLER))
                ns = parse_identify_ns(await assoc.identify_raw(Cns.NAMESPACE, 1))
                ana = await assoc.ana_log()
            assert ident.cntlid == session.cntlid != 0
            cntlids.add(ident.cntlid)
            assert ident.subnqn == NQN
            assert ident.cmic & 0x0A == 0x0A, f"CMIC {ident.cmic:#x}: multi-ctrl + ANA expected"
            assert ident.ioccsz * 16 - 64 == IN_CAPSULE, ident.ioccsz
            assert ns.nsze == ns.ncap == SIZE_MB * MiB // BLOCK_SIZE, (ns.nsze, ns.ncap)
            assert 1 << ns.lbaf[ns.flbas & 0xF].ds == BLOCK_SIZE
            assert ns.nmic & 1, "namespace not shared"
            assert ns.anagrpid == 1
            groups = {g.grpid: (g.state, g.nsids) for g in ana.groups}
            assert groups == {1: (want, (1,))}, ana
            assert path_of(head, session).ana_state == want
            interop_figures(
                f"kernel target: port {session.port}: cntlid {ident.cntlid}, cmic {ident.cmic:#x},"
                f" ANA group 1 {AnaState(groups[1][0]).label}, ana chgcnt {ana.chgcnt}"
            )
        assert len(cntlids) == 2, cntlids
        assert head.nlbas == SIZE_MB * MiB // BLOCK_SIZE and head.block_size == BLOCK_SIZE
    lines = kernel_target.new_kernel_lines()
    assert not kernel_trouble(lines), "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# verified I/O through the ring


@pytest.mark.parametrize(
    ("digests", "depth", "count", "region"),
    [(False, 32, 4000, 0), (True, 16, 3000, 1)],
    ids=["plain", "digests"],
)
async def test_ring_write_read_verify(
    kernel_target: KernelTarget,
    interop_figures: Callable[[str], None],
    digests: bool,
    depth: int,
    count: int,
    region: int,
) -> None:
    opts = options(header_digest=digests, data_digest=digests)
    async with open_host(opts) as host:
        first, second = await connect_both(host, kernel_target)
        for session in (first, second):
            for queue in [session.assoc.admin, *session.assoc.io_queues]:  # type: ignore[union-attr]
                conn = queue.conn
                assert (conn.header_digest, conn.data_digest) == (digests, digests)
                assert conn.max_h2c_data == 4 * MiB  # nvmet: one H2CData per R2T here
        head = host.namespace(NQN, 1)
        work = Workload(head, region, seed=region + 1)
        with trio.fail_after(150):
            await work.run(head.ring(depth), count=count)
        # a final flush through the helpers
        with trio.fail_after(15):
            await head.flush()
        name = "digests" if digests else "plain"
        interop_figures(f"kernel target: ring {name} QD{depth}: {work.report()}")
        assert work.ok, f"{work.report()}\n{head_context(head)}"
        assert work.completed == count
        for kind in ("read", "write in-capsule", "write R2T", "passthru-read",
                     "passthru-write in-capsule", "passthru-write R2T"):  # fmt: skip
            assert work.counts.get(kind, 0) > 0, f"no {kind}: {work.counts}"
        # numa policy: everything on the optimized path, nothing failed over
        assert work.by_path == {first.label: count}, work.by_path
        assert head.stats.failovers == head.stats.failed == 0, head_context(head)
    lines = kernel_target.new_kernel_lines()
    assert not kernel_trouble(lines), "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# failover while verified I/O runs


@dataclass
class Phase:
    name: str
    command: str
    at: float = 0.0
    moved_after: float | None = None  # s until the first completion on the expected path
    settled_after: float = 0.0
    failovers: int = 0
    requeued: int = 0
    no_path_queued: int = 0
    stall: float = 0.0


#: nvmet logs every command it refuses in nvmet_req_init, e.g. with an ANA status while the
#: port's group is inaccessible or changing: "nvmet_tcp: failed cmd ... opcode 2, data_len: N".
ANA_REFUSAL = re.compile(r"nvmet_tcp: failed cmd \S+ id \d+ opcode [12], data_len: \d+$")


async def test_failover_during_verified_io(
    kernel_target: KernelTarget, interop_figures: Callable[[str], None]
) -> None:
    """Continuous verified I/O (QD32) while nvmet's port 1 goes inaccessible, both ports go
    inaccessible, port 1 comes back, port 1 is unlinked and relinked, and port 1's group passes
    through the ANA "change" state: every completion must succeed and every read verify."""
    progress = 200  # completions a path must serve to count as "I/O runs there"
    async with open_host(options()) as host:
        first, second = await connect_both(host, kernel_target)
        head = host.namespace(NQN, 1)
        p1, p2 = path_of(head, first), path_of(head, second)
        work = Workload(head, region=2, seed=7)
        stop = trio.Event()
        phases: list[Phase] = []

        def context() -> str:
            return f"{work.report()}\n{head_context(head)}\n{tail(kernel_target.output(), 10)}"

        async def phase(name: str, command: str, to: Any | None, done: Callable[[], bool],
                        limit: float = 40.0, hold: float = 0.0) -> None:  # fmt: skip
            """Send ``command``, wait for ``done`` and (``to``) I/O progress on path ``to``,
            or (``to`` None) for ``hold`` seconds; record what it cost."""
            before = (head.stats.failovers, head.stats.requeued, head.stats.no_path_queued)
            served = to.stats.ios if to is not None else 0
            ph = Phase(name, command, at=trio.current_time())
            phases.append(ph)
            await kernel_target.acontrol(command)
            ph.settled_after = await wait_for(
                f"{name}: {f'I/O on {to.label}' if to is not None else 'state'}",
                lambda: done() and (to is None or to.stats.ios >= served + progress),
                limit,
                context,
            )
            await trio.sleep(hold)
            ph.moved_after = work.first_on(to.label, ph.at) if to is not None else None
            ph.failovers = head.stats.failovers - before[0]
            ph.requeued = head.stats.requeued - before[1]
            ph.no_path_queued = head.stats.no_path_queued - before[2]

        async def only_on(path: Any, seconds: float) -> None:
            other = p2 if path is p1 else p1
            served = other.stats.ios
            await trio.sleep(seconds)
            assert other.stats.ios == served, f"I/O still on {other.label}\n{context()}"

        with trio.fail_after(300):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(functools.partial(work.run, head.ring(32), stop=stop))
                await wait_for("baseline", lambda: p1.stats.ios >= progress, 30, context)
                assert p2.stats.ios == 0, context()
                baseline = work.max_gap(work.times[0], trio.current_time())

                await phase("port 1 inaccessible", "ana 1 inaccessible", p2,
                            lambda: p1.ana_state == AnaState.INACCESSIBLE)  # fmt: skip
                await only_on(p2, 0.3)
                # no usable path at all: I/O waits on the head, nothing fails
                await phase("both ports inaccessible", "ana 2 inaccessible", None,
                            lambda: p2.ana_state == AnaState.INACCESSIBLE, hold=1.0)  # fmt: skip
                assert head.stats.failed == 0 and work.ok, context()
                await phase("port 2 non-optimized", "ana 2 non-optimized", p2,
                            lambda: p2.ana_state == AnaState.NON_OPTIMIZED)  # fmt: skip
                await phase("port 1 optimized", "ana 1 optimized", p1,
                            lambda: p1.ana_state == AnaState.OPTIMIZED)  # fmt: skip
                await only_on(p1, 0.3)

                await phase("port 1 unlinked", "unlink 1", p2, lambda: not first.live)
                await only_on(p2, 1.5)  # a reconnect attempt or two, refused
                assert not first.live, context()
                await phase("port 1 linked again", "link 1", p1,
                            lambda: first.live and p1.ana_state == AnaState.OPTIMIZED)  # fmt: skip

                await phase("port 1 ANA change", "ana 1 change", p2,
                            lambda: p1.ana_state == AnaState.CHANGE)  # fmt: skip
                await phase("port 1 optimized again", "ana 1 optimized", p1,
                            lambda: p1.ana_state == AnaState.OPTIMIZED)  # fmt: skip
                stop.set()

        # a phase's stall: the longest wait for a completion that began during the phase
        for ph, end in zip(phases, [*(p.at for p in phases[1:]), work.finished], strict=True):
            ph.stall = work.max_gap(ph.at, end)
        interop_figures(f"kernel target: failover run QD32: {work.report()}")
        interop_figures(
            f"  baseline max gap {baseline * 1000:.0f} ms; port 1 controller reconnects:"
            f" {first.reconnects}; head {head.stats}; sum of per-command failovers"
            f" {work.slot_failovers}; {p1.label} {p1.stats}; {p2.label} {p2.stats}"
        )
        for ph in phases:
            moved = f"{ph.moved_after * 1000:.0f} ms" if ph.moved_after is not None else "-"
            interop_figures(
                f"  {ph.name:24} ({ph.command}): first I/O on the new path after {moved},"
                f" settled {ph.settled_after:.2f} s, max completion gap {ph.stall * 1000:.0f} ms,"
                f" failover events {ph.failovers}, requeued {ph.requeued},"
                f" parked without a path {ph.no_path_queued}"
            )
        kernel = kernel_target.new_kernel_lines()
        refusals = [line for line in kernel if ANA_REFUSAL.search(line)]
        others = [line for line in kernel if not ANA_REFUSAL.search(line)]
        interop_figures(f"  kernel: {len(refusals)} commands refused with an ANA status (logged)")
        for line in others:
            interop_figures(f"  kernel: {line.strip()}")

        assert work.ok, context()
        assert head.stats.failed == 0, context()
        assert work.completed == work.submitted
        by_name = {ph.name: ph for ph in phases}
        # I/O refused with ANA statuses, and I/O killed with the connection, failed over
        for name in ("port 1 inaccessible", "port 1 unlinked", "port 1 ANA change"):
            ph = by_name[name]
            assert ph.failovers + ph.requeued > 0 or ph.moved_after is not None, context()
        assert by_name["both ports inaccessible"].no_path_queued > 0, context()
        assert not kernel_trouble(others), "\n".join(others)
