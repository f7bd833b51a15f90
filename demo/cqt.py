"""``make cqt-demo``: the stale write after a failover, and the Command Quiesce Time that stops it.

Two paths to one namespace; writers rewrite a few blocks over and over, each block stamped with
its LBA, a sequence number and the time the write was issued. A ghost-write fault holds writes
on path 1 (the controller "keeps executing" them after the connection is gone), then path 1 is
reset: the host fails the held writes over to path 2 and the writers carry on with newer data.
When the ghosts land, they overwrite that newer data — unless the host waited for the lost
controller's quiesce deadline before retrying (TP4129: loss + CQT). The verifier reads every
block back and names each one that holds an older write than the last one acknowledged, with
both writes' times.

    python -m demo.cqt [--cqt-ms 0|1500] [--kind block|passthrough] [--ghost-ms 800]

Without ``--cqt-ms`` it runs CQT 0 and then CQT 1500 ms, for block writes and passthrough
writes through the ring, and exits 1 unless CQT 0 shows corruption and CQT 1500 shows none.
"""

from __future__ import annotations

import argparse
import logging
import struct
import sys
import time
from dataclasses import dataclass, field

import trio

from initiator import ControllerOptions, open_host
from initiator.multipath import MultipathHead
from nvmeof.constants import AnaState, IoOpcode
from target.config import DEMO_NQN, NamespaceConfig, PortConfig, SubsystemConfig, TargetConfig
from target.daemon import Target

HOST = "127.0.0.1"
BLOCK = 512
WRITERS = 4
BLOCKS_PER_WRITER = 4
#: A block's stamp: magic, LBA, sequence number, issue time (Unix seconds).
STAMP = struct.Struct("<8sQQd")
MAGIC = b"CQTDEMO1"


@dataclass
class Write:
    seq: int
    issued: float  # Unix time
    acked: float = 0.0


@dataclass
class Corruption:
    lba: int
    found: Write  # the write the block holds
    expected: Write  # the newest write acknowledged for it

    def __str__(self) -> str:
        return (f"LBA {self.lba}: holds write #{self.found.seq} issued {_clock(self.found.issued)}, "
                f"but write #{self.expected.seq} issued {_clock(self.expected.issued)} was "
                f"acknowledged at {_clock(self.expected.acked)}")  # fmt: skip


@dataclass
class DemoResult:
    cqt_ms: int
    kind: str
    writes: int = 0
    held: int = 0  # writes the host held for the quiesce deadline
    ghosts: int = 0  # writes the target held back and executed late
    corruptions: list[Corruption] = field(default_factory=list)


def _clock(unix: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(unix)) + f".{int(unix % 1 * 1000):03d}"


def demo_config(cqt_ms: int) -> TargetConfig:
    ns = NamespaceConfig(nsid=1, size=1 << 20, block_size=BLOCK)
    return TargetConfig(
        subsystems=(SubsystemConfig(nqn=DEMO_NQN, namespaces=(ns,), cqt_ms=cqt_ms),),
        ports=(PortConfig(id=1, port=0, subsystems=(DEMO_NQN,),
                          ana_states=((1, AnaState.OPTIMIZED),)),
               PortConfig(id=2, port=0, subsystems=(DEMO_NQN,),
                          ana_states=((1, AnaState.NON_OPTIMIZED),))),
    )  # fmt: skip


def write_sqe(lba: int) -> bytes:
    """A raw one-block NVM Write for NSID 1 (ring passthrough fills CID and the SGL)."""
    sqe = bytearray(64)
    sqe[0] = IoOpcode.WRITE
    sqe[4:8] = (1).to_bytes(4, "little")
    sqe[40:48] = lba.to_bytes(8, "little")
    return bytes(sqe)


async def _write(head: MultipathHead, kind: str, lba: int, data: bytes) -> None:
    if kind == "block":
        await head.write(lba, data)
        return
    done = await head.passthru(write_sqe(lba), data_out=data)
    if done.status_word:
        raise RuntimeError(f"passthrough write LBA {lba}: status {done.status_word:#x}")


