"""Many hosts at once, at a size CI can afford (issue 10, item 4; the full run is
``python bench/manyhosts.py``, in ``make bench``).

16 ``nvmeof bench`` processes x 4 I/O queues (80 TCP connections with the admin queues) run
verified random read/write against one target process for a few seconds, each host on its own
namespace region; then 64 keep-alive-only controllers sit idle on another target. What is
asserted is correctness: no I/O or verify error, every host read and wrote with verification,
every connection reached the target, a fair share per host, the idle run's figures exist.
Throughput, latency, RSS and CPU are the benchmark's figures, not asserted here.
"""

from __future__ import annotations

import pytest

from bench.idle import run_idle
from bench.manyhosts import Load, run_load

pytestmark = pytest.mark.slow

HOSTS = 16
QUEUES = 4
#: The benchmark's goal is 0.5 over 60 s. In a run of a few seconds on a loaded 2-core machine
#: the hosts' start-up (16 interpreters at once) takes longer than the run: often there is no
#: time when every host is in its run, and the share over each host's own run then says more
#: about when it started than about the target, so only a gross starvation fails here.
FAIR_SHARE_FLOOR = 0.25


def test_sixteen_hosts_verified_randrw_against_one_target() -> None:
    # 128 KiB per job: 32 blocks of 4 KiB, written once by the verify precondition
    load = Load(hosts=HOSTS, queues=QUEUES, jobs=QUEUES, iodepth=8, seconds=10.0,
                size=128 << 10, warmup=1.0)  # fmt: skip
    run = run_load(load)
    assert not run["timed_out"]
    problems = [h for h in run["hosts"] if "problem" in h or h["exit"] != 0]
    assert not problems, problems
    assert run["errors"] == 0 and run["failed_hosts"] == []
    for host in run["hosts"]:
        assert host["verified"], host
        assert host["reads"] > 0 and host["writes"] > 0, host
        assert host["io_errors"] == 0 and host["verify_errors"] == 0, host
    # each host's admin queue and its 4 I/O queues, all at once
    assert run["max_connections"] == HOSTS * (QUEUES + 1) == 80
    window = run["window"]
    share = window["fair_share"] if window and window["fair_share"] is not None else None
    if share is None:
        share = run["fair_share"]
    assert share >= FAIR_SHARE_FLOOR, [round(h["iops"]) for h in run["hosts"]]
    assert run["p99_us_worst"] is not None and run["p99_us_worst"] > 0


def test_idle_controllers_stay_connected_and_are_measured() -> None:
    run = run_idle(64, seconds=4.0, warmup=1.0, baseline=1.0, ceiling=False)
    assert run.problem == ""
    assert run.connected == 64 and run.connections == 64
    # Keep Alives flowed through the window: the target's event loop woke for them
    assert run.cpu_pct > 0 and run.wakeups_per_s > 0 and run.cpu_us_per_keepalive > 0
    assert run.rss_mib > 0
    assert run.keepalive_timeouts_in_window == 0  # every controller kept alive
