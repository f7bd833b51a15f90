"""The async bodies of the ``nvmeof`` commands (argument parsing lives in :mod:`initiator.cli`)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable
from typing import Any

import trio

from initiator.bench import BenchOptions, BenchResult, Direction, run_bench
from initiator.controller import ControllerOptions
from initiator.host import Host, open_host
from initiator.multipath import Buckets, MultipathHead
from initiator.session import Session
from initiator.timeline import Timeline, read_step_log
from initiator.verify_state import REPORT_LIMIT, VerifyState, load_state, verify_only
from nvmeof.constants import DISCOVERY_PORT, IO_PORT, AnaState, Cns, DiscoverySubtype
from nvmeof.wire.identify import parse_identify_ns

log = logging.getLogger("nvmeof.initiator")
PERCENTILES = (1.0, 5.0, 10.0, 50.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.99)

#: nvme-cli's names for discovery log entry subtypes.
_SUBTYPES = {1: "referral", 2: "nvme subsystem", 3: "current discovery subsystem"}


def controller_options(args: argparse.Namespace) -> ControllerOptions:
    fast = args.fast_io_fail_tmo
    return ControllerOptions(
        hostnqn=args.hostnqn, kato_ms=int(args.keep_alive_tmo * 1000),
        io_queues=max(1, args.nr_io_queues), queue_size=max(2, args.queue_size),
        header_digest=args.hdr_digest, data_digest=args.data_digest,
        command_timeout=args.timeout, reconnect_delay=args.reconnect_delay,
        ctrl_loss_tmo=args.ctrl_loss_tmo, fast_io_fail_tmo=None if fast < 0 else fast,
        dhchap_secret=args.dhchap_secret, dhchap_ctrl_secret=args.dhchap_ctrl_secret,
        tls=args.tls, tls_key=args.tls_key, tls_identity_version=args.tls_identity_version,
        tls_psk_derivation=args.tls_psk_derivation, tls_r02_sha256=args.tls_r02_sha256,
    )  # fmt: skip


def dump_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=False))


def err(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


async def run(args: argparse.Namespace) -> int:
    handler = _COMMANDS[args.command]
    async with open_host(controller_options(args), iopolicy=args.iopolicy) as host:
        return await handler(host, args)


# -- connecting ------------------------------------------------------------------------------------


async def connect_paths(host: Host, args: argparse.Namespace) -> list[Session]:
    """Connect ``--path``s, or every discovered entry (filtered by ``-n``)."""
    if args.path:
        return [await host.connect(addr, port, args.nqn) for addr, port in args.path]
    sessions = []
    port = args.trsvcid or DISCOVERY_PORT
    for entry in await host.discover(args.traddr, port):
        if entry.subtype != DiscoverySubtype.NVME or (args.nqn and entry.subnqn != args.nqn):
            continue
        sessions.append(await host.connect_entry(entry))
    if not sessions:
        raise LookupError(f"no subsystem{' ' + args.nqn if args.nqn else ''} discovered at "
                          f"{args.traddr}:{port}")  # fmt: skip
    return sessions


def pick_head(host: Host, args: argparse.Namespace) -> MultipathHead:
    try:
        return host.namespace(args.nqn, args.namespace_id)
    except KeyError:
        raise LookupError(
            f"namespace {args.namespace_id} not found on the connected paths"
        ) from None


# -- discovery and listing -------------------------------------------------------------------------


async def cmd_discover(host: Host, args: argparse.Namespace) -> int:
    if args.path:
        addr, port = args.path[0]
    else:
        addr, port = args.traddr, args.trsvcid or DISCOVERY_PORT
    entries = await host.discover(addr, port)
    if args.output_format == "json":
        dump_json({"records": [
            {"trtype": "tcp", "adrfam": "ipv6" if e.adrfam == 2 else "ipv4",
             "subtype": _SUBTYPES.get(e.subtype, str(e.subtype)), "portid": e.portid,
             "trsvcid": e.trsvcid,
             "subnqn": e.subnqn, "traddr": e.traddr} for e in entries]})  # fmt: skip
        return 0
    print(f"Discovery Log Number of Records {len(entries)}")
    for i, e in enumerate(entries):
        print(f"=====Discovery Log Entry {i}======")
        print("trtype:  tcp")
        print(f"subtype: {_SUBTYPES.get(e.subtype, e.subtype)}")
        print(f"portid:  {e.portid}")
        print(f"trsvcid: {e.trsvcid}")
        print(f"subnqn:  {e.subnqn}")
        print(f"traddr:  {e.traddr}")
    return 0


def subsystems_view(host: Host) -> list[dict[str, Any]]:
    subsystems: dict[str, dict[str, Any]] = {}
    for session in host.sessions:
        sub = subsystems.setdefault(session.subnqn, {"nqn": session.subnqn, "paths": [],
                                                     "iopolicy": host.iopolicy})  # fmt: skip
        states = sorted({p.ana_state.label for p in session.paths.values()})
        sub["paths"].append({
            "name": f"nvme{host.sessions.index(session)}", "transport": "tcp",
            "address": f"traddr={session.addr},trsvcid={session.port}",
            "cntlid": session.cntlid, "state": session.state.value,
            "ana_state": ",".join(states) or "-",
        })  # fmt: skip
    return list(subsystems.values())


async def cmd_list_subsys(host: Host, args: argparse.Namespace) -> int:
    await connect_paths(host, args)
    view = subsystems_view(host)
    if args.output_format == "json":
        dump_json({"subsystems": view})
        return 0
    for sub in view:
        print(f"nvme-subsys - NQN={sub['nqn']}  iopolicy={sub['iopolicy']}")
        print("\\")
        for p in sub["paths"]:
            print(f" +- {p['name']} {p['transport']} {p['address']} cntlid={p['cntlid']} "
                  f"{p['state']} {p['ana_state']}")  # fmt: skip
    return 0


async def cmd_connect_all(host: Host, args: argparse.Namespace) -> int:
    sessions = await connect_paths(host, args)
    for sub in subsystems_view(host):
        for p in sub["paths"]:
            print(f"connected {sub['nqn']} {p['address']} cntlid={p['cntlid']} {p['ana_state']}",
                  flush=True)  # fmt: skip
    seen = {id(h): len(h.events) for h in host.heads.values()}
    deadline = trio.current_time() + args.duration if args.duration else float("inf")
    while trio.current_time() < deadline:
        await trio.sleep(min(0.2, max(0.0, deadline - trio.current_time())))
        for head in host.heads.values():
            start = seen.get(id(head), 0)
            for _, what in head.events[start:]:
                print(f"nsid {head.nsid}: {what}", flush=True)
            seen[id(head)] = len(head.events)
    del sessions
    return 0


# -- identify and logs -----------------------------------------------------------------------------


def _first_session(host: Host) -> Session:
    for session in host.sessions:
        if session.assoc is not None:
            return session
    raise LookupError("no controller connected")


async def cmd_id_ctrl(host: Host, args: argparse.Namespace) -> int:
    await connect_paths(host, args)
    for session in host.sessions:
        assert session.assoc is not None
        ident = session.assoc.identify
        fields = {
            k: v for k, v in ident.items() if not k.startswith("_") and k not in ("psd", "vs")
        }
        _print_fields(f"NVME Identify Controller {session.label}", fields, args.output_format)
    return 0


async def cmd_id_ns(host: Host, args: argparse.Namespace) -> int:
    await connect_paths(host, args)
    session = _first_session(host)
    assert session.assoc is not None
    raw = await session.assoc.identify_raw(Cns.NAMESPACE, args.namespace_id)
    ns = parse_identify_ns(raw)
    fields = {k: v for k, v in ns.items() if not k.startswith("_") and k not in ("lbaf", "vs")}
    fields["lbaf0"] = dict(ns.lbaf[0])
    _print_fields(f"NVME Identify Namespace {args.namespace_id}", fields, args.output_format)
    return 0


async def cmd_ana_log(host: Host, args: argparse.Namespace) -> int:
    await connect_paths(host, args)
    out: list[dict[str, Any]] = []
    for session in host.sessions:
        assert session.assoc is not None
        ana = await session.assoc.ana_log()
        groups = [{"grpid": g.grpid, "state": AnaState(g.state).label, "chgcnt": g.chgcnt,
                   "nsids": list(g.nsids)} for g in ana.groups]  # fmt: skip
        out.append({"path": session.label, "chgcnt": ana.chgcnt, "groups": groups})
    if args.output_format == "json":
        dump_json({"ana_logs": out})
        return 0
    for item in out:
        print(f"Asymmetric Namespace Access Log for {item['path']}: chgcnt {item['chgcnt']}")
        for g in item["groups"]:
            print(f"  grpid {g['grpid']}: {g['state']:14} nsids {g['nsids']} chgcnt {g['chgcnt']}")
    return 0


def _plain(value: Any) -> Any:
    """A parsed structure as JSON-ready values: bytes as hex, construct's ``_`` keys dropped."""
    if isinstance(value, bytes | bytearray):
        return value.hex()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items() if not str(k).startswith("_")}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _print_fields(title: str, fields: dict[str, Any], fmt: str) -> None:
    clean = _plain(fields)
    if fmt == "json":
        dump_json(clean)
        return
    print(title)
    for key, value in clean.items():
        print(f"{key:12}: {hex(value) if isinstance(value, int) and value > 9 else value}")


