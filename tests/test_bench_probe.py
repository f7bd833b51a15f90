"""``make bench``'s measurement helpers (bench/probe.py) and the profile summary
(bench/profile.py): the arithmetic on synthetic figures, and the plumbing on real child processes
(snapshots over the pipe, the allocation counter, perf's syscall counts), without timing
anything."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import pytest

from bench import probe
from bench.profile import flame_svg, function, parse_collapsed, top

ROOT = Path(__file__).resolve().parent.parent


def test_parse_perf_csv() -> None:
    text = (
        "# started on Mon Dec  7 15:53:33 2026\n\n"
        "584309,,raw_syscalls:sys_enter,1002769531,100.00,,\n"
        "292155,,syscalls:sys_enter_sendto,1002764172,100.00,,\n"
        "<not counted>,,syscalls:sys_enter_recvfrom,0,100.00,,\n"
    )
    names = {event: name for name, event in probe.SYSCALL_EVENTS.items()}
    assert probe.parse_perf_csv(text, names) == {"total": 584309, "sendto": 292155}


class Scripted:
    """A process whose snapshots are given."""

    def __init__(self, *snaps: dict[str, Any]) -> None:
        self.snaps = list(snaps)
        self.pid = 0

    def snapshot(self) -> dict[str, Any]:
        return self.snaps.pop(0)


def test_window_divides_each_side_by_the_ios_in_it() -> None:
    a = Scripted({"user": 1.0, "sys": 0.5, "allocs": 100, "blocks": 50, "ops": 1000},
                 {"user": 1.2, "sys": 0.6, "allocs": 10_100, "blocks": 52, "ops": 3000})  # fmt: skip
    b = Scripted({"user": 0.0, "sys": 0.0, "allocs": None, "blocks": 7},
                 {"user": 0.04, "sys": 0.0, "allocs": None, "blocks": 7})  # fmt: skip
    sides = [probe.Side("a", a), probe.Side("b", b)]  # type: ignore[arg-type]
    window = probe.Window(sides, lambda snaps: int(snaps["a"]["ops"]))
    window.open()
    window.close()
    figures = window.figures()
    assert figures["window_ios"] == 2000
    fa, fb = figures["a"], figures["b"]
    assert fa["cpu_us"] == pytest.approx(150.0) and fa["sys_us"] == pytest.approx(50.0)
    assert fa["allocs"] == pytest.approx(5.0) and fa["kept_blocks"] == pytest.approx(0.001)
    assert fa["syscalls"] is None  # no perf on that side
    assert fb["cpu_us"] == pytest.approx(20.0) and fb["allocs"] is None


def test_per_io_with_syscalls() -> None:
    side = probe.Side("x", probe.Local(), start={"user": 0.0, "sys": 0.0},
                      end={"user": 0.0, "sys": 0.001})  # fmt: skip
    out = probe.per_io(side, 100, {"total": 250, "sendto": 50, "recvfrom": 100})
    assert out["sys_us"] == pytest.approx(10.0) and out["syscalls"] == 2.5
    assert out["syscalls_sendto"] == 0.5 and out["syscalls_recvfrom"] == 1.0
    assert out["syscalls_epoll_wait"] is None  # perf did not count it


def test_snapshot_has_the_counters() -> None:
    probe.COUNTERS["answer"] = lambda: 42
    try:
        snap = probe.snapshot()
    finally:
        del probe.COUNTERS["answer"]
    assert snap["answer"] == 42 and snap["user"] >= 0 and snap["blocks"] > 0


CHILD = """
import sys, time
from bench.probe import COUNTERS
state = {"n": 0}
COUNTERS["n"] = lambda: state["n"]
for line in sys.stdin:
    state["n"] += 1
    keep = [bytes(100 + i) for i in range(1000)]  # 1000 allocations, at least
    print("done", flush=True)
