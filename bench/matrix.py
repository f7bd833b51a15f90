"""``make bench``: our initiator against our target, next to the raw ping-pong ceiling.

Fixed matrix: 4K random read at QD1 (latency), 4K random read and write at QD32 (IOPS), 128K
sequential read and write at QD8 (bandwidth), 4K random read at QD32 through the ring's
passthrough API (raw 64-byte commands, ``--engine passthrough``), and 4K random read at QD32
over two paths with the round-robin policy. The target runs in its own process (two optimized
ports); each case is followed by bench/pingpong.py moving the same message sizes at the same
depth, also in two processes.

Every figure is taken over a steady-state window of each run (after ``WARMUP`` seconds,
``WINDOW`` seconds long; bench/probe.py): IOPS, and per I/O for each process its CPU time
(getrusage), CPython allocator calls and memory kept. ``BENCH_REPEAT`` pairs (ours, then the
ceiling) per case, the median pair by ratio reported. Syscalls per I/O come from one more pair
with perf counting the syscall tracepoints: tracing puts every syscall on the kernel's slow
path, so that pair's throughput and CPU figures are not used. Writes bench-results/bench.json
and bench-results/bench.md. Figures, not assertions.

Environment: ``BENCH_RUNTIME`` (seconds per run, 3), ``BENCH_REPEAT`` (3), ``BENCH_SYSCALLS=0``
(no perf pair), ``BENCH_ALLOCS=0`` (no allocation counter), ``BENCH_CASES`` (comma-separated
parts of case names to run).
"""

from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.pingpong import shape  # noqa: E402
from bench.probe import (  # noqa: E402
    Local,
    PerfSyscalls,
    Probed,
    Side,
    Window,
    build_alloccount,
    install_alloccount,
    perf_works,
    stop_perf,
)
from initiator import ControllerOptions, open_host  # noqa: E402
from initiator.bench import BenchOptions, run_bench  # noqa: E402

NQN = "nqn.2026-11.io.nvmeof-emu:bench"
RUNTIME = float(os.environ.get("BENCH_RUNTIME", "3"))
WARMUP = RUNTIME * 0.25
WINDOW = RUNTIME * 0.6
REPEAT = int(os.environ.get("BENCH_REPEAT", "3"))
#: "0": no syscall counts (no perf pair)
SYSCALLS = os.environ.get("BENCH_SYSCALLS", "1") != "0"
#: comma-separated parts of case names to run (default: all)
ONLY = [x.strip() for x in os.environ.get("BENCH_CASES", "").split(",") if x.strip()]


@dataclass
class Case:
    name: str
    rw: str
    bs: int
    iodepth: int
    paths: int = 1
    iopolicy: str = "numa"
    metric: str = "iops"  # or "gbps" or "lat"
    engine: str = "block"


CASES = [
    Case("4K randread QD1", "randread", 4096, 1, metric="lat"),
    Case("4K randread QD32", "randread", 4096, 32),
    Case("4K randwrite QD32", "randwrite", 4096, 32),
    Case("128K read QD8", "read", 131072, 8, metric="gbps"),
    Case("128K write QD8", "write", 131072, 8, metric="gbps"),
    Case("4K randread QD32 passthrough", "randread", 4096, 32, engine="passthrough"),
    Case("4K randread QD32, 2 paths round-robin", "randread", 4096, 32, paths=2,
         iopolicy="round-robin"),
]  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_listening(port: int, proc: Probed) -> None:
    deadline = time.monotonic() + 15
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline or proc.proc.poll() is not None:
                proc.close()
                raise RuntimeError(f"nothing listens on port {port}") from None
            time.sleep(0.05)


def start_target(ports: list[int], alloccount: str, snapshots: bool = True) -> tuple[Probed, Path]:
    config = Path(tempfile.mkdtemp()) / "bench.toml"
    lines = [
        f'[[subsystem]]\nnqn = "{NQN}"\nmax_io_queues = 4\nqueue_size = 128\n',
        '  [[subsystem.namespace]]\n  nsid = 1\n  size = "1GiB"\n  block_size = 4096\n',
    ]
    for i, port in enumerate(ports, start=1):
        lines.append(f'[[port]]\nid = {i}\nport = {port}\nsubsystems = ["{NQN}"]\n'
                     'ana = { 1 = "optimized" }\n')  # fmt: skip
    config.write_text("\n".join(lines))
    proc = Probed(["-m", "target", "serve", "--config", str(config), "--log-level", "warning",
                   "--control", "off", "--metrics", "off"], alloccount, snapshots,
                  cwd=ROOT)  # fmt: skip
    for port in ports:
        wait_listening(port, proc)
    return proc, config


