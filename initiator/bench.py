"""``nvmeof bench``: a fio-like load generator over a multipath namespace head.

Each job owns one ring (``iodepth`` slots, each with a registered buffer) and a region of the
namespace: ``size`` bytes from ``offset + job * offset_increment`` (fio's ``offset`` and
``offset_increment``; the increment defaults to ``size``, so jobs sit back to back, where fio's
default 0 would overlap them). Two benches on one namespace stay apart with ``offset``.

With ``verify``, every written block carries a header (block address, write generation, job)
repeated over the block, and every read checks it; blocks with a write in flight are never read
at the same time. Read workloads are preconditioned by a write pass so there is something to
verify.

With ``engine`` "passthrough" the same reads and writes go through the ring's raw-command API
(:meth:`Slot.prep_cmd`, 64-byte NVM Read/Write commands, like fio's ``io_uring_cmd`` engine on
``/dev/ngXnY``) instead of ``prep_read``/``prep_write``; verify works the same.

Like fio, the first I/O error ends the run (every job stops issuing; what is in flight
completes) unless ``continue_on_error``; either way the errors are counted by status.

With ``verify_state_save`` the run records which units had a completed write, and of which
generation, in a state file (fio's ``verify_state_save``; :mod:`initiator.verify_state`), for a
later ``--verify-only`` pass after a crash.
"""

from __future__ import annotations

import itertools
import random
import struct
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import trio

from initiator.latency import LatencyHistogram
from initiator.multipath import MultipathHead
from initiator.ring import Ring, Slot
from initiator.verify_state import StateSaver, VerifyState, check_block, new_seed, pattern
from nvmeof.constants import SQE_SIZE, IoOpcode

RW_MODES = ("read", "write", "randread", "randwrite", "randrw")
#: block: ``prep_read``/``prep_write``; passthrough: raw 64-byte commands through ``prep_cmd``
ENGINES = ("block", "passthrough")
#: SLBA (CDW10-11) and NLB (CDW12, 0's based) of an NVM Read or Write command
_SLBA_NLB = struct.Struct("<QI")
_SLBA_OFFSET = 40


@dataclass
class BenchOptions:
    rw: str = "randread"
    bs: int = 4096
    iodepth: int = 32
    numjobs: int = 1
    runtime: float = 10.0
    size: int = 64 << 20
    verify: bool = False
    rwmixread: int = 50
    seed: int = 1
    continue_on_error: bool = False
    #: fio's verify_state_save: the state file (needs ``verify``); "" for none
    verify_state_save: str = ""
    verify_state_interval: float = 1.0  # seconds between periodic saves
    #: the seed in every written block's header (0: a new random one with a state file)
    verify_seed: int = 0
    #: fio's offset: the first job's region starts there (bytes)
    offset: int = 0
    #: fio's offset_increment: job N starts at offset + N * offset_increment (None: ``size``)
    offset_increment: int | None = None
    engine: str = "block"