# -- read / write ----------------------------------------------------------------------------------


async def cmd_write(host: Host, args: argparse.Namespace) -> int:
    await connect_paths(host, args)
    head = pick_head(host, args)
    data = bytes([args.pattern & 0xFF]) * (args.blocks * head.block_size)
    await head.write(args.slba, data)
    print(f"wrote {args.blocks} blocks at LBA {args.slba} (pattern {args.pattern:#04x})")
    return 0


async def cmd_read(host: Host, args: argparse.Namespace) -> int:
    await connect_paths(host, args)
    head = pick_head(host, args)
    data = await head.read(args.slba, args.blocks)
    if args.data:
        await trio.Path(args.data).write_bytes(bytes(data))
    if args.verify:
        expected = bytes([args.pattern & 0xFF]) * len(data)
        if data != expected:
            bad = next(i for i, (a, b) in enumerate(zip(data, expected, strict=True)) if a != b)
            print(
                f"verify FAILED: first mismatch at byte {bad} (LBA {args.slba + bad // head.block_size})"
            )
            return 1
        print(f"read {args.blocks} blocks at LBA {args.slba}: pattern {args.pattern:#04x} verified")
    else:
        print(f"read {args.blocks} blocks at LBA {args.slba}")
    return 0


# -- bench -----------------------------------------------------------------------------------------


