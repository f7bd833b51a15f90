"""Per-path IOPS over time with path events marked: ``nvmeof bench --timeline FILE``.

``.html`` writes a self-contained page with an inline SVG chart (no dependencies); ``.png``
renders the same chart with matplotlib (the optional ``plot`` extra). Samples are taken every
``period`` seconds from the paths' completion counters; events (path lost, live again, ANA
changes, failovers) come from the namespace head's event log.

Scenario steps (``nvmeof bench --events STEPS.jsonl``) come from the step log a scenario runner
writes (``nvmeof-target ctl scenario run FILE --log STEPS.jsonl``), one JSON object a line with
the Unix ``time`` it ran: :func:`read_step_log` reads it (here, not through the target's code:
the initiator stands apart from the target) and :meth:`Timeline.add_steps` places each step on
the chart by the wall clock, drawn apart from the host's own events.
"""

from __future__ import annotations

import html
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import trio

if TYPE_CHECKING:
    from initiator.multipath import MultipathHead

COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")
#: Scenario steps are drawn in this colour, host events in grey.
STEP_COLOR = "#e377c2"


def read_step_log(path: str | Path) -> list[tuple[float, str]]:
    """``(Unix time, description)`` of each step in a scenario step log (JSON lines with
    ``time``, ``what`` or ``action``, and ``ok``). A last line without its newline is one the
    runner is still writing: left out. Anything else unreadable is a ValueError naming the
    line."""
    name = str(path)
    try:
        text = Path(name).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{name}: cannot read: {getattr(exc, 'strerror', None) or exc}") from None
    lines = text.split("\n")
    complete = lines[:-1]  # the text after the last newline is unfinished (or empty)
    steps = []
    for number, line in enumerate(complete, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            raise ValueError(f"{name}: line {number}: not JSON") from None
        when = record.get("time") if isinstance(record, dict) else None
        if not isinstance(when, int | float) or isinstance(when, bool):
            raise ValueError(f'{name}: line {number}: no Unix "time" in the record')
        what = str(record.get("what") or record.get("action") or "step")
        if "step" in record:
            what = f"step[{record['step']}] {what}"
        if record.get("ok") is False:
            what += f" FAILED: {record.get('detail', '')}".rstrip(": ")
        steps.append((float(when), what))
    return steps


@dataclass
class Timeline:
    """Samples of per-path completions and the head's events, relative to ``start``."""

    head: MultipathHead
    period: float = 0.2
    start: float = 0.0
    times: list[float] = field(default_factory=list)
    iops: dict[str, list[float]] = field(default_factory=dict)
    events: list[tuple[float, str]] = field(default_factory=list)
    #: Unix time at ``start``: where scenario steps (timed by the wall clock) fall.
    wall_start: float = 0.0
    steps: list[tuple[float, str]] = field(default_factory=list)

    async def run(self) -> None:
        """Sample until cancelled."""
        self.start = trio.current_time()
        self.wall_start = time.time()
        seen_events = len(self.head.events)
        last = {p.label: p.stats.ios for p in self.head.paths}
        while True:
            await trio.sleep(self.period)
            now = trio.current_time()
            self.times.append(now - self.start)
            for path in self.head.paths:
                ios = path.stats.ios
                series = self.iops.setdefault(path.label, [0.0] * (len(self.times) - 1))
                series.append((ios - last.get(path.label, ios)) / self.period)
                last[path.label] = ios
            for when, what in self.head.events[seen_events:]:
                self.events.append((max(0.0, when - self.start), what))
            seen_events = len(self.head.events)

    def add_steps(self, steps: Iterable[tuple[float, str]]) -> int:
        """Mark scenario steps given by Unix time (:func:`read_step_log`); those from before the
        sampling started are left out. Returns how many were kept."""
        kept = [(when - self.wall_start, what) for when, what in steps
                if when >= self.wall_start]  # fmt: skip
        self.steps.extend(kept)
        self.steps.sort(key=lambda step: step[0])
        return len(kept)

    def write(self, path: str | Path) -> None:
        target = Path(path)
        if target.suffix.lower() == ".html":
            target.write_text(self.html())
        elif target.suffix.lower() == ".png":
            self.png(target)
        else:
            raise ValueError(f"--timeline wants a .html or .png file, got {target.name!r}")

    # -- rendering -------------------------------------------------------------------------------

    def _event_groups(self, window: float = 0.2) -> list[tuple[float, list[str]]]:
        """Events close in time merged into one marker (a path loss logs several at once)."""
        groups: list[tuple[float, list[str]]] = []
        for when, what in self.events:
            if groups and when - groups[-1][0] <= window:
                groups[-1][1].append(what)
            else:
                groups.append((when, [what]))
        return groups

    def svg(self, width: int = 960, height: int = 360) -> str:
        left, right, top, bottom = 70, 20, 20, 40
        plot_w, plot_h = width - left - right, height - top - bottom
        t_max = max(self.times[-1] if self.times else 1.0, 1e-9)
        y_max = max((max(s) for s in self.iops.values() if s), default=1.0) or 1.0
        y_max *= 1.1

        def x(t: float) -> float:
            return left + plot_w * t / t_max

        def y(v: float) -> float:
            return top + plot_h * (1 - v / y_max)

        parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
                 'font-family="sans-serif" font-size="11">',
                 f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="white" '
                 'stroke="#888"/>']  # fmt: skip
        for i in range(6):
            value = y_max * i / 5
            parts.append(f'<text x="{left - 6}" y="{y(value) + 4:.1f}" text-anchor="end">'
                         f"{value:,.0f}</text>")  # fmt: skip
        for i in range(11):
            t = t_max * i / 10
            parts.append(f'<text x="{x(t):.1f}" y="{top + plot_h + 15}" text-anchor="middle">'
                         f"{t:.1f}s</text>")  # fmt: skip
        for when, what in self.events:
            parts.append(f'<line x1="{x(when):.1f}" y1="{top}" x2="{x(when):.1f}" '
                         f'y2="{top + plot_h}" stroke="#999" stroke-dasharray="4,3">'
                         f"<title>{html.escape(what)}</title></line>")  # fmt: skip
        for when, what in self.steps:
            if when <= t_max:
                parts.append(f'<line x1="{x(when):.1f}" y1="{top}" x2="{x(when):.1f}" '
                             f'y2="{top + plot_h}" stroke="{STEP_COLOR}" stroke-width="1.5">'
                             f"<title>{html.escape(what)}</title></line>")  # fmt: skip
        for index, (label, series) in enumerate(sorted(self.iops.items())):
            color = COLORS[index % len(COLORS)]
            points = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in zip(self.times, series,
                                                                         strict=False))  # fmt: skip
            parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.8" '
                         f'points="{points}"/>')  # fmt: skip
            parts.append(f'<text x="{left + 10}" y="{top + 16 + 14 * index}" fill="{color}">'
                         f"{html.escape(label)}</text>")  # fmt: skip
        parts.append(f'<text x="14" y="{top + plot_h / 2:.0f}" transform="rotate(-90 14 '
                     f'{top + plot_h / 2:.0f})" text-anchor="middle">IOPS</text>')  # fmt: skip
        parts.append("</svg>")
        return "\n".join(parts)

    def html(self) -> str:
        rows = "\n".join(f"<tr><td>{t:.2f} s</td><td>{html.escape(what)}</td></tr>"
                         for t, what in self.events)  # fmt: skip
        page = ("<!doctype html><html><head><meta charset='utf-8'><title>nvmeof bench timeline"
                "</title></head><body><h2>Per-path IOPS</h2>" + self.svg() +
                "<h3>Events (dashed lines)</h3><table>" + rows + "</table>")  # fmt: skip
        if self.steps:
            steps = "\n".join(f"<tr><td>{t:.2f} s</td><td>{html.escape(what)}</td></tr>"
                              for t, what in self.steps)  # fmt: skip
            page += (f"<h3>Scenario steps (<span style='color:{STEP_COLOR}'>solid lines</span>)"
                     "</h3><table>" + steps + "</table>")  # fmt: skip
        return page + "</body></html>\n"

    def png(self, path: Path) -> None:
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            raise RuntimeError("a .png timeline needs matplotlib (pip install 'nvmeof-emu[plot]'); "
                               "an .html timeline needs nothing") from None  # fmt: skip
        fig, ax = plt.subplots(figsize=(10, 4), dpi=100)
        for index, (label, series) in enumerate(sorted(self.iops.items())):
            ax.plot(self.times[: len(series)], series, label=label,
                    color=COLORS[index % len(COLORS)])  # fmt: skip
        top = ax.get_ylim()[1]
        for column, (when, texts) in enumerate(self._event_groups()):
            ax.axvline(when, color="#999", linestyle="--", linewidth=0.8)
            label = "\n".join(text[:48] for text in texts[:3])
            ax.annotate(label, (when, top * (0.97 - 0.04 * (column % 2))), fontsize=7,
                        va="top", ha="left", color="#444", xytext=(3, 0),
                        textcoords="offset points")  # fmt: skip
        for when, what in self.steps:
            ax.axvline(when, color=STEP_COLOR, linewidth=1.0)
            ax.annotate(what[:40], (when, 0), fontsize=6, rotation=90, va="bottom",
                        ha="right", color=STEP_COLOR)  # fmt: skip
        ax.set_xlabel("seconds")
        ax.set_ylabel("IOPS")
        ax.set_title("nvmeof bench: per-path IOPS")
        ax.legend(loc="lower right")
        fig.tight_layout()
        fig.savefig(path)
        plt.close(fig)
