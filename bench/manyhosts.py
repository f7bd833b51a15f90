"""Many hosts at once (``make bench`` runs it after the matrix and the recovery times).

One target process (bench/probed.py, like the matrix), and ``--hosts`` ``nvmeof bench`` processes
against it, each its own host (host NQN) with ``--queues`` I/O queues and ``--jobs`` jobs (one
ring each, ``--iodepth`` deep; by default one job per queue), verified random read/write
(``--verify``) on a region of the namespace no other host touches (``--offset`` and
``--offset-increment``). 16 hosts x 4 queues make 80 TCP connections, admin queues included.

What it reports (issue 10, item 4; goals in brackets, figures, not assertions):

- per host: IOPS and read and write p99 latency over its run (its ``--json`` report), I/O and
  verify errors [none], reconnects;
- the window when every host was in its measured run at once (bench/hostproc.py: each host's
  I/O count read every second or two from its ``--metrics`` listener), from ``--warmup`` seconds (a
  quarter of the run, at least 2 s) after the last host began its run to the first one's end:
  each host's IOPS in it, their sum and the fair share, the slowest host's over the fastest's
  [>= 0.5]; the same over each host's whole run beside it;
- the target's TCP connections on its port (/proc) [hosts x (queues + 1)], its keep-alive
  timeouts (its log), its RSS at the start and end of the window [growth < 10%] and its CPU time
  over the window in % of one core;
- then the idle run (bench/idle.py): ``--idle`` controllers with keep-alive only [< 1% of a core].

Writes bench-results/manyhosts.json and manyhosts.md. Options default from the environment:
``MANYHOSTS_HOSTS`` (16), ``MANYHOSTS_QUEUES`` (4), ``MANYHOSTS_IODEPTH`` (8),
``MANYHOSTS_SECONDS`` (60), ``MANYHOSTS_IDLE`` (256, 0 skips the idle run),
``MANYHOSTS_IDLE_SECONDS`` (20).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.hostproc import HostProcess, common_window, window_rate  # noqa: E402
from bench.idle import IdleRun, idle_markdown, run_idle  # noqa: E402
from bench.matrix import free_port  # noqa: E402
from bench.targetproc import (  # noqa: E402
    NQN,
    Sample,
    core_percent,
    sample,
    start_target,
    stop_target,
)

#: time for the hosts to start, connect and precondition, and to report after their run
SLACK_S = 120.0


@dataclass
class Load:
    hosts: int = 16
    queues: int = 4  # I/O queues per host
    jobs: int = 4  # jobs per host (one ring each)
    iodepth: int = 8  # per job
    seconds: float = 60.0
    bs: int = 4096
    rw: str = "randrw"
    size: int = 1 << 20  # bytes per job: the verify precondition writes each block once
    warmup: float = 15.0

    @property
    def expected_connections(self) -> int:
        return self.hosts * (self.queues + 1)


def host_argv(load: Load, index: int, port: int, metrics_port: int) -> list[str]:
    """``nvmeof bench`` for host ``index``: its own host NQN and its own namespace region."""
    region = load.jobs * load.size
    return [sys.executable, "-m", "initiator.cli", "bench", "--path", f"127.0.0.1:{port}",
            "-n", NQN, "-q", f"nqn.2026-11.io.nvmeof-emu:manyhosts-host{index}",
            "-i", str(load.queues), "--rw", load.rw, "--bs", str(load.bs),
            "--iodepth", str(load.iodepth), "--numjobs", str(load.jobs),
            "--runtime", str(load.seconds), "--size", str(load.size),
            "--offset", str(index * region), "--offset-increment", str(load.size),
            "--verify", "--json", "--quiet", "--metrics", f"127.0.0.1:{metrics_port}"]  # fmt: skip


def run_load(load: Load) -> dict[str, Any]:
    """Start the target and the hosts; sample the target once a second and read every host's
    I/O count every second or two, until every host has exited (bounded by the run time plus
    :data:`SLACK_S`); gather the figures."""
    port = free_port()
    namespace = load.hosts * load.jobs * load.size
    workdir = Path(tempfile.mkdtemp(prefix="bench-manyhosts-"))
    target_log = workdir / "target.err"
    with target_log.open("wb") as log:
        target, config = start_target(port, namespace_bytes=namespace, max_io_queues=load.queues,
                                      stderr=log)  # fmt: skip
    samples: list[Sample] = []
    hosts: list[HostProcess] = []
    timeouts_while_running: int | None = None  # keep-alive timeouts before any host ended
    try:
        for index in range(load.hosts):
            metrics = free_port()
            hosts.append(
                HostProcess(host_argv(load, index, port, metrics), workdir, index, metrics)
            )
        deadline = time.monotonic() + load.seconds + SLACK_S
        # the hosts' counts every second in a short run, every 2 s in a minute (fewer scrapes)
        stride = max(1, round(load.seconds / 30))
        for tick in itertools.count():
            if time.monotonic() >= deadline:
                break
            now = sample(target, port)
            samples.append(now)
            if tick % stride == 0:
                for host in hosts:
                    host.scrape()
            exited = [h.poll() for h in hosts]  # each one, to note when it exited
            if any(exited) and timeouts_while_running is None:
                timeouts_while_running = target_log.read_text(errors="replace").count(
                    "keep-alive timeout"
                )
            if all(exited):
                break
            time.sleep(max(0.0, 1.0 - (time.monotonic() - now.at)))
        timed_out = not all(h.poll() for h in hosts)
    finally:
        for host in hosts:
            host.stop()
        stop_target(target, config)
    results = [{**h.result(), "series": h.series} for h in hosts]
    warnings = target_log.read_text(errors="replace").splitlines()
    for file in workdir.iterdir():
        file.unlink()
    workdir.rmdir()
    precondition = load.jobs * (load.size // load.bs)
    window = common_window([h.series for h in hosts], precondition, load.warmup)
    run = summarize(load, results, samples, window, timed_out)
    run["target_warnings"] = warnings[-20:]
    run["keepalive_timeouts"] = sum("keep-alive timeout" in line for line in warnings)
    run["keepalive_timeouts_while_running"] = timeouts_while_running
    if window is not None:
        rates = [window_rate(h.series, *window) for h in hosts]
        for result, rate in zip(results, rates, strict=True):
            result["window_iops"] = rate
        if all(rate is not None for rate in rates):
            known = [rate or 0.0 for rate in rates]
            run["window"]["aggregate_iops"] = sum(known)
            run["window"]["fair_share"] = min(known) / max(known) if max(known) else 0.0
    return run


def summarize(load: Load, results: list[dict[str, Any]], samples: list[Sample],
              window: tuple[float, float] | None, timed_out: bool) -> dict[str, Any]:  # fmt: skip
    """The figures of a run: per host, the fair share over the whole runs, the target over the
    common window (when every host was in its run)."""
    iops = [r.get("iops", 0.0) for r in results]
    p99s = [max(r["read_p99_us"], r["write_p99_us"]) for r in results if "ios" in r]
    out: dict[str, Any] = {
        "load": asdict(load), "expected_connections": load.expected_connections,
        "max_connections": max((s.connections for s in samples), default=0),
        "hosts": results, "aggregate_iops": sum(iops),
        "fair_share": min(iops) / max(iops) if iops and max(iops) else 0.0,
        "errors": sum(r.get("io_errors", 0) + r.get("verify_errors", 0) for r in results),
        "failed_hosts": [r["host"] for r in results if r["exit"] != 0 or "problem" in r],
        "reconnects": sum(r.get("reconnects", 0) for r in results),
        "p99_us_worst": max(p99s, default=None),
        "p99_us_median": statistics.median(p99s) if p99s else None,
        "timed_out": timed_out, "samples": [s.as_dict() for s in samples], "window": None,
    }  # fmt: skip
    inside = [s for s in samples if window is not None and window[0] <= s.at <= window[1]]
    if len(inside) < 2:
        return out
    warm, end = inside[0], inside[-1]
    out["window"] = {
        "seconds": round(end.at - warm.at, 1), "connections": warm.connections,
        "rss_warm_mib": warm.rss_kib / 1024, "rss_end_mib": end.rss_kib / 1024,
        "rss_peak_mib": max(s.rss_kib for s in inside) / 1024,
        "rss_growth_pct": 100.0 * (end.rss_kib - warm.rss_kib) / warm.rss_kib,
        "target_cpu_pct": core_percent(warm, end),
        "aggregate_iops": None, "fair_share": None,
    }  # fmt: skip
    return out


def fmt(value: float | None, spec: str = ",.0f") -> str:
    return "n/a" if value is None else format(value, spec)


def load_markdown(run: dict[str, Any]) -> str:
    load = run["load"]
    md = [f"Many hosts: {load['hosts']} host processes x {load['queues']} I/O queues, "
          f"{load['jobs']} jobs x QD{load['iodepth']} each, {load['rw']} {load['bs']} B "
          f"verified, {load['seconds']:g} s", "",
          "| host | IOPS in the window | IOPS, whole run | read p99 | write p99 | I/O errors "
          "| verify errors | reconnects | exit |",
          "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in run["hosts"]:
        if "problem" in r:
            md.append(f"| {r['host']} | - | - | - | - | - | - | - "
                      f"| {r['exit']}: {r['problem'][:80]} |")  # fmt: skip
            continue
        md.append(f"| {r['host']} | {fmt(r.get('window_iops'))} | {r['iops']:,.0f} "
                  f"| {r['read_p99_us']:,.0f} us "
                  f"| {r['write_p99_us']:,.0f} us | {r['io_errors']} | {r['verify_errors']} "
                  f"| {r['reconnects']} | {r['exit']} |")  # fmt: skip
    window = run["window"] or {}
    if not window:
        shared = "n/a (no time when every host was in its run)"
    elif window["fair_share"] is None:
        shared = f"n/a ({window['seconds']:g} s, too short for two counts of every host)"
    else:
        shared = (f"{window['aggregate_iops']:,.0f} IOPS, fair share {window['fair_share']:.2f} "
                  f"over {window['seconds']:g} s")  # fmt: skip
    md += ["", "| figure | value | goal |", "|---|---|---|",
           f"| every host in its run at once | {shared} | fair share >= 0.5 |",
           f"| whole runs (each host's own) | {run['aggregate_iops']:,.0f} IOPS, fair share "
           f"{run['fair_share']:.2f} | |",
           f"| errors (I/O + verify), failed hosts | {run['errors']}, "
           f"{len(run['failed_hosts'])} | 0, 0 |",
           f"| reconnects (hosts); keep-alive timeouts (target) before the first host ended / "
           f"in all | {run['reconnects']}; {run['keepalive_timeouts_while_running']} / "
           f"{run['keepalive_timeouts']} | 0; 0 |",
           f"| p99 latency, worst / median host | {fmt(run['p99_us_worst'])} / "
           f"{fmt(run['p99_us_median'])} us | reported |",
           f"| TCP connections (window start / most seen) | {window.get('connections', '-')} / "
           f"{run['max_connections']} | {run['expected_connections']} |"]  # fmt: skip
    if window:
        md += [f"| target RSS over the window | "
               f"{window['rss_warm_mib']:.1f} -> {window['rss_end_mib']:.1f} MiB "
               f"({window['rss_growth_pct']:+.1f}%; peak {window['rss_peak_mib']:.1f}) "
               "| growth < 10% |",
               f"| target CPU over the window | {window['target_cpu_pct']:.0f}% of a core | |"]  # fmt: skip
    if run["timed_out"]:
        md.append("\nThe hosts did not all finish in time; the rest were stopped.")
    return "\n".join(md) + "\n"


def env_default(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    add = parser.add_argument
    add("--hosts", type=int, default=int(env_default("MANYHOSTS_HOSTS", 16)))
    add("--queues", type=int, default=int(env_default("MANYHOSTS_QUEUES", 4)),
        help="I/O queues per host")  # fmt: skip
    add("--jobs", type=int, default=0, help="jobs (rings) per host; default: --queues")
    add("--iodepth", type=int, default=int(env_default("MANYHOSTS_IODEPTH", 8)), help="per job")
    add("--seconds", type=float, default=env_default("MANYHOSTS_SECONDS", 60))
    add("--warmup", type=float, default=None,
        help="seconds after the last host began its run before the window opens "
        "(default: a quarter of --seconds, at least 2)")  # fmt: skip
    add("--bs", type=int, default=4096)
    add("--rw", default="randrw", choices=("randrw", "randread", "randwrite", "read", "write"))
    add("--size", type=int, default=1 << 20, help="bytes per job")
    add("--idle", type=int, default=int(env_default("MANYHOSTS_IDLE", 256)),
        help="idle controllers for the idle run (0: none)")  # fmt: skip
    add("--idle-seconds", type=float, default=env_default("MANYHOSTS_IDLE_SECONDS", 20))
    add("--out", type=Path, default=ROOT / "bench-results", help="where the results go")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    load = Load(hosts=args.hosts, queues=args.queues, jobs=args.jobs or args.queues,
                iodepth=args.iodepth, seconds=args.seconds, bs=args.bs, rw=args.rw,
                size=args.size,
                warmup=args.warmup if args.warmup is not None else max(2.0, args.seconds / 4))  # fmt: skip
    load_before = os.getloadavg()
    started = time.monotonic()
    run = run_load(load)
    md = load_markdown(run)
    print(md, flush=True)
    idle: IdleRun | None = None
    if args.idle > 0:
        idle = run_idle(args.idle, seconds=args.idle_seconds)
        idle_md = idle_markdown(idle)
        print(idle_md, flush=True)
        md += "\n" + idle_md
    meta = {"cpus": os.cpu_count(), "loadavg_before": [round(x, 2) for x in load_before],
            "loadavg_after": [round(x, 2) for x in os.getloadavg()],
            "elapsed_s": round(time.monotonic() - started, 1),
            "date": time.strftime("%Y-%m-%d %H:%M:%S")}  # fmt: skip
    md += f"\n{meta}\n"
    args.out.mkdir(parents=True, exist_ok=True)
    results = {"meta": meta, "load": run, "idle": asdict(idle) if idle else None}
    (args.out / "manyhosts.json").write_text(json.dumps(results, indent=2))
    (args.out / "manyhosts.md").write_text(md)
    print(f"load average {meta['loadavg_before']} -> {meta['loadavg_after']}; written: "
          f"{args.out / 'manyhosts.md'}, manyhosts.json")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
