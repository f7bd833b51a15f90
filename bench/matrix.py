"""``make bench``: our initiator against our target, next to the raw ping-pong ceiling.

Fixed matrix: 4K random read at QD1 (latency), 4K random read and write at QD32 (IOPS), 128K
sequential read and write at QD8 (bandwidth), and 4K random read at QD32 over two paths with
the round-robin policy. The target runs in its own process (two optimized ports); each figure
is compared with bench/pingpong.py moving the same message sizes at the same depth. Writes
bench-results/bench.json and bench-results/bench.md. Figures, not assertions.
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

import trio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.pingpong import shape  # noqa: E402
from initiator import ControllerOptions, open_host  # noqa: E402
from initiator.bench import BenchOptions, run_bench  # noqa: E402

NQN = "nqn.2026-11.io.nvmeof-emu:bench"
RUNTIME = float(os.environ.get("BENCH_RUNTIME", "4"))


@dataclass
class Case:
    name: str
    rw: str
    bs: int
    iodepth: int
    paths: int = 1
    iopolicy: str = "numa"
    metric: str = "iops"  # or "gbps" or "lat"


CASES = [
    Case("4K randread QD1", "randread", 4096, 1, metric="lat"),
    Case("4K randread QD32", "randread", 4096, 32),
    Case("4K randwrite QD32", "randwrite", 4096, 32),
    Case("128K read QD8", "read", 131072, 8, metric="gbps"),
    Case("128K write QD8", "write", 131072, 8, metric="gbps"),
    Case("4K randread QD32, 2 paths round-robin", "randread", 4096, 32, paths=2,
         iopolicy="round-robin"),
]  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_target(ports: list[int]) -> tuple[subprocess.Popen[bytes], Path]:
    config = Path(tempfile.mkdtemp()) / "bench.toml"
    lines = [
        f'[[subsystem]]\nnqn = "{NQN}"\nmax_io_queues = 4\nqueue_size = 128\n',
        '  [[subsystem.namespace]]\n  nsid = 1\n  size = "1GiB"\n  block_size = 4096\n',
    ]
    for i, port in enumerate(ports, start=1):
        lines.append(f'[[port]]\nid = {i}\nport = {port}\nsubsystems = ["{NQN}"]\n'
                     'ana = { 1 = "optimized" }\n')  # fmt: skip
    config.write_text("\n".join(lines))
    proc = subprocess.Popen([sys.executable, "-m", "target", "serve", "--config", str(config),
                             "--log-level", "warning"], cwd=ROOT)  # fmt: skip
    deadline = time.monotonic() + 15
    for port in ports:
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    proc.kill()
                    raise RuntimeError("the target did not start") from None
                time.sleep(0.05)
    return proc, config


async def measure(case: Case, ports: list[int]) -> dict[str, float]:
    options = ControllerOptions(io_queues=1, queue_size=128)
    async with open_host(options, iopolicy=case.iopolicy) as host:
        for port in ports[: case.paths]:
            await host.connect("127.0.0.1", port, NQN)
        head = host.namespace(NQN, 1)
        opts = BenchOptions(rw=case.rw, bs=case.bs, iodepth=case.iodepth, runtime=RUNTIME,
                            size=256 << 20)  # fmt: skip
        result = await run_bench(head, opts)
    direction = result.read if case.rw.endswith("read") else result.write
    iops = direction.ios / result.elapsed
    return {"iops": iops, "gbps": iops * case.bs / 1e9,
            "p50_us": direction.lat.percentile(50) / 1000,
            "p99_us": direction.lat.percentile(99) / 1000, "errors": result.errors}  # fmt: skip


def ceiling(case: Case) -> float:
    """Ping-pong round trips per second with the case's message sizes and depth."""
    op = "read" if case.rw.endswith("read") else "write"
    request, response = shape(op, case.bs)
    port = free_port()
    script = str(ROOT / "bench" / "pingpong.py")
    server = subprocess.Popen([sys.executable, script, "server", str(port), str(request),
                               str(response)])  # fmt: skip
    try:
        time.sleep(0.5)
        out = subprocess.run([sys.executable, script, "client", str(port), str(request),
                              str(response), str(case.iodepth), str(RUNTIME)],
                             capture_output=True, text=True, timeout=RUNTIME + 30, check=True)  # fmt: skip
        return float(out.stdout.strip())
    finally:
        server.kill()
        server.wait()


def main() -> int:
    out_dir = ROOT / "bench-results"
    out_dir.mkdir(exist_ok=True)
    ports = [free_port(), free_port()]
    target, config = start_target(ports)
    rows = []
    try:
        for case in CASES:
            ours = trio.run(measure, case, ports)
            ceil_ops = ceiling(case)
            ratio = ours["iops"] / ceil_ops if ceil_ops else 0.0
            rows.append({"case": case.name, "metric": case.metric, **ours,
                         "ceiling_iops": ceil_ops, "ratio": ratio})  # fmt: skip
            print(f"{case.name:42} ours {ours['iops']:9.0f}/s  ceiling {ceil_ops:9.0f}/s  "
                  f"ratio {ratio:.2f}  p50 {ours['p50_us']:.0f} us", flush=True)  # fmt: skip
    finally:
        target.terminate()
        target.wait(timeout=10)
        config.unlink(missing_ok=True)
    cc = Path("/proc/sys/net/ipv4/tcp_congestion_control")
    meta = {"python": platform.python_version(), "machine": platform.machine(),
            "cpus": os.cpu_count(), "runtime_s": RUNTIME,
            "tcp_congestion_control": cc.read_text().strip() if cc.exists() else "?",
            "date": time.strftime("%Y-%m-%d %H:%M:%S")}  # fmt: skip
    (out_dir / "bench.json").write_text(json.dumps({"meta": meta, "results": rows}, indent=2))
    md = ["| case | ours | ceiling | ratio | p50 / p99 latency |", "|---|---|---|---|---|"]
    for r in rows:
        bytes_per_io = r["gbps"] * 1e9 / r["iops"] if r["iops"] else 0.0

        def unit(ops: float, gb: bool = r["metric"] == "gbps", size: float = bytes_per_io) -> str:
            return f"{ops * size / 1e9:.2f} GB/s" if gb else f"{ops:,.0f} IOPS"

        md.append(
            f"| {r['case']} | {unit(r['iops'])} | {unit(r['ceiling_iops'])} | "
            f"{r['ratio']:.2f}x | {r['p50_us']:.0f} / {r['p99_us']:.0f} us |"
        )
    md.append(f"\n{meta}")
    (out_dir / "bench.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
