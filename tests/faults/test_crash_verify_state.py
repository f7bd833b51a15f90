"""Nothing acknowledged is ever lost (issue 13): the crash test of fio's verify state, with our
initiator's bench against a file-backed target daemon.

Each round runs ``nvmeof bench --rw randwrite --verify --verify-state-save FILE`` as a
subprocess (as a user would), SIGKILLs the target at a random point of the run, and then runs
``nvmeof bench --verify-only --verify-state-load FILE`` against the target restarted on the same
file: every block whose write the bench saw complete must hold that generation (or, where a
write was in flight, the next one), and nothing else. Two ways to meet the crash, drawn at
random per round:

- give-up: the bench fails I/O at once (``--fast-io-fail-tmo 0``), ends on the first error and
  saves its final state; the target is started again afterwards;
- ride-through: the target is power-cycled at once (SIGKILL, start); the bench reconnects,
  resends what was in flight and runs to its end.

``NVMEOF_CRASH_KILLS`` sets the number of rounds (default 3), ``NVMEOF_CRASH_SEED`` the seed
of the random kill points (default: a new one, printed with every kill point). The negative
controls corrupt one claimed block in the file and claim a generation never written, and check
that verify-only reports exactly those. A crash of the bench itself (SIGKILL) leaves a periodic,
non-final state, which verify-only checks as a lower bound.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import initiator
from initiator.verify_state import load_state, pattern, save_state
from nvmeof_emu import TargetProcess

NQN = "nqn.2026-12.io.nvmeof-emu:crash"
BS = 4096
SIZE = 16 << 20  # 4096 units of 4 KiB: a verify-only pass reads at most that many
KILLS = int(os.environ.get("NVMEOF_CRASH_KILLS", "3"))
RUNTIME = 3.0
ROOT = Path(initiator.__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


def config(tmp_path: Path) -> dict[str, Any]:
    return {
        "subsystem": [{"nqn": NQN, "namespace": [
            {"nsid": 1, "size": SIZE, "block_size": BS, "backend": "file",
             "path": str(tmp_path / "ns1.img")},
        ]}],
        "port": [{"id": 1, "addr": "127.0.0.1", "port": 0, "subsystems": [NQN]}],
    }  # fmt: skip


def nvmeof(target: TargetProcess, *argv: str) -> list[str]:
    addr, port = target.ports[1]
    return [sys.executable, "-m", "initiator.cli", "bench", "--path", f"{addr}:{port}",
            "-n", NQN, "--json", *argv]  # fmt: skip


def environment() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return env


def start_bench(target: TargetProcess, state: Path, *extra: str) -> subprocess.Popen[str]:
    argv = nvmeof(target, "--rw", "randwrite", "--bs", "4k", "--iodepth", "16",
                  "--size", str(SIZE), "--runtime", str(RUNTIME), "--verify",
                  "--verify-state-save", str(state), "--verify-state-interval", "0.25",
                  "--reconnect-delay", "0.1", *extra)  # fmt: skip
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=environment())  # fmt: skip


def wait_for(path: Path, bench: subprocess.Popen[str], timeout: float = 30.0) -> None:
    """Until the bench saved its first state (it does so before the first write)."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if bench.poll() is not None:
            out, err = bench.communicate()
            pytest.fail(f"the bench exited with {bench.returncode} before saving:\n{out}\n{err}")
        assert time.monotonic() < deadline, "no state file"
        time.sleep(0.01)


def finish(bench: subprocess.Popen[str]) -> tuple[int, dict[str, Any], str]:
    try:
        out, err = bench.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        bench.kill()
        out, err = bench.communicate()
        pytest.fail(f"the bench did not end:\n{err}")
    try:
        report = json.loads(out)
    except ValueError:
        pytest.fail(f"no JSON from the bench (exit {bench.returncode}):\n{out}\n{err}")
    return bench.returncode, report, err


def verify_only(target: TargetProcess, state: Path) -> tuple[int, dict[str, Any], str]:
    done = subprocess.run(nvmeof(target, "--verify-only", "--verify-state-load", str(state)),
                          capture_output=True, text=True, env=environment(), timeout=120)  # fmt: skip
    try:
        report = json.loads(done.stdout)
    except ValueError:
        pytest.fail(f"no JSON from verify-only (exit {done.returncode}):\n{done.stdout}\n"
                    f"{done.stderr}")  # fmt: skip
    return done.returncode, report["jobs"][0], done.stderr


