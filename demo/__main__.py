"""``make demo``: start the target on the embedded default and talk to it over both paths.

Discovery on 8009, then for each discovered path: connect like ``nvme connect``, Identify the
controller and namespaces, read the ANA log, write a pattern and read it back (in-capsule and
R2T-sized writes), and finally read through one path what was written through the other.
Runs the host side with the protocol core's host connection (``initiator.controller``).
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import sys
import time
from functools import partial
from pathlib import Path

import trio

from initiator.bench import BenchOptions, run_bench
from initiator.commands import LiveView, bench_report, print_report
from initiator.controller import ControllerOptions, HostController, connect_controller
from initiator.host import open_host
from initiator.timeline import Timeline
from logfmt import first_leaf, setup_logging
from nvmeof.constants import DISCOVERY_NQN, DISCOVERY_PORT, AnaState, LogPage
from nvmeof.wire.logpages import DiscoveryEntry, parse_discovery_entries, parse_discovery_header
from target.config import DEMO_NQN, default_config
from target.control.clientbase import DEFAULT_CONTROL, format_endpoint
from target.control.httpapi import DEFAULT_METRICS, ControlEndpoints, serve_control
from target.daemon import Target

HOST = "127.0.0.1"
DEMO_TIMEOUT = 90
FAILOVER_RUNTIME = 8.0


class DemoFailure(RuntimeError):
    """Something the demo checks did not hold."""


def check(condition: bool, what: str) -> None:
    if not condition:
        raise DemoFailure(what)


def say(text: str = "") -> None:
    print(text, flush=True)


def pattern(seed: str, size: int) -> bytes:
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"{seed}/{counter}".encode()).digest()
        counter += 1
    return bytes(out[:size])


async def discover(nursery: trio.Nursery) -> list[DiscoveryEntry]:
    say(f"$ discover {HOST}:{DISCOVERY_PORT}")
    ctrl = await connect_controller(nursery, HOST, DISCOVERY_PORT, DISCOVERY_NQN,
                                    ControllerOptions(kato_ms=0, io_queues=0))  # fmt: skip
    try:
        header = parse_discovery_header(await ctrl.get_log_page(LogPage.DISCOVERY, 20, nsid=0))
        size = 1024 * header.numrec
        raw = await ctrl.get_log_page(LogPage.DISCOVERY, size, nsid=0, offset=1024) if size else b""
        entries = parse_discovery_entries(raw, header.numrec)
    finally:
        await ctrl.shutdown()
    say(f"  discovery log: generation {header.genctr}, {len(entries)} records")
    for e in entries:
        say(f"  - portid {e.portid}  tcp {e.traddr}:{e.trsvcid}  {e.subnqn}")
    return entries


async def show_path(ctrl: HostController) -> dict[int, int]:
    ident = ctrl.identify
    host, port = ctrl.addr
    say(f"$ connect {host}:{port} -n {ctrl.subnqn}")
    say(f"  controller {ctrl.cntlid}: SN {ident.sn!r} MN {ident.mn!r} FR {ident.fr!r} "
        f"CMIC {ident.cmic:#x} MDTS {ident.mdts} I/O queues {len(ctrl.io_queues)}")  # fmt: skip
    ana = await ctrl.ana_log()
    states = {}
    for group in ana.groups:
        states[group.grpid] = group.state
        say(f"  ANA group {group.grpid}: {AnaState(group.state).label:14} "
            f"namespaces {list(group.nsids)}  (change count {ana.chgcnt})")  # fmt: skip
    return states


async def verify_io(ctrl: HostController, tag: str) -> int:
    verified = 0
    for nsid in await ctrl.active_namespaces():
        ns = await ctrl.namespace(nsid)
        bs = ns.block_size
        for nbytes in (4096, 64 * 1024):  # in-capsule (<= 8 KiB), then R2T + H2CData
            data = pattern(f"{tag}/{nsid}/{nbytes}", nbytes)
            slba = (nbytes // bs) * (1 if nbytes == 4096 else 4)
            done = await ctrl.write(nsid, slba, data, bs)
            check(done.ok, f"write failed: {done.status}")
            done, back = await ctrl.read(nsid, slba, nbytes // bs, bs)
            check(done.ok and back == data, "read-back mismatch")
            verified += 1
        say(f"  nsid {nsid}: {ns.nlbas} x {bs} B, ANA group {ns.ana_group} -> "
            f"wrote+verified 4 KiB (in-capsule) and 64 KiB (R2T) OK")  # fmt: skip
    return verified


async def demo(pcap_dir: str | None = None) -> int:
    started = time.monotonic()
    async with trio.open_nursery() as nursery:
        target = Target(default_config(), pcap_dir=pcap_dir)
        await nursery.start(target.serve)
        endpoints = await start_control(nursery, target)
        say("target: serving the embedded default (RAM namespaces)")
        for port in target.ports.values():
            kind = ", ".join(port.subsystems) or "discovery only"
            ana = ", ".join(f"group {g} {s.label}" for g, s in port.ana.items()) or "-"
            say(f"  port {port.id}: {port.addr}:{port.bound_port}  {kind}  ({ana})")
        say()
        entries = await discover(nursery)
        paths = [e for e in entries if e.subnqn == DEMO_NQN]
        check(len(paths) == 2, "expected the demo subsystem on two ports")
        say()
        ctrls = []
        checks = 0
        for entry in paths:
            ctrl = await connect_controller(nursery, entry.traddr, int(entry.trsvcid), DEMO_NQN,
                                            ControllerOptions(io_queues=2))  # fmt: skip
            ctrls.append(ctrl)
            await show_path(ctrl)
            checks += await verify_io(ctrl, f"port{entry.portid}")
            say()
        say("$ cross-path check: write through the first path, read through the second")
        data = pattern("cross", 32 * 1024)
        check((await ctrls[0].write(1, 1000, data, 512)).ok, "cross-path write failed")
        done, back = await ctrls[1].read(1, 1000, len(data) // 512, 512)
        check(done.ok and back == data, "cross-path read does not match")
        say("  one namespace, two paths: data matches")
        for ctrl in ctrls:
            await ctrl.shutdown()
        say()
        await failover_act(target)
        say()
        show_where_to_look(target, endpoints)
        say()
        say(f"demo: OK - {checks + 1} verified transfers over 2 paths in "
            f"{time.monotonic() - started:.1f} s; stopping the target")  # fmt: skip
        target.stop()
        nursery.cancel_scope.cancel()  # the control API and metrics listeners too
    return 0


async def failover_act(target: Target) -> None:
    """The initiator's multipath head under load; the active path is killed and restored."""
    say("$ nvmeof bench --rw randrw --verify --iodepth 32 over both paths (multipath head),")
    say("  killing the optimized path (TCP reset) after 2.5 s and restoring it after 5.5 s")
    options = ControllerOptions(io_queues=2, reconnect_delay=1.0)
    async with open_host(options) as host:
        for port_id in (1, 2):
            await host.connect(HOST, target.ports[port_id].bound_port, DEMO_NQN)
        head = host.namespace(DEMO_NQN, 1)
        view = LiveView(head, quiet=False, out=lambda line: say("  " + line),
                        total=FAILOVER_RUNTIME)  # fmt: skip
        opts = BenchOptions(rw="randrw", bs=4096, iodepth=32, runtime=FAILOVER_RUNTIME,
                            size=32 << 20, verify=True)  # fmt: skip

        async def operator() -> None:
            await trio.sleep(2.5)
            killed = await target.port_down(1, "reset")
            say(f"  >>> operator: port 1 down (reset), {killed} connections killed")
            await trio.sleep(3.0)
            await target.port_up(1)
            say("  >>> operator: port 1 up again")

        timeline = Timeline(head, period=0.1)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(operator)
            nursery.start_soon(timeline.run)
            result = await run_bench(head, opts, view.tick)
            nursery.cancel_scope.cancel()
        report = bench_report(head, opts, result)
        say()
        print_report(report)
        mp = report["multipath"]
        check(not result.errors and not result.verify_errors,
              f"I/O failed during failover: {result.first_error}")  # fmt: skip
        check(mp["requeued"] > 0, "the path kill should have requeued commands in flight")
        say(f"  -> {mp['requeued']} in-flight commands requeued to the other path, 0 failed, "
            "every read verified")  # fmt: skip
        out = Path("bench-results")
        await trio.Path(out).mkdir(exist_ok=True)
        for name in ("demo-timeline.html", "demo-timeline.png"):
            try:
                await trio.to_thread.run_sync(timeline.write, out / name)
            except RuntimeError:
                continue  # no matplotlib: the HTML one is enough
            say(f"  timeline of per-path IOPS with the events marked: {out / name}")