class LiveView:
    """Prints per-path IOPS, in-flight, requeues and state once a second (stderr)."""

    def __init__(self, head: MultipathHead, quiet: bool, out: Callable[[str], None] = err,
                 total: float = 0.0) -> None:  # fmt: skip
        self.head = head
        self.quiet = quiet
        self.out = out
        self.total = total  # seconds the run lasts, for the progress figure
        self.last = {id(p): p.stats.ios for p in head.paths}
        self.seen_events = len(head.events)
        self.samples: list[tuple[float, dict[str, int]]] = []

    def tick(self, elapsed: float) -> None:
        head = self.head
        parts = []
        sample = {}
        for path in head.paths:
            ios = path.stats.ios
            rate = ios - self.last.get(id(path), 0)
            self.last[id(path)] = ios
            sample[path.label] = rate
            parts.append(f"{path.label} {path.state}/{path.ana_state.label} iops={rate} "
                         f"inflight={path.inflight} failovers={path.stats.failovers}")  # fmt: skip
        self.samples.append((elapsed, sample))
        if self.quiet:
            return
        for _, what in head.events[self.seen_events :]:
            self.out(f"[{elapsed:5.1f}s] event: {what}")
        self.seen_events = len(head.events)
        progress = f"{elapsed:5.1f}s"
        if self.total:
            progress += f" {min(100, 100 * elapsed / self.total):3.0f}%"
        self.out(f"[{progress}] " + " | ".join(parts) + f" | requeued={head.stats.requeued} "
                 f"queued={head.queued}")  # fmt: skip