async def run_demo(cqt_ms: int, kind: str = "block", ghost_ms: int = 800) -> DemoResult:
    """One run: the first write of each writer is held back as a ghost for ``ghost_ms``, path
    1 is reset after 0.3 s, and the writers stop issuing new writes before the ghosts land (so
    what a ghost overwrites stays overwritten for the verifier to see)."""
    run_for = 0.75 * ghost_ms / 1000
    result = DemoResult(cqt_ms, kind)
    acked: dict[int, Write] = {}
    target = Target(demo_config(cqt_ms))
    options = ControllerOptions(io_queues=1, reconnect_delay=0.2, kato_ms=1000,
                                command_timeout=5.0)  # fmt: skip
    async with trio.open_nursery() as nursery:
        await nursery.start(target.serve)
        target.fault_add({"action": "ghost-write", "port": 1, "opcode": IoOpcode.WRITE,
                          "delay_ms": ghost_ms, "count": WRITERS})  # fmt: skip
        async with open_host(options) as host:
            for port_id in (1, 2):
                await host.connect(HOST, target.ports[port_id].bound_port, DEMO_NQN)
            head = host.namespace(DEMO_NQN, 1)
            seq = 0
            stop = trio.current_time() + run_for

            async def writer(first: int) -> None:
                nonlocal seq
                lbas = range(first, first + BLOCKS_PER_WRITER)
                while trio.current_time() < stop:
                    for lba in lbas:
                        seq += 1
                        write = Write(seq, time.time())
                        block = STAMP.pack(MAGIC, lba, write.seq, write.issued).ljust(BLOCK, b".")
                        await _write(head, kind, lba, block)
                        write.acked = time.time()
                        acked[lba] = write
                        result.writes += 1

            async with trio.open_nursery() as writers:
                for index in range(WRITERS):
                    writers.start_soon(writer, index * BLOCKS_PER_WRITER)
                await trio.sleep(0.3)
                await target.port_down(1, "reset")
            await trio.sleep(ghost_ms / 1000 + 0.5)  # every ghost has landed by now
            result.held = head.stats.quiesce_held
            for lba, expected in sorted(acked.items()):
                magic, stamped_lba, found_seq, issued = STAMP.unpack_from(await head.read(lba, 1))
                if magic != MAGIC or stamped_lba != lba:
                    raise RuntimeError(f"LBA {lba}: not a demo block")
                if found_seq != expected.seq:
                    result.corruptions.append(Corruption(lba, Write(found_seq, issued), expected))
        result.ghosts = target.state.faults_fired.get("ghost-write", 0)
        target.stop()
    return result


def report(result: DemoResult) -> str:
    lines = [f"CQT {result.cqt_ms} ms, {result.kind} writes: {result.writes} writes, "
             f"{result.ghosts} held back by the target, {result.held} held by the host, "
             f"{len(result.corruptions)} blocks with stale data"]  # fmt: skip
    lines += [f"  {c}" for c in result.corruptions]
    return "\n".join(lines)


async def _main(args: argparse.Namespace) -> int:
    logging.getLogger("nvmeof").setLevel(logging.CRITICAL)  # the report says what matters
    cqts = [args.cqt_ms] if args.cqt_ms is not None else [0, 1500]
    kinds = [args.kind] if args.kind else ["block", "passthrough"]
    ok = True
    for kind in kinds:
        for cqt in cqts:
            result = await run_demo(cqt, kind, args.ghost_ms)
            print(report(result), flush=True)
            if args.cqt_ms is None:
                expected_stale = cqt == 0
                ok &= bool(result.corruptions) == expected_stale
    if args.cqt_ms is None:
        print("as expected: CQT 0 lets the stale writes land, CQT 1500 ms keeps the newer data"
              if ok else "NOT as expected (see above)")  # fmt: skip
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m demo.cqt", description=__doc__.split("\n")[0])
    parser.add_argument("--cqt-ms", type=int, help="one run with this CQT (default: 0, then 1500)")
    parser.add_argument("--kind", choices=("block", "passthrough"), help="default: both")
    parser.add_argument("--ghost-ms", type=int, default=800, help="how long ghosts are held")
    return trio.run(_main, parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