async def start_control(nursery: trio.Nursery, target: Target) -> ControlEndpoints | None:
    """The control API and metrics on their default ports (any free port if those are busy)."""
    for control, metrics in ((DEFAULT_CONTROL, DEFAULT_METRICS), ((HOST, 0), (HOST, 0))):
        endpoints: ControlEndpoints | None = None
        try:
            endpoints = await nursery.start(
                partial(serve_control, target, control=control, metrics=metrics)
            )
        except* OSError:
            pass  # a port is busy: try any free port
        if endpoints is not None:
            return endpoints
    return None


def show_where_to_look(target: Target, endpoints: ControlEndpoints | None) -> None:
    fired = target.state.faults_fired
    say("operator changes the target recorded:")
    for change in target.changes:
        say(f"  {time.strftime('%H:%M:%S', time.localtime(change.time))}  {change.what}")
    if endpoints is None or endpoints.metrics is None or endpoints.control is None:
        say("(control API and metrics not started: their ports were busy)")
        return
    say(f"metrics:     curl -s http://{format_endpoint(endpoints.metrics)}/metrics | grep nvmeof_")
    say(f"control API: nvmeof-target ctl --control {format_endpoint(endpoints.control)} status"
        f"  (OpenAPI: http://{format_endpoint(endpoints.control)}/openapi.json)")  # fmt: skip
    say("  (both stop with the demo; `nvmeof-target serve` keeps them up: 9464 and 9465)")
    if fired:
        say(f"faults fired: {fired}")


async def _bounded_demo(pcap_dir: str | None) -> int:
    with trio.fail_after(DEMO_TIMEOUT):
        status = await demo(pcap_dir)
    if pcap_dir:
        say(f"captures: {pcap_dir} (one pcapng file per connection; docs in the README)")
    return status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m demo", description="make demo")
    parser.add_argument("--pcap", metavar="DIR",
                        help="capture every connection as pcapng into DIR (for Wireshark)")  # fmt: skip
    args = parser.parse_args(argv)
    setup_logging("warning")
    logging.getLogger("nvmeof").setLevel(logging.ERROR)  # the demo narrates events itself
    try:
        return trio.run(_bounded_demo, args.pcap)
    except* DemoFailure as group:
        say(f"demo: FAILED - {first_leaf(group)}")
    except* trio.TooSlowError:
        say(f"demo: FAILED - did not finish within {DEMO_TIMEOUT} s")
    except* OSError as group:
        say(f"demo: cannot start the target: {first_leaf(group)} "
            "(are ports 4420, 4421 and 8009 free?)")  # fmt: skip
    return 1


if __name__ == "__main__":
    sys.exit(main())