async def cmd_bench(host: Host, args: argparse.Namespace) -> int:
    state = None
    if args.verify_only:
        state = await trio.to_thread.run_sync(load_state, args.verify_state_load)
        if args.namespace_id not in (None, state.nsid):
            raise ValueError(f"{args.verify_state_load} is for namespace {state.nsid}, "
                             f"not {args.namespace_id}")  # fmt: skip
        args.namespace_id = state.nsid
    elif args.namespace_id is None:
        args.namespace_id = 1
    if args.metrics:
        from initiator.metrics import initiator_registry, serve_metrics

        addr, port = args.metrics
        bound = await host.nursery.start(serve_metrics, initiator_registry(host), addr, port)
        err(f"metrics: http://{addr}:{bound}/metrics")
    await connect_paths(host, args)
    head = pick_head(host, args)
    if state is not None:
        return await _verify_only(head, args, state)
    opts = BenchOptions(rw=args.rw, bs=args.bs, iodepth=args.iodepth, numjobs=args.numjobs,
                        runtime=args.runtime, size=args.size, verify=args.verify,
                        rwmixread=args.rwmixread, continue_on_error=args.continue_on_error,
                        verify_state_save=args.verify_state_save or "",
                        verify_state_interval=args.verify_state_interval, offset=args.offset,
                        offset_increment=args.offset_increment, engine=args.engine)  # fmt: skip
    view = LiveView(head, args.quiet or args.json, total=args.runtime)
    if not args.json:
        err(f"bench: {args.rw} bs={args.bs} iodepth={args.iodepth} numjobs={args.numjobs} "
            f"engine={args.engine} offset={args.offset} "
            f"runtime={args.runtime:g}s over {len(head.paths)} paths, iopolicy {head.iopolicy}")  # fmt: skip
    timeline = Timeline(head) if args.timeline else None
    async with trio.open_nursery() as sampler:
        if timeline is not None:
            sampler.start_soon(timeline.run)
        result = await run_bench(head, opts, view.tick)
        sampler.cancel_scope.cancel()
    if timeline is not None and args.events:
        # Read at the end: the scenario runner may have been writing it all along.
        try:
            steps = await trio.to_thread.run_sync(read_step_log, args.events)
        except ValueError as problem:
            err(f"events: {problem} (the timeline is drawn without them)")
        else:
            err(f"events: {timeline.add_steps(steps)} scenario steps from {args.events}")
    if timeline is not None:
        await trio.to_thread.run_sync(timeline.write, args.timeline)
        err(f"timeline: {args.timeline}")
    report = bench_report(head, opts, result)
    saved = result.verify_state
    if saved is not None:
        report["jobs"][0]["verify_state"] = {
            "file": opts.verify_state_save, "claimed": saved.claimed,
            "inflight": saved.inflight, "writes": saved.writes, "final": saved.final,
            "reason": saved.reason, "saves": result.verify_state_saves, "seed": f"{saved.seed:#x}",
        }  # fmt: skip
        err(f"verify state: {opts.verify_state_save}: {saved.claimed} blocks claimed, "
            f"{saved.inflight} with a write in flight (saved at the {saved.reason}, "
            f"{result.verify_state_saves} saves)")  # fmt: skip
    if args.json:
        dump_json(report)
    else:
        print_report(report)
    await _linger(args)
    return 0 if not result.errors and not result.verify_errors else 1


async def _linger(args: argparse.Namespace) -> None:
    """``--metrics-linger``: the run is over and reported; the metrics listener keeps serving
    its final values a while, so a scraper can compare them with the report."""
    if not (args.metrics and args.metrics_linger > 0):
        return
    sys.stdout.flush()
    err(f"metrics: final values served for {args.metrics_linger:g} s")
    await trio.sleep(args.metrics_linger)


