"""CPU per command of the target's data path, without sockets or Trio: the general path and the
plain I/O short cut (target/plainio.py), measured in the same run.

A batch of 32 capsules (4K reads, or 4K in-capsule writes, on distinct LBAs) is fed to a
connected I/O queue (bench/queue_harness.py) and served, the answers joined as a flush would;
``time.process_time`` over ``--rounds`` batches, per command. What is left out here (Trio's run
loop, the receive and the send) is what ``make bench`` measures with everything in.

    python bench/datapath.py [--rounds 2000]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.queue_harness import capsule, io_queue, rw_sqe, serve_batch

BATCH = 32


def per_command_us(write: bool, plain: bool, rounds: int) -> float:
    _, queue = io_queue(nlbas=BATCH * 2)
    payload = bytes(range(256)) * 16
    batch = b"".join(
        capsule(rw_sqe(0x01, cid, 1, cid, 0), payload) if write
        else capsule(rw_sqe(0x02, cid, 1, cid, 0), read=4096)
        for cid in range(BATCH)
    )  # fmt: skip
    for _ in range(50):  # warm-up
        serve_batch(queue, batch, plain=plain)
    before = queue.completed
    start = time.process_time()
    for _ in range(rounds):
        serve_batch(queue, batch, plain=plain)
    elapsed = time.process_time() - start
    assert queue.completed - before == rounds * BATCH, "commands were not all answered"
    return elapsed / (rounds * BATCH) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2000)
    args = parser.parse_args()
    print("| 4K, batch of 32 | general path | short cut | ratio |")
    print("|---|---|---|---|")
    for name, write in (("read", False), ("write (in-capsule)", True)):
        general = per_command_us(write, plain=False, rounds=args.rounds)
        plain = per_command_us(write, plain=True, rounds=args.rounds)
        print(f"| {name} | {general:.1f} us | {plain:.1f} us | {general / plain:.1f}x |")


if __name__ == "__main__":
    main()
