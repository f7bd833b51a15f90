"""``nvmeof bench --verify-state-save`` / ``--verify-only --verify-state-load``: fio's verify
state, for crash tests (kill the target, or the bench, mid-run; then check that every write the
bench saw complete is on the media).

The content of a written block is a function of (LBA, generation, job, seed): a 32-byte header
(:data:`HEADER`) repeated over the block, so verifying needs no copy of the data. A run that
saves state draws a fresh random 64-bit ``seed``, so a block still holding an earlier run's
content never passes for this run's.

While the bench writes, each job keeps two arrays of 32-bit generations per unit (one unit is
``bs`` bytes): ``issued`` (stored when a write is sent) and ``completed`` (stored when it
completes successfully). That is the whole cost on the I/O path. :class:`StateSaver` writes a
snapshot of them to the state file — atomically: a temporary file, fsync, rename, fsync of the
directory — when the run starts, every ``interval`` seconds, when a path is lost, and when the
run ends (ended, stopped on an error, or interrupted). A unit whose ``issued`` generation is
ahead of ``completed`` had a write in flight (or one that failed, which may have reached the
media anyway): either generation is accepted there.

A *final* snapshot is taken when the bench issues no more writes (the run ended, by its
runtime, an error or Ctrl-C): it is exact, so a claimed block must hold its completed
generation, or the next one where a write was in flight, and nothing else. A periodic snapshot
is not final (the bench went on writing after it; it may have been killed since): a claimed
block must hold a generation of this run at least as new as the claim. Either way a write that
completed after the last save is simply not claimed.

The state file is JSON (``FORMAT``, version 1)::

    {"format": "nvmeof-bench-verify-state", "version": 1, "final": true, "reason": "end",
     "saved_at": "2026-11-02T10:00:00Z", "nqn": "...", "nsid": 1, "block_size": 4096,
     "nlbas": 65536, "bs": 4096, "seed": "0x5d1c...", "rw": "randwrite", "writes": 12345,
     "jobs": [{"job": 0, "base_lba": 0, "units": 4096, "claimed": 3011,
               "inflight": [17, 2040],
               "completed": "<base64 of zlib of little-endian uint32 per unit>"}]}
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import secrets
import struct
import sys
import time
import zlib
from array import array
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import trio

from initiator.latency import LatencyHistogram
from initiator.ring import Ring

#: block (the unit's first LBA), generation, job, magic, seed: 32 bytes, divides any block size
HEADER = struct.Struct("<QIIQQ")
MAGIC = 0x6E766D656F662D65  # "nvmeof-e"
FORMAT = "nvmeof-bench-verify-state"
VERSION = 1
#: Bad blocks listed one per line; the rest are only counted.
REPORT_LIMIT = 20
#: How often the saver looks for a lost path between its periodic saves (seconds).
_POLL = 0.05


def new_seed() -> int:
    """A run's verify seed: random and never 0 (0 is the plain ``--verify`` run's)."""
    return secrets.randbits(64) or 1


def pattern(lba: int, generation: int, job: int, seed: int, size: int) -> bytes:
    """The content of a ``size``-byte unit at ``lba`` written with ``generation``."""
    return HEADER.pack(lba, generation, job, MAGIC, seed) * (size // HEADER.size)


def check_block(data: bytes | bytearray | memoryview, *, lba: int, job: int, seed: int,
                low: int, high: int | None) -> tuple[int | None, str | None]:  # fmt: skip
    """Check a unit read back: ``(generation found, None)`` if it holds this run's content
    with a generation in ``low..high`` (``high`` None: no upper bound), else
    ``(generation or None, what is wrong)``."""
    size = len(data)
    try:
        got_lba, generation, got_job, magic, got_seed = HEADER.unpack_from(data)
    except struct.error:
        return None, f"short read ({size} bytes)"
    if magic != MAGIC:
        if not any(data):
            return None, "found zeroes (never written)"
        return None, f"found no bench header (magic {magic:#018x})"
    if got_seed != seed:
        return None, f"found a block of another run (seed {got_seed:#x}, generation {generation})"
    if got_lba != lba or got_job != job:
        return generation, (f"found the block of LBA {got_lba} job {got_job} "
                            "(a misdirected write)")  # fmt: skip
    if generation < low or (high is not None and generation > high):
        return generation, f"found generation {generation}"
    expected = pattern(lba, generation, job, seed, size)
    if data != expected:
        at = next(i for i in range(size) if data[i] != expected[i])
        return generation, f"torn: generation {generation} in the header, byte {at} differs"
    return generation, None


def wanted(low: int, high: int | None) -> str:
    if high is None:
        return f"generation {low} or newer"
    return f"generation {low}" if high == low else f"generation {low} or {high} (write in flight)"


# -- the state file --------------------------------------------------------------------------------


@dataclass
class JobState:
    job: int
    base_lba: int
    units: int
    completed: array[int]  # per unit: the last generation whose write completed (0: none)
    inflight: frozenset[int] = frozenset()  # units with a write issued and not completed

    @property
    def claimed(self) -> int:
        return sum(1 for g in self.completed if g)

    def accepted(self, unit: int, final: bool) -> tuple[int, int | None]:
        """The generations a claimed unit may hold: (low, high); high None = no bound."""
        low = self.completed[unit]
        if not final:
            return low, None
        return low, low + 1 if unit in self.inflight else low


@dataclass
class VerifyState:
    nqn: str
    nsid: int
    block_size: int
    nlbas: int
    bs: int
    seed: int
    jobs: list[JobState]
    final: bool = False
    reason: str = ""
    saved_at: str = ""
    rw: str = ""
    writes: int = 0  # writes completed when saved (the claimed ones and the overwritten)

    @property
    def claimed(self) -> int:
        return sum(job.claimed for job in self.jobs)

    @property
    def inflight(self) -> int:
        return sum(len(job.inflight) for job in self.jobs)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT, "version": VERSION, "final": self.final, "reason": self.reason,
            "saved_at": self.saved_at, "nqn": self.nqn, "nsid": self.nsid,
            "block_size": self.block_size, "nlbas": self.nlbas, "bs": self.bs,
            "seed": f"{self.seed:#x}", "rw": self.rw, "writes": self.writes,
            "jobs": [{"job": j.job, "base_lba": j.base_lba, "units": j.units,
                      "claimed": j.claimed, "inflight": sorted(j.inflight),
                      "completed": _encode(j.completed)} for j in self.jobs],
        }  # fmt: skip

    @classmethod
    def from_json(cls, doc: Any) -> VerifyState:
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise ValueError(f'not a verify state file (no "format": "{FORMAT}")')
        if doc.get("version") != VERSION:
            raise ValueError(f"verify state version {doc.get('version')!r}, not {VERSION}")
        try:
            jobs = []
            for j in doc["jobs"]:
                completed = _decode(j["completed"])
                if len(completed) != int(j["units"]):
                    raise ValueError(f"job {j['job']}: {len(completed)} generations for "
                                     f"{j['units']} units")  # fmt: skip
                inflight = frozenset(int(u) for u in j["inflight"])
                if any(not 0 <= u < len(completed) for u in inflight):
                    raise ValueError(f"job {j['job']}: an in-flight unit beyond the region")
                jobs.append(JobState(int(j["job"]), int(j["base_lba"]), int(j["units"]),
                                     completed, inflight))  # fmt: skip
            state = cls(nqn=str(doc["nqn"]), nsid=int(doc["nsid"]),
                        block_size=int(doc["block_size"]), nlbas=int(doc["nlbas"]),
                        bs=int(doc["bs"]), seed=int(str(doc["seed"]), 0), jobs=jobs,
                        final=bool(doc["final"]), reason=str(doc.get("reason", "")),
                        saved_at=str(doc.get("saved_at", "")), rw=str(doc.get("rw", "")),
                        writes=int(doc.get("writes", 0)))  # fmt: skip
        except (KeyError, TypeError, zlib.error, binascii.Error) as exc:
            raise ValueError(f"malformed verify state: {type(exc).__name__} {exc}") from None
        if state.block_size <= 0 or state.bs % state.block_size:
            raise ValueError(f"bs {state.bs} is not a multiple of the block size "
                             f"{state.block_size}")  # fmt: skip
        return state


def _encode(values: array[int]) -> str:
    data = array("I", values)
    if sys.byteorder == "big":
        data.byteswap()
    return base64.b64encode(zlib.compress(data.tobytes(), 6)).decode("ascii")


def _decode(text: str) -> array[int]:
    raw = zlib.decompress(base64.b64decode(text, validate=True))
    if len(raw) % 4:
        raise ValueError("generations: not a whole number of uint32")
    values = array("I")
    values.frombytes(raw)
    if sys.byteorder == "big":
        values.byteswap()
    return values


def save_state(path: str | os.PathLike[str], state: VerifyState) -> None:
    """Write ``state`` to ``path`` atomically and durably: a temporary file beside it, fsync,
    rename over ``path``, fsync of the directory."""
    target = Path(path)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    data = json.dumps(state.to_json(), indent=1).encode()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, target)
    dir_fd = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def load_state(path: str | os.PathLike[str]) -> VerifyState:
    """Read a state file; ValueError (naming the file) if it is not one."""
    try:
        doc = json.loads(Path(path).read_bytes())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: {exc}") from None
    try:
        return VerifyState.from_json(doc)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


# -- saving while the bench runs -------------------------------------------------------------------


class TrackedJob(Protocol):
    """What the saver reads of a bench job (:class:`initiator.bench.BenchJob`)."""

    index: int
    base_lba: int
    units: int
    generation: array[int]  # completed
    issued: array[int]


class HeadInfo(Protocol):
    subnqn: str
    nsid: int
    block_size: int
    nlbas: int


class StateSaver:
    """Saves the jobs' state to ``path``: :meth:`run` (periodically and on a lost path) while
    the run goes, :meth:`save_final` once no write will be issued any more."""

    def __init__(self, path: str | os.PathLike[str], head: HeadInfo, jobs: Sequence[TrackedJob],
                 *, bs: int, seed: int, rw: str, interval: float = 1.0,
                 path_losses: Callable[[], int] = lambda: 0) -> None:  # fmt: skip
        self.path = path
        self.head = head
        self.jobs = jobs
        self.bs = bs
        self.seed = seed
        self.rw = rw
        self.interval = interval
        self.path_losses = path_losses
        self.saves = 0
        self.writes = 0  # completed writes, counted by the bench
        self.last: VerifyState | None = None

    def _snapshot(self) -> tuple[list[tuple[TrackedJob, array[int], array[int]]], int]:
        # synchronous: consistent across jobs (nothing completes between two copies)
        return [(j, array("I", j.generation), array("I", j.issued)) for j in self.jobs], self.writes

    def _build(self, snap: tuple[list[tuple[TrackedJob, array[int], array[int]]], int],
               reason: str, final: bool) -> VerifyState:  # fmt: skip
        copies, writes = snap
        jobs = []
        for job, completed, issued in copies:
            inflight = frozenset(u for u in range(len(issued)) if issued[u] != completed[u])
            jobs.append(JobState(job.index, job.base_lba, job.units, completed, inflight))
        head = self.head
        return VerifyState(nqn=head.subnqn, nsid=head.nsid, block_size=head.block_size,
                           nlbas=head.nlbas, bs=self.bs, seed=self.seed, jobs=jobs, final=final,
                           reason=reason, rw=self.rw, writes=writes,
                           saved_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))  # fmt: skip

    def _write(self, state: VerifyState) -> None:
        save_state(self.path, state)
        self.saves += 1
        self.last = state

    async def save(self, reason: str) -> None:
        """A non-final snapshot, written in a worker thread."""
        snap = self._snapshot()
        await trio.to_thread.run_sync(lambda: self._write(self._build(snap, reason, False)))

    def save_final(self, reason: str) -> VerifyState:
        """The exact snapshot, written before returning (also while cancelled)."""
        state = self._build(self._snapshot(), reason, True)
        self._write(state)
        return state

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Save at once (started when the file exists), then every ``interval`` seconds and
        whenever a path is lost; until cancelled."""
        await self.save("start")
        task_status.started()
        losses = self.path_losses()
        due = trio.current_time() + self.interval
        while True:
            await trio.sleep(min(_POLL, self.interval))
            now_losses = self.path_losses()
            if now_losses != losses:
                losses = now_losses
                await self.save("path-lost")
                due = trio.current_time() + self.interval
            elif trio.current_time() >= due:
                await self.save("periodic")
                due = trio.current_time() + self.interval