async def _verify_only(head: MultipathHead, args: argparse.Namespace, state: VerifyState) -> int:
    """``bench --verify-only --verify-state-load FILE``: check every claimed block; one line
    per bad block on stderr (up to REPORT_LIMIT, then a count), status 1 on any."""
    if head.subnqn != state.nqn:
        err(f"verify: note: {args.verify_state_load} was saved on {state.nqn}, verifying "
            f"{head.subnqn}")  # fmt: skip
    if not args.json:
        err(f"verify-only: {args.verify_state_load} (saved {state.saved_at or '?'} at the "
            f"{state.reason or '?'}, {'final' if state.final else 'not final: newer accepted'}): "
            f"{state.claimed} blocks claimed in {len(state.jobs)} job(s), {state.inflight} "
            "with a write in flight")  # fmt: skip
    out = await verify_only(head, state, iodepth=args.iodepth, on_bad=err)
    if out.failed > REPORT_LIMIT:
        err(f"verify: ... and {out.failed - REPORT_LIMIT} more bad blocks not listed")
    opts = BenchOptions(rw="read", bs=state.bs, iodepth=args.iodepth, numjobs=len(state.jobs),
                        runtime=0, size=state.jobs[0].units * state.bs if state.jobs else 0,
                        verify=True)  # fmt: skip
    result = BenchResult(errors=out.io_errors, verify_errors=out.failed - out.io_errors,
                         elapsed=out.elapsed,
                         first_error=out.lines[0] if out.lines else "")  # fmt: skip
    result.read = Direction(ios=out.ios, bytes=out.bytes, lat=out.lat)
    report = bench_report(head, opts, result)
    job = report["jobs"][0]
    job["jobname"] = "nvmeof-verify-only"
    job["verify_state"] = {
        "file": args.verify_state_load, "final": state.final, "reason": state.reason,
        "saved_at": state.saved_at, "seed": f"{state.seed:#x}", "claimed": out.claimed,
        "verified": out.verified, "failed": out.failed, "inflight": out.inflight,
        "newer": out.newer, "io_errors": out.io_errors, "bad_blocks": out.lines,
    }  # fmt: skip
    if args.json:
        dump_json(report)
    else:
        print(f"verify: {out.verified} of {out.claimed} claimed blocks verified, {out.failed} bad "
              f"({out.inflight} had a write in flight, {out.newer} held a newer generation) "
              f"in {out.elapsed:.2f} s")  # fmt: skip
    return 1 if out.failed else 0


def _direction(d: Direction, elapsed: float) -> dict[str, Any]:
    lat = d.lat
    return {
        "io_bytes": d.bytes, "io_kbytes": d.bytes // 1024,
        "bw": int(d.bytes / 1024 / elapsed) if elapsed else 0,  # KiB/s, like fio
        "bw_bytes": int(d.bytes / elapsed) if elapsed else 0,
        "iops": d.ios / elapsed if elapsed else 0.0, "runtime": int(elapsed * 1000),
        "total_ios": d.ios,
        "lat_ns": {
            "min": lat.min_ns, "max": lat.max_ns, "mean": lat.mean_ns,
            "percentile": {f"{p:.6f}": lat.percentile(p) for p in PERCENTILES},
        },
    }  # fmt: skip


def bench_report(head: MultipathHead, opts: BenchOptions, result: BenchResult) -> dict[str, Any]:
    """fio's JSON shape (``jobs[0].read/write``), plus ``multipath`` and ``paths``."""
    stats = head.stats
    return {
        "fio version": "nvmeof-emu-0.1",
        "timestamp": int(time.time()),
        "jobs": [{
            "jobname": f"nvmeof-{opts.rw}", "groupid": 0,
            "error": 1 if result.errors or result.verify_errors else 0,
            "first_error": result.first_error, "verify_errors": result.verify_errors,
            "io_errors": result.errors, "errors_by_status": result.errors_by_status,
            "stopped_on_error": result.stopped_on_error, "elapsed": round(result.elapsed, 3),
            "job options": {"rw": opts.rw, "bs": str(opts.bs), "iodepth": str(opts.iodepth),
                            "numjobs": str(opts.numjobs), "runtime": str(opts.runtime),
                            "size": str(opts.size), "verify": "1" if opts.verify else "0",
                            "offset": str(opts.offset),
                            "offset_increment": str(opts.size if opts.offset_increment is None
                                                    else opts.offset_increment),
                            "ioengine": opts.engine},
            "read": _direction(result.read, result.elapsed),
            "write": _direction(result.write, result.elapsed),
        }],
        "multipath": {"failovers": stats.failovers, "requeued": stats.requeued,
                      "retries": stats.retries, "no_path_queued": stats.no_path_queued,
                      "failed": stats.failed, "path_losses": stats.path_losses,
                      "quiesce_held": stats.quiesce_held, "iopolicy": head.iopolicy,
                      "recovery_s": _seconds(head.failover_latency),
                      "detection_s": _seconds(head.detection_latency)},
        "paths": [{"addr": p.label, "cntlid": p.session.cntlid,
                   "ana_state": p.ana_state.label, "state": p.state,
                   "ios": result.path_ios.get(p.label, p.stats.ios), "bytes": p.stats.bytes,
                   "failovers": p.stats.failovers, "losses": p.stats.losses,
                   "reconnects": p.session.reconnects, "reconnected": p.session.reconnected}
                  for p in head.paths],
    }  # fmt: skip


