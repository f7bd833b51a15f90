"""The bench's verify state (fio's verify_state_save / verify_only): the block check and its
diagnoses, the state file, the saver, and ``nvmeof bench --verify-only`` end to end against an
in-process target (the crash test itself is tests/faults/test_crash_verify_state.py)."""

from __future__ import annotations

import json
from array import array
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import trio

from initiator import ControllerOptions, open_host
from initiator.bench import BenchOptions, run_bench
from initiator.cli import main
from initiator.verify_state import (
    REPORT_LIMIT,
    JobState,
    StateSaver,
    VerifyState,
    check_block,
    load_state,
    pattern,
    save_state,
    verify_only,
)
from target.config import DEMO_NQN, default_config, with_free_ports
from target.daemon import Target

SEED = 0x1234_5678_9ABC_DEF0


@pytest.mark.parametrize(
    ("data", "low", "high", "found", "problem"),
    [
        (pattern(80, 3, 1, SEED, 4096), 3, 3, 3, None),
        (pattern(80, 4, 1, SEED, 4096), 3, 4, 4, None),  # the write in flight landed
        (pattern(80, 9, 1, SEED, 4096), 3, None, 9, None),  # not final: newer is fine
        (pattern(80, 2, 1, SEED, 4096), 3, None, 2, "found generation 2"),
        (pattern(80, 5, 1, SEED, 4096), 3, 4, 5, "found generation 5"),
        (bytes(4096), 3, 3, None, "found zeroes (never written)"),
        (b"\xff" * 4096, 3, 3, None, "found no bench header (magic 0xffffffffffffffff)"),
        (pattern(80, 3, 1, SEED + 1, 4096), 3, 3, None, "found a block of another run"),
        (pattern(88, 3, 1, SEED, 4096), 3, 3, 3, "found the block of LBA 88 job 1"),
        (pattern(80, 3, 0, SEED, 4096), 3, 3, 3, "found the block of LBA 80 job 0"),
        (pattern(80, 3, 1, SEED, 4096)[:512] + pattern(80, 2, 1, SEED, 4096)[512:], 3, 3, 3,
         "torn: generation 3 in the header, byte 520 differs"),
    ],
)  # fmt: skip
def test_check_block(data: bytes, low: int, high: int | None, found: int | None,
                     problem: str | None) -> None:  # fmt: skip
    got, what = check_block(data, lba=80, job=1, seed=SEED, low=low, high=high)
    assert got == found
    assert what == problem if problem is None else what is not None and what.startswith(problem)


def a_state(final: bool = True) -> VerifyState:
    completed = array("I", [0, 1, 5, 0, 2])
    jobs = [JobState(0, 0, 5, completed, frozenset({1, 3})),
            JobState(1, 40, 5, array("I", [7, 0, 0, 0, 0]))]  # fmt: skip
    return VerifyState(nqn=DEMO_NQN, nsid=2, block_size=512, nlbas=80, bs=4096, seed=SEED,
                       jobs=jobs, final=final, reason="end", rw="randwrite", writes=15)  # fmt: skip


def test_state_file_round_trip_and_what_it_accepts(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    save_state(path, a_state())
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]  # the temporary file renamed
    loaded = load_state(path)
    assert loaded == a_state()
    assert (loaded.claimed, loaded.inflight) == (4, 2)
    doc = json.loads(path.read_text())
    assert doc["seed"] == hex(SEED) and doc["jobs"][0]["claimed"] == 3
    job = loaded.jobs[0]
    assert job.accepted(1, final=True) == (1, 2)  # in flight: either generation
    assert job.accepted(2, final=True) == (5, 5)
    assert job.accepted(2, final=False) == (5, None)


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        (lambda d: "{nope", "Expecting"),
        (lambda d: {**d, "format": "fio"}, "not a verify state file"),
        (lambda d: {**d, "version": 9}, "version 9"),
        (lambda d: {**d, "bs": 1000}, "not a multiple"),
        (lambda d: {**d, "jobs": [{**d["jobs"][0], "units": 6}]}, "5 generations for 6 units"),
        (lambda d: {**d, "jobs": [{**d["jobs"][0], "inflight": [5]}]}, "beyond the region"),
        (lambda d: {**d, "jobs": [{**d["jobs"][0], "completed": "!!"}]}, "malformed"),
        (lambda d: {k: v for k, v in d.items() if k != "nsid"}, "malformed"),
    ],
)  # fmt: skip
def test_a_bad_state_file_is_one_error_naming_it(tmp_path: Path, edit: Any, needle: str) -> None:
    path = tmp_path / "state.json"
    save_state(path, a_state())
    doc = edit(json.loads(path.read_text()))
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    with pytest.raises(ValueError, match=needle) as caught:
        load_state(path)
    assert str(path) in str(caught.value)


