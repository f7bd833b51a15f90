"""``nvmeof bench``'s fio options: ``--offset``/``--offset_increment`` (where each job's region
starts: job N at offset + N * offset_increment) and ``--engine passthrough`` (the same I/O as raw
64-byte NVM commands through the ring's ``prep_cmd``), as pure functions, through ``run_bench``
against an in-process target and on the command line."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio

from initiator import ControllerOptions, open_host
from initiator.bench import BenchOptions, job_region, overlapping_jobs, run_bench
from initiator.cli import build_parser, main
from initiator.multipath import MultipathHead
from initiator.ring import Slot
from initiator.verify_state import HEADER
from target.config import DEMO_NQN, default_config, with_free_ports
from target.daemon import Target

KIB = 1024
MIB = 1 << 20
CAPACITY = 256 * MIB  # the demo namespaces


@pytest.fixture
async def target(nursery: trio.Nursery) -> AsyncIterator[Target]:
    served: Target = await nursery.start(Target(with_free_ports(default_config())).serve)
    yield served
    served.stop()


# -- regions, as fio places them ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("opts", "regions"),
    [
        # no offset_increment: back to back, ``size`` apart (our default; fio's is 0)
        (BenchOptions(size=MIB, numjobs=3), [(0, 256), (MIB, 256), (2 * MIB, 256)]),
        (BenchOptions(size=MIB, numjobs=2, offset=8 * MIB), [(8 * MIB, 256), (9 * MIB, 256)]),
        # fio: job N at offset + N * offset_increment
        (BenchOptions(size=MIB, numjobs=3, offset=4 * MIB, offset_increment=16 * MIB),
         [(4 * MIB, 256), (20 * MIB, 256), (36 * MIB, 256)]),
        # fio's default increment 0: every job on the same region
        (BenchOptions(size=MIB, numjobs=2, offset_increment=0), [(0, 256), (0, 256)]),
        # cut at the end of the namespace, in whole units of bs
        (BenchOptions(size=8 * MIB, bs=64 * KIB, offset=CAPACITY - MIB - 4 * KIB),
         [(CAPACITY - MIB - 4 * KIB, 16)]),
    ],
)  # fmt: skip
def test_job_regions_follow_fio(opts: BenchOptions, regions: list[tuple[int, int]]) -> None:
    assert [job_region(opts, i, 4096, CAPACITY) for i in range(opts.numjobs)] == regions


@pytest.mark.parametrize(
    ("opts", "message"),
    [
        (BenchOptions(offset=512), "offset 512 is not a multiple of the block size 4096"),
        (BenchOptions(offset_increment=6000), "offset_increment 6000 is not a multiple"),
        (BenchOptions(offset=-4096), "cannot be negative"),
        (BenchOptions(offset=CAPACITY), "job 0: region at byte 268435456 is beyond"),
        (BenchOptions(bs=8192, offset=CAPACITY - 4096), "beyond the namespace"),
    ],
)
def test_bad_regions_are_refused(opts: BenchOptions, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        job_region(opts, 0, 4096, CAPACITY)


def test_overlapping_jobs() -> None:
    assert overlapping_jobs(BenchOptions(size=MIB, numjobs=4), 4096, CAPACITY) is None
    assert overlapping_jobs(BenchOptions(size=MIB, numjobs=2, offset_increment=0), 4096,
                            CAPACITY) == (0, 1)  # fmt: skip
    half = BenchOptions(size=MIB, numjobs=3, offset_increment=MIB // 2)
    assert overlapping_jobs(half, 4096, CAPACITY) == (0, 1)
    # regions cut short by the end of the namespace no longer reach the next one
    assert overlapping_jobs(BenchOptions(size=MIB, numjobs=1), 4096, CAPACITY) is None


# -- against a target ----------------------------------------------------------------------------


async def _head(host: Any, target: Target, ports: tuple[int, ...] = (1,)) -> MultipathHead:
    for port_id in ports:
        await host.connect("127.0.0.1", target.ports[port_id].bound_port, DEMO_NQN)
    head: MultipathHead = host.namespace(DEMO_NQN, 1)
    return head


async def _written_lbas(head: MultipathHead, start: int, length: int, unit: int) -> list[int]:
    """Per ``unit`` bytes from byte ``start``: the LBA its bench header claims (-1: zeroes)."""
    data = bytearray()
    for at in range(start, start + length, 256 * KIB):  # within the controller's MDTS
        data += await head.read(at // head.block_size, min(256 * KIB, start + length - at)
                                // head.block_size)  # fmt: skip
    found = []
    for at in range(0, len(data), unit):
        chunk = data[at : at + unit]
        found.append(HEADER.unpack_from(chunk)[0] if any(chunk) else -1)
    return found


async def test_concurrent_verified_runs_on_their_own_ranges(target: Target) -> None:
    """Two benches at once, each with numjobs 2 and its own offset: every write lands in its
    job's region, nothing outside is touched, and both verify clean."""
    async with open_host(ControllerOptions(io_queues=2)) as host:
        head = await _head(host, target)
        common: dict[str, Any] = dict(rw="write", iodepth=8, numjobs=2, runtime=0.4,
                                      size=64 * KIB, offset_increment=256 * KIB, verify=True)  # fmt: skip
        results = []

        async def one(offset: int) -> None:
            results.append(await run_bench(head, BenchOptions(offset=offset, **common)))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(one, MIB)
            nursery.start_soon(one, 2 * MIB)
        assert [r.errors + r.verify_errors for r in results] == [0, 0]
        assert all(r.write.ios > 0 for r in results)
        # 1 MiB .. 3 MiB + 64 KiB, 16 units a job: jobs at 1M, 1.25M, 2M, 2.25M
        lbas = await _written_lbas(head, MIB, 2 * MIB + 64 * KIB, 4096)
    starts = {MIB, MIB + 256 * KIB, 2 * MIB, 2 * MIB + 256 * KIB}
    for i, lba in enumerate(lbas):
        here = MIB + i * 4096
        inside = any(s <= here < s + 64 * KIB for s in starts)
        assert lba == (here // head.block_size if inside else -1), (here, lba)


async def test_verify_refuses_overlapping_jobs(target: Target) -> None:
    async with open_host(ControllerOptions(io_queues=1)) as host:
        head = await _head(host, target)
        opts = BenchOptions(rw="randwrite", numjobs=2, size=MIB, offset_increment=0, verify=True)
        with pytest.raises(ValueError, match="jobs 0 and 1 overlap"):
            await run_bench(head, opts)


@pytest.fixture
def prep_calls(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """How often each ``Slot.prep_*`` ran."""
    calls = {"prep_cmd": 0, "prep_read": 0, "prep_write": 0}
    for name in calls:
        original = getattr(Slot, name)

        def counted(self: Slot, *args: Any, _name: str = name, _original: Any = original,
                    **kwargs: Any) -> Slot:  # fmt: skip
            calls[_name] += 1
            result: Slot = _original(self, *args, **kwargs)
            return result

        monkeypatch.setattr(Slot, name, counted)
    return calls


@pytest.mark.parametrize("rw", ["randread", "randwrite", "randrw", "read"])
async def test_passthrough_engine_moves_and_verifies_the_same_data(
    rw: str, target: Target, prep_calls: dict[str, int]
) -> None:
    async with open_host(ControllerOptions(io_queues=1)) as host:
        head = await _head(host, target)
        opts = BenchOptions(rw=rw, bs=8192, iodepth=8, runtime=0.3, size=256 * KIB, verify=True,
                            engine="passthrough", offset=MIB)  # fmt: skip
        result = await run_bench(head, opts)
        lbas = await _written_lbas(head, MIB, 256 * KIB, 8192)
    assert result.errors == result.verify_errors == 0, result.first_error
    assert result.read.ios + result.write.ios > 0
    assert prep_calls["prep_read"] == 1  # head.read() above, not the bench
    assert prep_calls["prep_write"] == 0 and prep_calls["prep_cmd"] > 0
    # reads were preconditioned (or writes verified): the blocks hold the bench's headers
    assert lbas == [(MIB + i * 8192) // head.block_size for i in range(32)]


async def test_passthrough_fails_over_on_a_path_reset(target: Target) -> None:
    """Raw commands are requeued byte for byte when their path dies (verified reads and writes
    over two paths, the active one reset mid-run)."""
    async with open_host(ControllerOptions(io_queues=1, reconnect_delay=0.2)) as host:
        head = await _head(host, target, (1, 2))
        opts = BenchOptions(rw="randrw", iodepth=16, runtime=1.2, size=MIB, verify=True,
                            engine="passthrough")  # fmt: skip
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: target.port_down(1, "reset"))
            result = await run_bench(head, opts)
    assert result.errors == result.verify_errors == 0, result.first_error
    assert head.stats.path_losses >= 1 and head.stats.requeued + head.stats.failovers > 0


# -- the command line ----------------------------------------------------------------------------


def test_cli_parses_fio_spellings() -> None:
    args = build_parser().parse_args(["bench", "-a", "x", "--offset", "1M", "--offset_increment",
                                      "64k", "--engine", "passthrough"])  # fmt: skip
    assert (args.offset, args.offset_increment, args.engine) == (MIB, 64 * KIB, "passthrough")
    args = build_parser().parse_args(["bench", "-a", "x", "--offset-increment", "0"])
    assert (args.offset, args.offset_increment, args.engine) == (0, 0, "block")
    assert build_parser().parse_args(["bench", "-a", "x"]).offset_increment is None


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--offset=-4k"], "cannot be negative"),
        (["--offset_increment", "x"], "not a size"),
        (["--engine", "libaio"], "invalid choice"),
    ],
)
def test_cli_refuses_bad_values(argv: list[str], needle: str,
                                capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    with pytest.raises(SystemExit):
        main(["bench", "-a", "x", *argv])
    assert needle in capsys.readouterr().err


async def test_cli_reports_the_options(target: Target, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["bench", "--path", f"127.0.0.1:{target.ports[1].bound_port}", "-n", DEMO_NQN,
            "--rw", "randread", "--iodepth", "4", "--runtime", "0.3", "--size", "256k",
            "--numjobs", "2", "--offset", "1M", "--offset_increment", "1M", "--engine",
            "passthrough", "--verify", "--json"]  # fmt: skip
    with trio.fail_after(60):
        code = await trio.to_thread.run_sync(main, argv)
    out, err = capsys.readouterr()
    assert code == 0, err
    options = json.loads(out)["jobs"][0]["job options"]
    assert options["offset"] == str(MIB) and options["offset_increment"] == str(MIB)
    assert options["ioengine"] == "passthrough"
    argv[argv.index("1M", argv.index("--offset_increment"))] = "0"
    with trio.fail_after(60):
        code = await trio.to_thread.run_sync(main, argv)
    assert code != 0 and "overlap" in capsys.readouterr().err