def perf_for(pid: int, syscalls: bool) -> PerfSyscalls | None:
    return PerfSyscalls(pid) if syscalls else None


async def measure(case: Case, ports: list[int], target: Probed,
                  syscalls: bool = False) -> dict[str, Any]:  # fmt: skip
    """Our host (this process) against the target process."""
    options = ControllerOptions(io_queues=1, queue_size=128)
    sides = [Side("target", target, perf_for(target.pid, syscalls)),
             Side("host", Local(), perf_for(os.getpid(), syscalls))]  # fmt: skip
    try:
        async with open_host(options, iopolicy=case.iopolicy) as host:
            for port in ports[: case.paths]:
                await host.connect("127.0.0.1", port, NQN)
            head = host.namespace(NQN, 1)
            window = Window(sides, lambda _: sum(p.stats.ios for p in head.paths))
            opts = BenchOptions(rw=case.rw, bs=case.bs, iodepth=case.iodepth, runtime=RUNTIME,
                                size=256 << 20, engine=case.engine)  # fmt: skip

            async def sample() -> None:
                await trio.sleep(WARMUP)
                window.open()
                await trio.sleep(WINDOW)
                window.close()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(sample)
                result = await run_bench(head, opts)
        figures = window.figures()
    finally:
        stop_perf(sides)
    direction = result.read if case.rw.endswith("read") else result.write
    return {**figures, "p50_us": direction.lat.percentile(50) / 1000,
            "p99_us": direction.lat.percentile(99) / 1000, "errors": result.errors}  # fmt: skip


def ceiling(case: Case, alloccount: str, syscalls: bool = False) -> dict[str, Any]:
    """Ping-pong round trips with the case's message sizes and depth, measured like ours."""
    op = "read" if case.rw.endswith("read") else "write"
    request, response = shape(op, case.bs)
    port = free_port()
    script = str(ROOT / "bench" / "pingpong.py")
    server = Probed([script, "server", str(port), str(request), str(response)], alloccount)
    sides = [Side("server", server, perf_for(server.pid, syscalls))]
    try:
        wait_listening(port, server)
        # runs until stopped after the window
        client = Probed([script, "client", str(port), str(request), str(response),
                         str(case.iodepth), str(RUNTIME + 60)], alloccount,
                        stdout=subprocess.DEVNULL)  # fmt: skip
        sides.append(Side("client", client, perf_for(client.pid, syscalls)))
        deadline = time.monotonic() + 15
        while not client.snapshot().get("ops"):  # running
            if time.monotonic() > deadline:
                raise RuntimeError("the ping-pong client did not start")
            time.sleep(0.02)
        window = Window(sides, lambda snaps: int(snaps["client"]["ops"]))
        time.sleep(WARMUP)
        window.open()
        time.sleep(WINDOW)
        window.close()
        return window.figures()
    finally:
        stop_perf(sides)
        for side in reversed(sides):
            assert isinstance(side.process, Probed)
            side.process.close()