async def test_saver_saves_at_start_periodically_on_a_lost_path_and_at_the_end(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.json"
    job = SimpleNamespace(index=0, base_lba=0, units=4, generation=array("I", [0, 3, 1, 0]),
                          issued=array("I", [1, 3, 2, 0]))  # fmt: skip
    head = SimpleNamespace(subnqn=DEMO_NQN, nsid=1, block_size=4096, nlbas=4)
    losses = [0]
    saver = StateSaver(path, head, [job], bs=4096, seed=SEED, rw="randwrite",  # type: ignore[list-item]
                       interval=0.3, path_losses=lambda: losses[0])  # fmt: skip
    reasons = []
    async with trio.open_nursery() as nursery:
        await nursery.start(saver.run)
        reasons.append(load_state(path).reason)
        await trio.sleep(0.45)
        reasons.append(load_state(path).reason)
        losses[0] += 1
        await trio.sleep(0.15)
        reasons.append(load_state(path).reason)
        nursery.cancel_scope.cancel()
    final = saver.save_final("end")
    assert reasons == ["start", "periodic", "path-lost"]
    assert load_state(path) == final and final.final
    assert final.jobs[0].inflight == {0, 2} and final.claimed == 2


# -- end to end against an in-process target ------------------------------------------------------


@pytest.fixture
async def target(nursery: trio.Nursery) -> AsyncIterator[Target]:
    served: Target = await nursery.start(Target(with_free_ports(default_config())).serve)
    yield served
    served.stop()


async def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    with trio.fail_after(60):
        code = await trio.to_thread.run_sync(main, list(argv))
    out, err = capsys.readouterr()
    return code, out, err


async def test_bench_saves_state_and_verify_only_checks_it(
    target: Target, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state.json"
    path = ["--path", f"127.0.0.1:{target.ports[1].bound_port}", "-n", DEMO_NQN]
    code, out, err = await cli(capsys, "bench", *path, "-N", "2", "--rw", "randwrite",
                               "--iodepth", "8", "--size", "512k", "--runtime", "0.5",
                               "--numjobs", "2", "--verify", "--verify-state-save", str(state),
                               "--json")  # fmt: skip
    assert code == 0, err
    saved = load_state(state)
    info = json.loads(out)["jobs"][0]["verify_state"]
    assert saved.final and saved.reason == "end" and saved.nsid == 2 and len(saved.jobs) == 2
    assert info["claimed"] == saved.claimed > 0 and info["seed"] == hex(saved.seed)
    assert "verify state:" in err

    # -N comes from the state file
    code, out, err = await cli(capsys, "bench", *path, "--verify-only", "--verify-state-load",
                               str(state))  # fmt: skip
    assert code == 0, err
    assert f"verify: {saved.claimed} of {saved.claimed} claimed blocks verified, 0 bad" in out

    # claim a newer generation than written for 25 units: 20 lines, then a count
    for job in saved.jobs:
        for unit in range(job.units):
            if job.completed[unit]:
                job.completed[unit] += 1
    bumped = saved.claimed
    save_state(state, saved)
    code, out, err = await cli(capsys, "bench", *path, "--verify-only", "--verify-state-load",
                               str(state), "--json")  # fmt: skip
    report = json.loads(out)["jobs"][0]
    lines = [line for line in err.splitlines() if line.startswith("verify: bad block")]
    assert code == 1 and report["error"] == 1 and report["verify_errors"] == bumped
    assert report["verify_state"]["failed"] == bumped and report["verify_state"]["verified"] == 0
    assert len(lines) == REPORT_LIMIT == len(report["verify_state"]["bad_blocks"])
    assert f"verify: ... and {bumped - REPORT_LIMIT} more bad blocks not listed" in err

    code, _, err = await cli(capsys, "bench", *path, "-N", "1", "--verify-only",
                             "--verify-state-load", str(state))  # fmt: skip
    assert code == 1 and "is for namespace 2, not 1" in err


async def test_an_interrupted_run_saves_a_final_state(target: Target, tmp_path: Path) -> None:
    """Cancelled mid-run (Ctrl-C): no write is issued after the last snapshot, so it is final;
    what was in flight is marked so and verifies either way."""
    state = tmp_path / "state.json"
    async with open_host(ControllerOptions(io_queues=2)) as host:
        await host.connect("127.0.0.1", target.ports[1].bound_port, DEMO_NQN)
        head = host.namespace(DEMO_NQN, 1)
        opts = BenchOptions(rw="randwrite", iodepth=16, size=1 << 20, runtime=30, verify=True,
                            verify_state_save=str(state))  # fmt: skip
        with trio.move_on_after(0.5):
            await run_bench(head, opts)
        saved = load_state(state)
        assert saved.final and saved.reason == "interrupted" and saved.claimed > 0
        outcome = await verify_only(head, saved)
    assert outcome.failed == 0 and outcome.verified == saved.claimed
