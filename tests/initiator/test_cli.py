"""The ``nvmeof`` command line against an in-process target: every command once, the fio-like
JSON of ``bench``, and one-line errors for bad arguments and unreachable targets.

``main()`` runs ``trio.run`` itself, so each call goes to a worker thread while the target
serves from the test's event loop.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from initiator.cli import main
from target.config import DEMO_NQN, default_config, with_free_ports
from target.daemon import Target


@pytest.fixture
async def target(nursery: trio.Nursery) -> AsyncIterator[Target]:
    served: Target = await nursery.start(Target(with_free_ports(default_config())).serve)
    yield served
    served.stop()


async def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    with trio.fail_after(60):
        code = await trio.to_thread.run_sync(main, list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def paths(target: Target) -> list[str]:
    return [
        arg for pid in (1, 2) for arg in ("--path", f"127.0.0.1:{target.ports[pid].bound_port}")
    ]


async def test_discover_and_list_subsys(target: Target, capsys: pytest.CaptureFixture[str]) -> None:
    disc = str(target.ports[3].bound_port)
    code, out, _ = await run(capsys, "discover", "-a", "127.0.0.1", "-s", disc)
    # the discovery subsystem itself first (TP 8013, as nvmet), then the two paths
    assert code == 0 and "Number of Records 3" in out
    assert "subtype: current discovery subsystem" in out
    assert str(target.ports[1].bound_port) in out and str(target.ports[2].bound_port) in out
    code, out, _ = await run(capsys, "list-subsys", "-a", "127.0.0.1", "-s", disc, "-o", "json")
    view = json.loads(out)["subsystems"][0]
    assert code == 0 and view["nqn"] == DEMO_NQN
    assert sorted(p["ana_state"] for p in view["paths"]) == ["non-optimized", "optimized"]
    assert all(p["state"] == "live" for p in view["paths"])


async def test_identify_and_ana_log(target: Target, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = await run(capsys, "id-ctrl", *paths(target), "-n", DEMO_NQN, "-o", "json")
    assert code == 0
    first = json.loads(out.split("\n}\n")[0] + "\n}")
    assert first["subnqn"] == DEMO_NQN and first["cmic"] == 0x0B
    code, out, _ = await run(capsys, "id-ns", *paths(target)[:2], "-n", DEMO_NQN, "-N", "2",
                             "-o", "json")  # fmt: skip
    assert code == 0 and json.loads(out)["nsze"] == (256 << 20) // 4096
    code, out, _ = await run(capsys, "ana-log", *paths(target), "-n", DEMO_NQN, "-o", "json")
    states = [g["state"] for log in json.loads(out)["ana_logs"] for g in log["groups"]]
    assert code == 0 and sorted(states) == ["non-optimized", "optimized"]


async def test_write_then_verified_read(target: Target, capsys: pytest.CaptureFixture[str]) -> None:
    common = [*paths(target), "-n", DEMO_NQN, "--slba", "64", "--blocks", "16"]
    code, out, _ = await run(capsys, "write", *common, "--pattern", "0x5c")
    assert code == 0 and "wrote 16 blocks" in out
    code, out, _ = await run(capsys, "read", *common, "--pattern", "0x5c", "--verify")
    assert code == 0 and "verified" in out
    code, out, _ = await run(capsys, "read", *common, "--pattern", "0x11", "--verify")
    assert code == 1 and "verify FAILED" in out


async def test_bench_json_has_fio_shape_and_timeline(target: Target, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    timeline = tmp_path / "t.html"
    code, out, err = await run(capsys, "bench", *paths(target), "-n", DEMO_NQN, "--rw",
                               "randrw", "--bs", "4k", "--iodepth", "8", "--runtime", "1",
                               "--size", "4M", "--verify", "--json",
                               "--timeline", str(timeline))  # fmt: skip
    assert code == 0, err
    report = json.loads(out)
    job = report["jobs"][0]
    assert job["error"] == 0 and job["verify_errors"] == 0
    for side in ("read", "write"):
        assert job[side]["iops"] > 0 and job[side]["io_bytes"] > 0
        assert set(job[side]["lat_ns"]) >= {"min", "max", "mean", "percentile"}
    assert set(report["multipath"]) >= {"failovers", "requeued", "retries", "no_path_queued",
                                        "failed"}  # fmt: skip
    assert {p["addr"] for p in report["paths"]} == {f"127.0.0.1:{target.ports[i].bound_port}"
                                                    for i in (1, 2)}  # fmt: skip
    assert "<svg" in timeline.read_text()
    # per-path I/Os are the measured run's: the preconditioning write pass is left out
    assert sum(p["ios"] for p in report["paths"]) == sum(
        job[side]["total_ios"] for side in ("read", "write")
    )


@pytest.mark.parametrize("go_on", [False, True])
async def test_bench_stops_at_the_first_error_unless_told_to_continue(
    go_on: bool, target: Target, capsys: pytest.CaptureFixture[str]
) -> None:
    # Unrecovered Read Error with DNR: a media error, completed as it is (no retry, no failover)
    target.fault_add({"action": "status", "opcode": 0x02, "status": 0x281, "dnr": True,
                      "every": 5})  # fmt: skip
    more = ["--continue-on-error"] if go_on else []
    code, out, _ = await run(capsys, "bench", *paths(target), "-n", DEMO_NQN, "--rw", "randread",
                             "--iodepth", "4", "--runtime", "1", "--size", "1M", "--json", *more)  # fmt: skip
    job = json.loads(out)["jobs"][0]
    assert code != 0 and job["error"] == 1 and job["stopped_on_error"] is not go_on
    (status,) = job["errors_by_status"]
    assert "0x281" in status.lower() or "unrecovered" in status.lower(), status
    assert job["errors_by_status"][status] == job["io_errors"]
    if go_on:
        assert job["io_errors"] > 20 and job["elapsed"] >= 0.9
    else:  # what was in flight completes; nothing new is issued
        assert job["io_errors"] <= 4 and job["elapsed"] < 0.9


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["bench"], "give -a/--traddr"),
        (["bench", "--path", "127.0.0.1:4420"], "--path needs -n/--nqn"),
        (["bench", "--path", "nowhere"], "expected ADDR:PORT"),
        (["bench", "-a", "x", "--rwmixread", "200"], "--rwmixread"),
        (["bench", "-a", "x", "--bs", "4q"], "not a size"),
        (["bench", "-a", "x", "--timeline", "t.txt"], ".html or .png"),
        (["bench", "-a", "x", "--events", "s.jsonl"], "--events needs --timeline"),
        (["bench", "-a", "x", "--verify-state-save", "s"], "--verify-state-save needs --verify"),
        (["bench", "-a", "x", "--verify-only"], "--verify-only needs --verify-state-load"),
        (["bench", "-a", "x", "--verify-state-load", "s"], "--verify-state-load needs"),
        (["bench", "-a", "x", "--verify-only", "--verify-state-save", "t"], "writes nothing"),
        (["bench", "-a", "x", "--verify-state-interval", "0"], "--verify-state-interval"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_bad_arguments_are_one_line(argv: list[str], needle: str,
                                    capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own errors exit; ours return the status
        code = exc.code  # type: ignore[assignment]
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and "\n" not in err


async def test_unreachable_target_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = await run(capsys, "discover", "-a", "127.0.0.1", "-s", "1", "--timeout", "2")
    assert code == 1
    lines = [line for line in err.splitlines() if line.startswith("nvmeof discover:")]
    assert len(lines) == 1


async def test_a_reader_that_goes_away_ends_the_command_quietly(target: Target) -> None:
    """``nvmeof id-ctrl ... | head -1``: no "Broken pipe" message, the SIGPIPE exit status. The
    reader here is gone before the first write (with head, whether the output fits in the pipe
    decides whether a write fails: this makes it fail every time)."""
    argv = [sys.executable, "-m", "initiator.cli", "id-ctrl", *paths(target), "-n", DEMO_NQN]

    def reader_gone() -> tuple[int, str]:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                cwd=Path(__file__).resolve().parents[2])  # fmt: skip
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.close()
        try:
            return proc.wait(timeout=30), proc.stderr.read()
        finally:
            proc.kill()
            proc.stderr.close()

    with trio.fail_after(60):
        status, stderr = await trio.to_thread.run_sync(reader_gone)
    assert status == 141 and "Broken pipe" not in stderr and "Errno" not in stderr, stderr


async def test_a_refused_connect_names_the_status_and_the_field_nvmet_points_at(
    target: Target, capsys: pytest.CaptureFixture[str]
) -> None:
    where = f"127.0.0.1:{target.ports[1].bound_port}"
    code, _, err = await run(capsys, "id-ctrl", "--path", where, "-n", "nqn.x:none")
    assert code != 0
    assert "CONNECT_INVALID_PARAM (0x182 DNR) (DW0 0x10100: subsystem NQN)" in err, err