def fmt(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def pair(a: float | None, b: float | None, digits: int = 1) -> str:
    return f"{fmt(a, digits)} / {fmt(b, digits)}"


def main() -> int:
    out_dir = ROOT / "bench-results"
    out_dir.mkdir(exist_ok=True)
    alloccount = build_alloccount() if os.environ.get("BENCH_ALLOCS", "1") != "0" else ""
    install_alloccount(alloccount)
    global SYSCALLS
    if SYSCALLS and not perf_works():
        print("bench: perf cannot count syscalls here: syscalls/IO are n/a", file=sys.stderr)
        SYSCALLS = False
    load_before = os.getloadavg()
    started = time.monotonic()
    ports = [free_port(), free_port()]
    target, config = start_target(ports, alloccount)
    rows = []
    try:
        for case in CASES:
            if ONLY and not any(part in case.name for part in ONLY):
                continue
            pairs: list[dict[str, Any]] = []
            for _ in range(REPEAT):
                ours = trio.run(measure, case, ports, target)
                ceil = ceiling(case, alloccount)
                ratio = ours["iops"] / ceil["iops"] if ceil["iops"] else 0.0
                pairs.append({"ours": ours, "ceiling": ceil, "ratio": ratio})
            pairs.sort(key=lambda p: p["ratio"])
            mid = pairs[len(pairs) // 2]
            ours, ceil = mid["ours"], mid["ceiling"]
            if SYSCALLS:  # counts only, from a pair of their own
                traced = {"ours": trio.run(measure, case, ports, target, True),
                          "ceiling": ceiling(case, alloccount, True)}  # fmt: skip
                for kind, sides in (
                    ("ours", ("target", "host")),
                    ("ceiling", ("server", "client")),
                ):
                    for side in sides:
                        for key, value in traced[kind][side].items():
                            if key.startswith("syscalls"):
                                mid[kind][side][key] = value
            row = {"case": case.name, "metric": case.metric, "bs": case.bs,
                   "iodepth": case.iodepth, "engine": case.engine, "ratio": mid["ratio"],
                   "ratios": [round(p["ratio"], 3) for p in pairs], "ours": ours,
                   "ceiling": ceil}  # fmt: skip
            rows.append(row)
            t, h = ours["target"], ours["host"]
            print(f"{case.name:40} ours {ours['iops']:8.0f}/s  ceiling {ceil['iops']:8.0f}/s  "
                  f"ratio {mid['ratio']:.2f} (of {', '.join(f'{r:.2f}' for r in row['ratios'])})"
                  f"  CPU us/IO target {fmt(t['cpu_us'])} host {fmt(h['cpu_us'])}  "
                  f"allocs/IO {fmt(t['allocs'])} / {fmt(h['allocs'])}  "
                  f"syscalls/IO {fmt(t['syscalls'], 2)} / {fmt(h['syscalls'], 2)}", flush=True)  # fmt: skip
    finally:
        target.close()
        config.unlink(missing_ok=True)
    cc = Path("/proc/sys/net/ipv4/tcp_congestion_control")
    meta = {"python": platform.python_version(), "machine": platform.machine(),
            "cpus": os.cpu_count(), "runtime_s": RUNTIME, "warmup_s": WARMUP, "window_s": WINDOW,
            "repeat": REPEAT, "tcp_congestion_control": cc.read_text().strip() if cc.exists() else "?",
            "loadavg_before": [round(x, 2) for x in load_before],
            "loadavg_after": [round(x, 2) for x in os.getloadavg()],
            "elapsed_s": round(time.monotonic() - started, 1),
            "allocation_counter": bool(alloccount), "syscall_counter": "perf" if SYSCALLS else None,
            "date": time.strftime("%Y-%m-%d %H:%M:%S")}  # fmt: skip
    (out_dir / "bench.json").write_text(json.dumps({"meta": meta, "results": rows}, indent=2))
    md = report(rows, meta)
    (out_dir / "bench.md").write_text(md)
    print(md)
    return 0


def report(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    """The markdown tables: throughput and ratio, then the per-I/O costs of each process."""
    md = ["| case | ours | ceiling | ratio | p50 / p99 latency |", "|---|---|---|---|---|"]
    for r in rows:
        ours, ceil = r["ours"], r["ceiling"]

        def unit(ops: float, gb: bool = r["metric"] == "gbps", size: int = r["bs"]) -> str:
            return f"{ops * size / 1e9:.2f} GB/s" if gb else f"{ops:,.0f} IOPS"

        spread = ", ".join(f"{x:.2f}" for x in r["ratios"])
        md.append(f"| {r['case']} | {unit(ours['iops'])} | {unit(ceil['iops'])} | "
                  f"{r['ratio']:.2f}x ({spread}) | {ours['p50_us']:.0f} / {ours['p99_us']:.0f} us |")  # fmt: skip
    md += ["", "Per I/O, target / host (ceiling: server / client), over the same window:", "",
           "| case | CPU us (of it sys) | ceiling CPU us (sys) | allocator calls | ceiling allocs "
           "| blocks kept | syscalls (send, recv, epoll_wait) | ceiling syscalls |",
           "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        t, h = r["ours"]["target"], r["ours"]["host"]
        s, c = r["ceiling"]["server"], r["ceiling"]["client"]

        def cpu(x: dict[str, Any]) -> str:
            return f"{fmt(x['cpu_us'])} ({fmt(x['sys_us'])})"

        def calls(x: dict[str, Any]) -> str:
            if x["syscalls"] is None:
                return "n/a"
            sends = (x["syscalls_sendto"] or 0) + (x.get("syscalls_write") or 0)
            receives = (x["syscalls_recvfrom"] or 0) + (x.get("syscalls_readv") or 0)
            return (f"{x['syscalls']:.2f} ({fmt(sends, 2)}, {fmt(receives, 2)}, "
                    f"{fmt(x['syscalls_epoll_wait'], 2)})")  # fmt: skip

        md.append(
            f"| {r['case']} | {cpu(t)} / {cpu(h)} | {cpu(s)} / {cpu(c)} "
            f"| {pair(t['allocs'], h['allocs'])} | {pair(s['allocs'], c['allocs'])} "
            f"| {pair(t['kept_blocks'], h['kept_blocks'], 2)} "
            f"| {calls(t)} / {calls(h)} | {calls(s)} / {calls(c)} |"
        )
    md.append(f"\n{meta}")
    return "\n".join(md) + "\n"


if __name__ == "__main__":
    sys.exit(main())