def _seconds(hist: Buckets) -> dict[str, float]:
    """A histogram of seconds in the bench JSON: how many, their sum and the largest."""
    return {"count": hist.count, "sum": round(hist.sum, 6), "max": round(hist.largest, 6)}


def print_report(report: dict[str, Any]) -> None:
    job = report["jobs"][0]
    print(f"{job['jobname']}: (groupid=0, jobs={job['job options']['numjobs']}): "
          f"err={job['error']}")  # fmt: skip
    for name in ("read", "write"):
        d = job[name]
        if not d["total_ios"]:
            continue
        lat = d["lat_ns"]
        pct = lat["percentile"]
        print(
            f"  {name}: IOPS={d['iops']:.0f}, BW={d['bw_bytes'] / 1048576:.1f}MiB/s "
            f"({d['io_bytes'] / 1048576:.1f}MiB/{d['runtime']}msec)"
        )
        print(
            f"    lat (usec): min={lat['min'] / 1000:.0f}, max={lat['max'] / 1000:.0f}, "
            f"avg={lat['mean'] / 1000:.1f}"
        )
        print("    clat percentiles (usec): " + ", ".join(
            f"{float(k):g}th=[{v / 1000:.0f}]" for k, v in pct.items()
            if float(k) in (50.0, 90.0, 99.0, 99.9)))  # fmt: skip
    if job["first_error"]:
        stopped = " (the run stopped there: --continue-on-error to go on)"
        print(f"  first error: {job['first_error']}{stopped if job['stopped_on_error'] else ''}")
        print("  errors: " + ", ".join(f"{n} x {s}" for s, n in job["errors_by_status"].items()))
    mp = report["multipath"]
    print(
        f"  multipath ({mp['iopolicy']}): failovers={mp['failovers']} requeued={mp['requeued']} "
        f"retries={mp['retries']} no_path_queued={mp['no_path_queued']} failed={mp['failed']} "
        f"path_losses={mp['path_losses']} quiesce_held={mp['quiesce_held']}"
    )
    for kind in ("detection_s", "recovery_s"):
        if mp[kind]["count"]:
            print(f"  {kind[:-2]}: {mp[kind]['count']} x, max {mp[kind]['max']:.3f} s")
    for p in report["paths"]:
        print(f"  path {p['addr']} cntlid={p['cntlid']} {p['state']}/{p['ana_state']}: "
              f"ios={p['ios']} bytes={p['bytes']} failovers={p['failovers']} "
              f"losses={p['losses']} reconnects={p['reconnected']}/{p['reconnects']}")  # fmt: skip


_COMMANDS = {
    "discover": cmd_discover,
    "connect-all": cmd_connect_all,
    "list-subsys": cmd_list_subsys,
    "id-ctrl": cmd_id_ctrl,
    "id-ns": cmd_id_ns,
    "ana-log": cmd_ana_log,
    "read": cmd_read,
    "write": cmd_write,
    "bench": cmd_bench,
}

__all__ = ["IO_PORT", "run"]