# -- verify-only -----------------------------------------------------------------------------------


@dataclass
class VerifyOutcome:
    claimed: int = 0
    verified: int = 0
    failed: int = 0
    inflight: int = 0  # claimed units with a write in flight at the save
    newer: int = 0  # units holding a newer generation than claimed (in flight, or not final)
    io_errors: int = 0
    lines: list[str] = field(default_factory=list)  # the first REPORT_LIMIT bad blocks
    ios: int = 0
    bytes: int = 0
    lat: LatencyHistogram = field(default_factory=LatencyHistogram)
    elapsed: float = 0.0


class VerifyHead(Protocol):
    """What verify-only needs of a namespace head (:class:`initiator.multipath.MultipathHead`)."""

    subnqn: str
    nsid: int
    nlbas: int

    @property
    def nsid_bytes(self) -> bytes: ...
    @property
    def block_size(self) -> int: ...
    def submit(self, slot: Any) -> None: ...
    def ring_doorbells(self) -> None: ...


def check_geometry(head: VerifyHead, state: VerifyState) -> None:
    """ValueError unless ``head`` can hold what ``state`` claims (same block size, big enough)."""
    if head.block_size != state.block_size:
        raise ValueError(f"the state is for {state.block_size}-byte blocks, namespace "
                         f"{head.nsid} has {head.block_size}")  # fmt: skip
    nblocks = state.bs // state.block_size
    end = max((j.base_lba + j.units * nblocks for j in state.jobs), default=0)
    if end > head.nlbas:
        raise ValueError(f"the state claims blocks up to LBA {end - 1}, namespace {head.nsid} "
                         f"has {head.nlbas}")  # fmt: skip


