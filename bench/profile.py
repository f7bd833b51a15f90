"""``make profile``: where the target and the host spend their CPU at 4K random read, QD32.

The target runs in its own process and ``nvmeof bench`` in another; once the bench is in its
steady state, py-spy (a sampling profiler: it reads the interpreter's stacks from outside,
the processes run unmodified) records each for ``--seconds``, idle samples left out. Written to
bench-results/: ``profile-target.txt`` and ``profile-host.txt`` (collapsed stacks, one line per
stack with its sample count, for any flame graph tool), ``profile-*.svg`` (flame graphs drawn
from them) and ``profile.md`` (the top functions by own time and by time below them, in % of
the samples). Without py-spy: ``pip install py-spy``.

    python bench/profile.py [--rw randread] [--bs 4096] [--iodepth 32] [--seconds 8] [--gil]
                            [--engine block|passthrough] [--rate 100]
"""

from __future__ import annotations

import argparse
import html
import shutil
import subprocess
import sys
import time
import zlib
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.matrix import NQN, free_port  # noqa: E402

OUT = ROOT / "bench-results"


def parse_collapsed(text: str) -> Counter[tuple[str, ...]]:
    """py-spy's raw format (``frame;frame;... count``, root first) -> {stack: samples}."""
    stacks: Counter[tuple[str, ...]] = Counter()
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks[tuple(stack.split(";"))] += int(count)
    return stacks


def function(frame: str) -> str:
    """``name (path/to/file.py:123)`` -> ``name (file.py)``: one entry per function."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rpartition(":")[0] or where.rstrip(")")
    parts = Path(path).parts
    short = "/".join(parts[-2:]) if len(parts) > 1 else path
    return f"{name} ({short})" if short else name


#: the project's packages (py-spy names files relative to their sys.path entry)
PACKAGES = ("target", "initiator", "nvmeof", "tlsstream", "logfmt")


def ours(frame: str) -> bool:
    """A frame of the project's code (the wings and the protocol core, not the bench)."""
    path = frame.partition(" (")[2].removeprefix(str(ROOT) + "/")
    return path.split("/", 1)[0] in PACKAGES


def entry(frame: str) -> bool:
    """The programs' entry points (in every sample: nothing to learn from their share)."""
    return "/cli.py:" in frame or "/__main__.py:" in frame


def top(stacks: Counter[tuple[str, ...]], n: int = 15) -> tuple[list[tuple[str, float]],
                                                               list[tuple[str, float]]]:  # fmt: skip
    """(by own time: any function; by time below it: the project's functions): the ``n``
    largest, as shares of all samples."""
    total = sum(stacks.values()) or 1
    own: Counter[str] = Counter()
    below: Counter[str] = Counter()
    for stack, count in stacks.items():
        if stack:
            own[function(stack[-1])] += count
        for name in {function(f) for f in stack if ours(f) and not entry(f)}:
            below[name] += count
    return ([(k, v / total) for k, v in own.most_common(n)],
            [(k, v / total) for k, v in below.most_common(n)])  # fmt: skip


def flame_svg(stacks: Counter[tuple[str, ...]], title: str, width: int = 1200) -> str:
    """A plain flame graph (root at the bottom, width = samples, one box per function and
    caller, lines merged), hover for names and shares."""
    tree: dict[str, object] = {}
    counts: dict[int, int] = {}
    for stack, count in stacks.items():
        node = tree
        for frame in stack:
            child = node.setdefault(function(frame), {})
            assert isinstance(child, dict)
            counts[id(child)] = counts.get(id(child), 0) + count
            node = child
    total = sum(stacks.values()) or 1
    row = 16
    height = (max(map(len, stacks), default=0) + 2) * row + 24
    rects: list[str] = []

    def draw(node: dict[str, object], x: float, depth: int) -> None:
        for frame, child in sorted(node.items()):
            assert isinstance(child, dict)
            w = counts[id(child)] / total * width
            if w >= 0.5:
                y = height - (depth + 1) * row
                hue = zlib.crc32(frame.encode()) % 60
                label = html.escape(frame)
                share = 100 * counts[id(child)] / total
                text = html.escape(frame if w > 7 * len(frame) else frame[: max(0, int(w / 7) - 2)])
                rects.append(
                    f"<g><title>{label} ({share:.1f}%)</title>"
                    f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{row - 1}" '
                    f'fill="hsl({hue + 10},85%,60%)"/>'
                    f'<text x="{x + 2:.1f}" y="{y + 11}">{text}</text></g>'
                )
                draw(child, x, depth + 1)
            x += w

    draw(tree, 0.0, 0)
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'font-family="monospace" font-size="11"><text x="4" y="14">{html.escape(title)}'
            f" ({total} samples)</text>{''.join(rects)}</svg>\n")  # fmt: skip