def job_region(opts: BenchOptions, index: int, block_size: int, capacity: int) -> tuple[int, int]:
    """Job ``index``'s region as (first byte, units of ``bs``): from ``offset + index *
    offset_increment`` (fio), ``size`` bytes long or up to the end of the namespace."""
    increment = opts.size if opts.offset_increment is None else opts.offset_increment
    if opts.offset < 0 or increment < 0:
        raise ValueError("offset and offset_increment cannot be negative")
    for name, value in (("offset", opts.offset), ("offset_increment", increment)):
        if value % block_size:
            raise ValueError(f"{name} {value} is not a multiple of the block size {block_size}")
    start = opts.offset + index * increment
    if capacity - start < opts.bs:
        raise ValueError(f"job {index}: region at byte {start} is beyond the namespace "
                         f"({capacity} bytes)")  # fmt: skip
    return start, max(1, min(opts.size, capacity - start) // opts.bs)


def overlapping_jobs(opts: BenchOptions, block_size: int, capacity: int) -> tuple[int, int] | None:
    """Two jobs whose regions overlap (with ``verify`` each would see the other's writes as
    corruption), or None."""
    regions = sorted((*job_region(opts, i, block_size, capacity), i) for i in range(opts.numjobs))
    for (start, units, i), (next_start, _, j) in itertools.pairwise(regions):
        if next_start < start + units * opts.bs:
            return i, j
    return None


@dataclass
class Direction:
    """Totals for reads or writes."""

    ios: int = 0
    bytes: int = 0
    lat: LatencyHistogram = field(default_factory=LatencyHistogram)


@dataclass
class BenchResult:
    read: Direction = field(default_factory=Direction)
    write: Direction = field(default_factory=Direction)
    errors: int = 0
    verify_errors: int = 0
    first_error: str = ""
    elapsed: float = 0.0
    errors_by_status: dict[str, int] = field(default_factory=dict)
    stopped_on_error: bool = False  # the first error ended the run (no continue_on_error)
    #: I/Os each path completed during the measured run (preconditioning and the verify
    #: pass left out)
    path_ios: dict[str, int] = field(default_factory=dict)
    #: the last state saved (``verify_state_save``) and how many saves were made
    verify_state: VerifyState | None = None
    verify_state_saves: int = 0


class BenchJob:
    """One job: a ring, a region, and the loop that keeps ``iodepth`` commands in flight."""

    def __init__(self, head: MultipathHead, opts: BenchOptions, index: int,
                 result: BenchResult, seed: int = 0) -> None:  # fmt: skip
        if opts.bs % head.block_size:
            raise ValueError(f"bs {opts.bs} is not a multiple of the block size {head.block_size}")
        self.head = head
        self.opts = opts
        self.index = index
        self.result = result
        self.nblocks = opts.bs // head.block_size
        start, self.units = job_region(opts, index, head.block_size, head.nlbas * head.block_size)
        self.base_lba = start // head.block_size
        self.ring = Ring(head, opts.iodepth)
        self.buffers = [bytearray(opts.bs) for _ in range(opts.iodepth)]
        self.ring.register_buffers(self.buffers)  # type: ignore[arg-type]
        #: passthrough: one raw command per slot, NSID set once; opcode, SLBA and NLB per I/O
        self.passthrough = opts.engine == "passthrough"
        self.commands = [bytearray(SQE_SIZE) for _ in range(opts.iodepth)]
        for command in self.commands:
            command[4:8] = head.nsid_bytes
        self.seed = seed  # in every block's header: tells this run's writes from others'
        # per unit: the generation of the last completed write (0: none) and of the last one
        # issued (ahead while a write is in flight, or after one failed): the verify state
        self.generation = array("I", bytes(4 * self.units))
        self.issued = array("I", bytes(4 * self.units))
        self.saver: StateSaver | None = None
        self.busy = bytearray(self.units)
        self.random = random.Random(opts.seed + index)
        self._unit_bits = self.units.bit_length()
        self.next_seq = 0
        self.stop_at = 0.0
        #: What each slot (by index) is doing: "read" or "write", on which unit ("" if idle).
        self.slot_op = [""] * opts.iodepth
        self.slot_unit = [0] * opts.iodepth

    def _pick(self, sequential: bool) -> int | None:
        """A unit with no I/O in flight (eight tries), or None."""
        busy = self.busy
        units = self.units
        tries = 8
        while tries:
            tries -= 1
            if sequential:
                unit = self.next_seq
                self.next_seq = (unit + 1) % units
            else:
                # self.random.randrange(units) without its three calls: the very steps of
                # Random._randbelow_with_getrandbits, so the same seed picks the same units
                getrandbits = self.random.getrandbits
                unit = getrandbits(self._unit_bits)
                while unit >= units:
                    unit = getrandbits(self._unit_bits)
            if not busy[unit]:
                return unit
        return None

    def _command(self, slot_index: int, opcode: int, lba: int) -> bytearray:
        """The raw NVM Read or Write command for a passthrough I/O (the ring copies it)."""
        command = self.commands[slot_index]
        command[0] = opcode
        _SLBA_NLB.pack_into(command, _SLBA_OFFSET, lba, self.nblocks - 1)
        return command

    def _fill(self, slot_index: int, unit: int, generation: int) -> None:
        lba = self.base_lba + unit * self.nblocks
        self.buffers[slot_index][:] = pattern(lba, generation, self.index, self.seed, self.opts.bs)

    def _check(self, slot: Slot, unit: int) -> None:
        expected = self.generation[unit]
        if not expected:
            return  # never written by us: nothing to verify
        lba = self.base_lba + unit * self.nblocks
        data = self.buffers[slot.index]
        if data == pattern(lba, expected, self.index, self.seed, self.opts.bs):
            return
        self.result.verify_errors += 1
        if not self.result.first_error:
            _, problem = check_block(data, lba=lba, job=self.index, seed=self.seed,
                                     low=expected, high=expected)  # fmt: skip
            self.result.first_error = (f"verify failed at LBA {lba}: expected generation "
                                       f"{expected}, {problem}")  # fmt: skip

    async def precondition(self) -> None:
        """Write every unit once (not counted), so later reads have data to verify."""
        await self._run("write", sequential=True, count=self.units, record=False)

    async def run(self, stop_at: float) -> None:
        mode = self.opts.rw
        mix = self.opts.rwmixread
        sequential = mode in ("read", "write")
        choose: Callable[[], str] | str
        if mode in ("read", "randread"):
            choose = "read"
        elif mode in ("write", "randwrite"):
            choose = "write"
        else:
            choose = lambda: "read" if self.random.randrange(100) < mix else "write"  # noqa: E731
        await self._run(choose, sequential=sequential, stop_at=stop_at)

    async def verify_pass(self) -> None:
        """Read back and check every unit written (after a write workload)."""
        await self._run("read", sequential=True, count=self.units, record=False)

    async def _run(self, choose: Callable[[], str] | str, *, sequential: bool,
                   stop_at: float = 0.0, count: int = 0, record: bool = True) -> None:  # fmt: skip
        """Keep the ring full until ``count`` I/Os were issued or ``stop_at`` (time.monotonic)
        has passed. ``choose`` is the operation of every I/O, or what picks it for each."""
        ring = self.ring
        result = self.result
        verify = self.opts.verify
        fixed = choose if isinstance(choose, str) else ""  # then no call per I/O
        choose_op = choose if not isinstance(choose, str) else lambda: fixed
        slot_op = self.slot_op
        slot_unit = self.slot_unit
        busy = self.busy
        base_lba, nblocks, passthrough = self.base_lba, self.nblocks, self.passthrough
        bs = self.opts.bs
        issued = 0
        outstanding = 0
        while True:
            # Once per wake-up, not per I/O: a time-limited run may overshoot by one refill.
            more = (issued < count if count else time.monotonic() < stop_at) and not (
                result.stopped_on_error
            )
            # ring.ready can only change here through ring.submit() (a slot failed at once
            # for want of a path), after which the refill stops: checked once.
            if ring.ready:
                more = False
            while more:
                slot = ring.get_sqe()
                if slot is None:
                    break
                unit = self._pick(sequential)
                if unit is None:
                    ring.submit()  # returns the unprepared slot to the free list
                    break
                op = fixed or choose_op()
                lba = base_lba + unit * nblocks
                index = slot.index
                if op == "write":
                    generation = self.generation[unit] + 1
                    self.issued[unit] = generation
                    if verify or not record:
                        self._fill(index, unit, generation)
                    if passthrough:
                        slot.prep_cmd(self._command(index, IoOpcode.WRITE, lba), data_out=index)
                    else:
                        slot.prep_write(lba, nblocks, index)
                    slot.user_data = generation
                elif passthrough:
                    slot.prep_cmd(self._command(index, IoOpcode.READ, lba), data_in=index)
                else:
                    slot.prep_read(lba, nblocks, index)
                busy[unit] = 1
                slot_op[index] = op
                slot_unit[index] = unit
                outstanding += 1
                issued += 1
                if count:
                    more = issued < count
            if not outstanding:
                return
            await ring.submit_and_wait(1)
            now_trio = trio.current_time()
            for cqe in ring.completions():
                index = cqe.index
                op = slot_op[index]
                unit = slot_unit[index]
                slot_op[index] = ""
                outstanding -= 1
                busy[unit] = 0
                if cqe.status_word & 0xFFFE:  # not cqe.ok
                    result.errors += 1
                    name = str(cqe.status)
                    result.errors_by_status[name] = result.errors_by_status.get(name, 0) + 1
                    if not result.first_error:
                        result.first_error = f"{op} at unit {unit}: {cqe.status}"
                    if not self.opts.continue_on_error:
                        result.stopped_on_error = True
                    continue
                if op == "write":
                    self.generation[unit] = cqe.user_data
                    if self.saver is not None:
                        self.saver.writes += 1
                elif verify or not record:
                    self._check(cqe, unit)
                if record:
                    direction = result.write if op == "write" else result.read
                    direction.ios += 1
                    direction.bytes += bs
                    direction.lat.record(int((now_trio - cqe.submitted_at) * 1e9))


async def run_bench(head: MultipathHead, opts: BenchOptions,
                    on_tick: Callable[[float], Any] | None = None) -> BenchResult:  # fmt: skip
    """Run the workload on ``head``; ``on_tick(elapsed)`` is called about once a second."""
    if opts.rw not in RW_MODES:
        raise ValueError(f"unknown rw {opts.rw!r} (one of {', '.join(RW_MODES)})")
    if opts.verify_state_save and not opts.verify:
        raise ValueError("verify_state_save needs verify (the blocks must carry their header)")
    if opts.engine not in ENGINES:
        raise ValueError(f"unknown engine {opts.engine!r} (one of {', '.join(ENGINES)})")
    if opts.verify and opts.numjobs > 1:
        clash = overlapping_jobs(opts, head.block_size, head.nlbas * head.block_size)
        if clash is not None:
            raise ValueError(f"jobs {clash[0]} and {clash[1]} overlap: with verify each job "
                             "needs a region of its own (offset_increment >= size)")  # fmt: skip
    result = BenchResult()
    seed = opts.verify_seed or (new_seed() if opts.verify_state_save else 0)
    jobs = [BenchJob(head, opts, i, result, seed) for i in range(opts.numjobs)]
    saver = None
    if opts.verify_state_save:
        saver = StateSaver(opts.verify_state_save, head, jobs, bs=opts.bs, seed=seed, rw=opts.rw,
                           interval=opts.verify_state_interval,
                           path_losses=lambda: head.stats.path_losses)  # fmt: skip
        for job in jobs:
            job.saver = saver
    reason = "interrupted"
    try:
        async with trio.open_nursery() as saving:
            if saver is not None:
                await saving.start(saver.run)  # the file exists before the first write
            await _workload(head, opts, jobs, result, on_tick)
            reason = "error" if result.stopped_on_error else "end"
            saving.cancel_scope.cancel()
    finally:
        # no write is issued after this: the snapshot is exact (final), even when cancelled
        if saver is not None:
            result.verify_state = saver.save_final(reason)
            result.verify_state_saves = saver.saves
    if opts.verify and opts.rw in ("write", "randwrite"):
        async with trio.open_nursery() as nursery:
            for job in jobs:
                nursery.start_soon(job.verify_pass)
    return result


async def _workload(head: MultipathHead, opts: BenchOptions, jobs: list[BenchJob],
                    result: BenchResult, on_tick: Callable[[float], Any] | None) -> None:  # fmt: skip
    if opts.verify and opts.rw in ("read", "randread", "randrw"):
        async with trio.open_nursery() as nursery:
            for job in jobs:
                nursery.start_soon(job.precondition)
    before = {p.label: p.stats.ios for p in head.paths}
    started = time.monotonic()
    stop_at = started + opts.runtime
    async with trio.open_nursery() as nursery:
        if on_tick is not None:
            nursery.start_soon(_ticker, on_tick, started, stop_at)
        async with trio.open_nursery() as workers:
            for job in jobs:
                workers.start_soon(job.run, stop_at)
        result.elapsed = time.monotonic() - started
        nursery.cancel_scope.cancel()
    result.path_ios = {p.label: p.stats.ios - before.get(p.label, 0) for p in head.paths}


async def _ticker(on_tick: Callable[[float], Any], started: float, stop_at: float) -> None:
    while True:
        await trio.sleep(1.0)
        on_tick(time.monotonic() - started)