def _work(state: VerifyState) -> Iterator[tuple[JobState, int]]:
    for job in state.jobs:
        completed = job.completed
        for unit in range(job.units):
            if completed[unit]:
                yield job, unit


async def verify_only(head: VerifyHead, state: VerifyState, *, iodepth: int = 32,
                      limit: int = REPORT_LIMIT,
                      on_bad: Callable[[str], Any] | None = None) -> VerifyOutcome:  # fmt: skip
    """Read every unit ``state`` claims and check what it holds; ``on_bad(line)`` for each of
    the first ``limit`` bad ones (all are counted)."""
    check_geometry(head, state)
    out = VerifyOutcome(claimed=state.claimed)
    bs = state.bs
    nblocks = bs // state.block_size
    ring = Ring(head, iodepth)
    buffers = [bytearray(bs) for _ in range(iodepth)]
    ring.register_buffers(buffers)  # type: ignore[arg-type]
    work = _work(state)
    pending: dict[int, tuple[JobState, int]] = {}
    exhausted = False
    started = time.monotonic()

    def bad(job: JobState, unit: int, what: str) -> None:
        out.failed += 1
        if out.failed > limit:
            return
        lba = job.base_lba + unit * nblocks
        low, high = job.accepted(unit, state.final)
        line = (f"verify: bad block at LBA {lba} (job {job.job}, offset {lba * state.block_size}"
                f", length {bs}): expected {wanted(low, high)}, {what}")  # fmt: skip
        out.lines.append(line)
        if on_bad is not None:
            on_bad(line)

    while True:
        while not exhausted and ring.ready == 0:
            slot = ring.get_sqe()
            if slot is None:
                break
            item = next(work, None)
            if item is None:
                exhausted = True
                ring.submit()  # returns the unprepared slot
                break
            job, unit = item
            slot.prep_read(job.base_lba + unit * nblocks, nblocks, slot.index)
            pending[slot.index] = item
        if not pending:
            break
        await ring.submit_and_wait(1)
        now = trio.current_time()
        for cqe in ring.completions():
            job, unit = pending.pop(cqe.index)
            if job.inflight and unit in job.inflight:
                out.inflight += 1
            if not cqe.ok:
                out.io_errors += 1
                bad(job, unit, f"read failed: {cqe.status}")
                continue
            out.ios += 1
            out.bytes += bs
            out.lat.record(int((now - cqe.submitted_at) * 1e9))
            low, high = job.accepted(unit, state.final)
            lba = job.base_lba + unit * nblocks
            found, problem = check_block(buffers[cqe.index], lba=lba, job=job.job,
                                         seed=state.seed, low=low, high=high)  # fmt: skip
            if problem is not None:
                bad(job, unit, problem)
                continue
            out.verified += 1
            if found is not None and found > low:
                out.newer += 1
    out.elapsed = time.monotonic() - started
    return out