"""


@pytest.fixture
def child(tmp_path: Path) -> probe.Probed:
    import subprocess

    script = tmp_path / "child.py"
    script.write_text(CHILD)
    proc = probe.Probed([str(script)], probe.build_alloccount(), stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE, cwd=ROOT)  # fmt: skip
    yield proc
    assert proc.proc.stdin is not None and proc.proc.stdout is not None
    proc.proc.stdin.close()
    proc.proc.stdout.close()
    proc.close()


def step(child: probe.Probed) -> None:
    assert child.proc.stdin is not None and child.proc.stdout is not None
    child.proc.stdin.write(b"go\n")
    child.proc.stdin.flush()
    assert child.proc.stdout.readline() == b"done\n"


def test_a_probed_child_answers_snapshots(child: probe.Probed) -> None:
    step(child)  # running: its counters are registered
    first = child.snapshot()
    step(child)
    second = child.snapshot()
    assert (first["n"], second["n"]) == (1, 2)
    assert second["user"] + second["sys"] >= first["user"] + first["sys"]
    if first["allocs"] is None:
        pytest.skip("no C compiler: allocations are not counted")
    assert second["allocs"] - first["allocs"] >= 1000


@pytest.mark.skipif(not probe.perf_works(), reason="perf cannot count syscalls here")
def test_perf_counts_the_syscalls_of_the_window(tmp_path: Path) -> None:
    import subprocess

    script = tmp_path / "sends.py"
    script.write_text(
        "import socket, sys\n"
        "a, b = socket.socketpair()\n"
        "for line in sys.stdin:\n"
        "    for _ in range(500):\n"
        "        a.send(b'x')\n"
        "        b.recv(1)\n"
        "    print('done', flush=True)\n"
    )
    proc = subprocess.Popen([sys.executable, str(script)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE)  # fmt: skip
    assert proc.stdin is not None and proc.stdout is not None
    try:
        perf = probe.PerfSyscalls(proc.pid)
        for enabled in (False, True, False):  # only the middle round is counted
            if enabled:
                perf.enable()
            proc.stdin.write(b"go\n")
            proc.stdin.flush()
            assert proc.stdout.readline() == b"done\n"
            if enabled:
                perf.disable()
        counts = perf.result()
    finally:
        proc.kill()
        proc.wait()
        proc.stdin.close()
        proc.stdout.close()
    assert counts["sendto"] == 500 and counts["recvfrom"] == 500
    assert 1000 <= counts["total"] < 1100


# -- the profile summary ---------------------------------------------------------------------------

# py-spy names files relative to their sys.path entry, or in full
COLLAPSED = f"""\
run (trio/_core/_run.py:100);_flush (target/connection.py:470);send (trio/_socket.py:9) 6
run (trio/_core/_run.py:100);_flush ({ROOT}/target/connection.py:471) 2
run (trio/_core/_run.py:100);get_events (trio/_core/_io_epoll.py:5) 2
"""


def test_profile_summary() -> None:
    stacks = parse_collapsed(COLLAPSED)
    assert sum(stacks.values()) == 10
    assert function(f"_flush ({ROOT}/target/connection.py:470)") == "_flush (target/connection.py)"
    own, below = top(stacks)
    assert own[0] == ("send (trio/_socket.py)", 0.6)
    assert dict(own)["_flush (target/connection.py)"] == pytest.approx(0.2)  # lines merged
    # time below: the project's functions only
    assert below == [("_flush (target/connection.py)", 0.8)]
    svg = flame_svg(Counter(stacks), "t")
    assert "(10 samples)" in svg and "80.0%" in svg
    assert ElementTree.fromstring(svg).tag.endswith("svg")


def test_flame_graph_cuts_names_before_escaping_them() -> None:
    narrow = Counter({("_make_simple_sock_method_wrapper.<locals>.wrapper (trio/_socket.py:1)",): 1,
                      ("run (trio/_core/_run.py:1)",): 99})  # fmt: skip
    ElementTree.fromstring(flame_svg(narrow, "t", width=300))  # well-formed