def summary(name: str, stacks: Counter[tuple[str, ...]]) -> list[str]:
    own, below = top(stacks)
    lines = [f"### {name} ({sum(stacks.values())} samples)", "",
             "| own time | function (any) | | time below | project function |", "|---|---|---|---|---|"]  # fmt: skip
    for (a, sa), (b, sb) in zip(own, below, strict=False):
        lines.append(f"| {100 * sa:.1f}% | `{a}` | | {100 * sb:.1f}% | `{b}` |")
    return [*lines, ""]


def record(spy: str, pid: int, seconds: float, rate: int, out: Path,
           gil: bool = False) -> subprocess.Popen[bytes]:  # fmt: skip
    """py-spy on a running process: collapsed stacks (each sample pauses it for a moment, so
    the stacks are whole)."""
    return subprocess.Popen([spy, "record", "--pid", str(pid), "--duration", str(int(seconds)),
                             "--rate", str(rate), "--format", "raw", "-o",
                             str(out), *(["--gil"] if gil else [])],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rw", default="randread")
    parser.add_argument("--bs", default="4096")
    parser.add_argument("--iodepth", default="32")
    parser.add_argument("--engine", default="block")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--rate", type=int, default=100, help="samples per second")
    parser.add_argument("--gil", action="store_true",
                        help="only samples holding the GIL: Python code, without the time in "
                             "syscalls and epoll_wait")  # fmt: skip
    args = parser.parse_args()
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        print("profile: py-spy not found (pip install py-spy)", file=sys.stderr)
        return 2
    from bench.matrix import start_target  # the same target as make bench

    OUT.mkdir(exist_ok=True)
    port = free_port()
    target, config = start_target([port], "", snapshots=False)
    host = subprocess.Popen([sys.executable, "-m", "initiator.cli", "bench", "--path",
                             f"127.0.0.1:{port}", "-n", NQN, "--rw", args.rw, "--bs", args.bs,
                             "--iodepth", args.iodepth, "--engine", args.engine, "--size", "256M",
                             "--runtime", str(args.seconds + 3), "--quiet"], cwd=ROOT,
                            stdout=subprocess.DEVNULL)  # fmt: skip
    try:
        time.sleep(2.0)  # connected, in its steady state
        spies = {side: record(spy, pid, args.seconds, args.rate, OUT / f"profile-{side}.txt",
                              args.gil)
                 for side, pid in (("target", target.pid), ("host", host.pid))}  # fmt: skip
        for side, proc in spies.items():
            _, err = proc.communicate(timeout=args.seconds + 60)
            if proc.returncode:
                print(f"profile: py-spy on the {side} failed: {err.decode()[-300:]}",
                      file=sys.stderr)  # fmt: skip
                return 1
        host.wait(timeout=60)
    finally:
        if host.poll() is None:
            host.kill()
        target.close()
        config.unlink(missing_ok=True)
    what = f"{args.rw} bs={args.bs} QD{args.iodepth} engine={args.engine}"
    if args.gil:
        what += ", samples holding the GIL only"
    report = [f"## py-spy, {what}, {args.seconds:g} s at {args.rate} Hz, idle left out", ""]
    for side in ("target", "host"):
        stacks = parse_collapsed((OUT / f"profile-{side}.txt").read_text())
        (OUT / f"profile-{side}.svg").write_text(flame_svg(stacks, f"{side}: {what}"))
        report += summary(side, stacks)
    (OUT / "profile.md").write_text("\n".join(report))
    print("\n".join(report))
    print(f"flame graphs: {OUT}/profile-target.svg, {OUT}/profile-host.svg")
    return 0


if __name__ == "__main__":
    sys.exit(main())
