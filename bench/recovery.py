"""Failover recovery times per fault kind (``make bench`` runs it after the matrix).

For each fault the target can inflict on the active path, run 4 KiB random reads at QD16 over
two paths, inject the fault, and measure: how long until the first completion on the other
path, the longest gap between completions, and how many commands were requeued. The path kills
(reset, close, blackhole) are run again with the reads sent as raw 64-byte NVM Read commands
through the ring's passthrough API (``prep_cmd``), which fail over the same way. Figures, not
assertions; written to bench-results/recovery.json and .md.
"""

from __future__ import annotations

import itertools
import json
import random
import struct
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import trio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from initiator import ControllerOptions, open_host  # noqa: E402
from initiator.ring import Ring  # noqa: E402
from nvmeof.constants import SQE_SIZE, AnaState, IoOpcode  # noqa: E402
from target.config import (  # noqa: E402
    DEMO_NQN,
    NamespaceConfig,
    PortConfig,
    SubsystemConfig,
    TargetConfig,
)
from target.daemon import Target  # noqa: E402

Fault = Callable[[Target], Awaitable[object]]


async def _ana(t: Target) -> None:
    t.set_ana(1, 1, AnaState.INACCESSIBLE)


async def _status(t: Target) -> None:
    t.fault_add({"action": "status", "status": 0x302, "port": 1, "count": 32})  # no AEN


#: the faults that kill the active path, also run through the passthrough API
KILLS = ("reset", "close", "blackhole (keep-alive 1 s)")

FAULTS: dict[str, Fault] = {
    "reset": lambda t: t.port_down(1, "reset"),
    "close": lambda t: t.port_down(1, "close"),
    "blackhole (keep-alive 1 s)": lambda t: t.port_down(1, "blackhole"),
    "ANA inaccessible (AEN)": _ana,
    "ANA status, no AEN": _status,
}


def config() -> TargetConfig:
    ns = NamespaceConfig(nsid=1, size=64 << 20, block_size=4096)
    return TargetConfig(
        subsystems=(SubsystemConfig(nqn=DEMO_NQN, namespaces=(ns,)),),
        ports=(PortConfig(id=1, port=0, subsystems=(DEMO_NQN,), ana_states=((1, AnaState.OPTIMIZED),)),
               PortConfig(id=2, port=0, subsystems=(DEMO_NQN,),
                          ana_states=((1, AnaState.NON_OPTIMIZED),))),
    )  # fmt: skip


def raw_read(nsid: int, slba: int) -> bytes:
    """A 64-byte NVM Read of one block (CDW10-11 SLBA, CDW12 NLB 0's based)."""
    cmd = bytearray(SQE_SIZE)
    cmd[0] = IoOpcode.READ
    struct.pack_into("<I", cmd, 4, nsid)
    struct.pack_into("<QI", cmd, 40, slba, 0)
    return bytes(cmd)


async def measure(name: str, fault: Fault, engine: str = "block") -> dict[str, object]:
    async with trio.open_nursery() as nursery:
        target: Target = await nursery.start(Target(config()).serve)
        options = ControllerOptions(io_queues=2, kato_ms=1000, reconnect_delay=0.5,
                                    command_timeout=2.0)  # fmt: skip
        async with open_host(options) as host:
            for port_id in (1, 2):
                await host.connect("127.0.0.1", target.ports[port_id].bound_port, DEMO_NQN)
            head = host.namespace(DEMO_NQN, 1)
            other = head.paths[1].label
            ring = Ring(head, 16)
            rng = random.Random(1)
            done: list[tuple[float, str]] = []
            injected_at = 0.0
            stop_at = trio.current_time() + 6.0
            while trio.current_time() < stop_at:
                while (slot := ring.get_sqe()) is not None:
                    if engine == "passthrough":
                        slot.prep_cmd(raw_read(head.nsid, rng.randrange(head.nlbas)),
                                      data_in=bytearray(4096))  # fmt: skip
                    else:
                        slot.prep_read(rng.randrange(head.nlbas), 1, bytearray(4096))
                if not injected_at and len(done) > 2000:
                    injected_at = trio.current_time()
                    await fault(target)
                await ring.submit_and_wait(1)
                now = trio.current_time()
                for cqe in ring.completions():
                    if not cqe.ok:
                        raise RuntimeError(f"{name}: I/O failed: {cqe.status}")
                    done.append((now, cqe.path_label))
            while ring.inflight:
                await ring.wait(1)
                for _ in ring.completions():
                    pass
            times = [t for t, _ in done]
            gap = max((b - a for a, b in itertools.pairwise(times) if b >= injected_at),
                      default=0.0)  # fmt: skip
            first = next((t for t, p in done if t >= injected_at and p == other), None)
            result = {"fault": name, "engine": engine, "ios": len(done),
                      "to_other_path_ms": round((first - injected_at) * 1000, 1) if first else None,
                      "max_gap_ms": round(gap * 1000, 1), "requeued": head.stats.requeued,
                      "failover_events": head.stats.failovers}  # fmt: skip
        target.stop()
        nursery.cancel_scope.cancel()
    return result


def main() -> int:
    rows = [trio.run(measure, name, fault) for name, fault in FAULTS.items()]
    rows += [trio.run(measure, name, FAULTS[name], "passthrough") for name in KILLS]
    out = ROOT / "bench-results"
    out.mkdir(exist_ok=True)
    (out / "recovery.json").write_text(json.dumps(rows, indent=2))
    lines = ["| fault | engine | first I/O on the other path | longest completion gap | requeued |",
             "|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        lines.append(f"| {r['fault']} | {r['engine']} | {r['to_other_path_ms']} ms | "
                     f"{r['max_gap_ms']} ms | {r['requeued']} |")  # fmt: skip
    (out / "recovery.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