def test_acknowledged_writes_survive_target_kills(tmp_path: Path) -> None:
    seed = int(os.environ.get("NVMEOF_CRASH_SEED") or random.randrange(1 << 32))
    rng = random.Random(seed)
    print(f"crash test: {KILLS} kills, seed {seed} (NVMEOF_CRASH_SEED={seed} repeats them)")
    started = time.monotonic()
    with TargetProcess(config(tmp_path), workdir=tmp_path / "target", pcap=False,
                       log_level="info") as target:  # fmt: skip
        for kill in range(1, KILLS + 1):
            mode = rng.choice(("give-up", "ride-through"))
            # ride-through: the restart and reconnect must fit in the run that is left
            delay = rng.uniform(0.2, 2.0 if mode == "give-up" else 1.4)
            state = tmp_path / f"state-{kill}.json"
            where = f"kill {kill}/{KILLS} (seed {seed}): {mode}, {delay:.3f} s into the run"
            print(where, flush=True)
            if mode == "give-up":
                bench = start_bench(target, state, "--fast-io-fail-tmo", "0")
            else:
                bench = start_bench(target, state, "--ctrl-loss-tmo", "30")
            wait_for(state, bench)
            time.sleep(delay)
            if mode == "give-up":
                target.kill()
                code, report, err = finish(bench)
                target.power_cycle()  # the daemon is dead already: this starts it again
                job = report["jobs"][0]
                assert code == 1 and job["io_errors"] > 0, f"{where}: {code}\n{err}"
                assert job["verify_state"]["reason"] == "error", where
            else:
                target.power_cycle()
                code, report, err = finish(bench)
                job = report["jobs"][0]
                assert job["io_errors"] == 0, f"{where}: the bench did not ride through:\n{err}"
                assert report["paths"][0]["reconnected"] >= 1, where
                assert job["verify_state"]["reason"] == "end", where
            saved = load_state(state)
            assert saved.final, where
            status, verified, err = verify_only(target, state)
            counts = verified["verify_state"]
            print(f"  claimed {counts['claimed']} (of {saved.writes} writes), verified "
                  f"{counts['verified']}, in flight {counts['inflight']}, newer "
                  f"{counts['newer']}, failed {counts['failed']}", flush=True)  # fmt: skip
            assert status == 0 and counts["failed"] == 0, f"{where}: writes lost\n{err}"
            assert counts["verified"] == counts["claimed"] == saved.claimed, where
            assert counts["claimed"] >= 50, f"{where}: too little was written to tell anything"
            if mode == "ride-through":  # then the bench read everything back itself at the end
                assert code == 0 and job["verify_errors"] == 0, f"{where}: {job['first_error']}"
    print(f"crash test: {KILLS} kills in {time.monotonic() - started:.1f} s")


def test_verify_only_reports_a_lost_write_and_a_false_claim(tmp_path: Path) -> None:
    """The negative control: one claimed block rolled back in the file to its previous
    generation (a lost write), one claim of a generation never written; each is one line with
    its LBA, the status is 1 and the counts say 2 bad."""
    with TargetProcess(config(tmp_path), workdir=tmp_path / "target", pcap=False,
                       log_level="info") as target:  # fmt: skip
        state = tmp_path / "state.json"
        # a small region: units are written several times (generation >= 2)
        argv = nvmeof(target, "--rw", "randwrite", "--bs", "4k", "--iodepth", "8", "--size",
                      "256k", "--runtime", "1", "--verify", "--verify-state-save", str(state))  # fmt: skip
        done = subprocess.run(argv, capture_output=True, text=True, env=environment(), timeout=60)
        assert done.returncode == 0, done.stderr
        saved = load_state(state)
        job = saved.jobs[0]
        assert saved.final and saved.reason == "end" and not saved.inflight
        status, verified, err = verify_only(target, state)
        assert status == 0 and verified["verify_state"]["failed"] == 0, err

        lost, claim = [u for u in range(job.units) if job.completed[u] >= 2][:2]
        gen = job.completed[lost]
        lba = job.base_lba + lost
        with open(tmp_path / "ns1.img", "r+b") as media:  # the target reads it with pread
            media.seek(lba * BS)
            media.write(pattern(lba, gen - 1, 0, saved.seed, BS))
        claimed = job.completed[claim]
        job.completed[claim] = claimed + 2
        save_state(state, saved)

        status, verified, err = verify_only(target, state)
        counts = verified["verify_state"]
        bad = [line for line in err.splitlines() if line.startswith("verify: bad block")]
        assert status == 1 and verified["error"] == 1
        assert counts["failed"] == 2 and counts["verified"] == counts["claimed"] - 2
        assert bad == counts["bad_blocks"] and len(bad) == 2, err
        assert (f"verify: bad block at LBA {lba} (job 0, offset {lba * BS}, length {BS}): "
                f"expected generation {gen}, found generation {gen - 1}") in bad  # fmt: skip
        assert (f"verify: bad block at LBA {claim} (job 0, offset {claim * BS}, length {BS}): "
                f"expected generation {claimed + 2}, found generation {claimed}") in bad  # fmt: skip


def test_a_killed_bench_leaves_a_state_that_verifies(tmp_path: Path) -> None:
    """SIGKILL of the bench: its last periodic state is not final (writes went on after it),
    so a claimed block may hold that generation or any newer one of the run."""
    with TargetProcess(config(tmp_path), workdir=tmp_path / "target", pcap=False,
                       log_level="info") as target:  # fmt: skip
        state = tmp_path / "state.json"
        bench = start_bench(target, state)
        wait_for(state, bench)
        deadline = time.monotonic() + 30
        while load_state(state).reason == "start":  # at least one periodic save
            assert time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(0.3)
        bench.send_signal(signal.SIGKILL)
        bench.communicate()
        saved = load_state(state)
        assert not saved.final and saved.claimed > 0
        status, verified, err = verify_only(target, state)
        counts = verified["verify_state"]
        assert status == 0 and counts["failed"] == 0, err
        assert counts["verified"] == saved.claimed
