"""NVMe reservations of nvmeof-target, driven by the Linux kernel's NVMe/TCP host and nvme-cli's
``resv-*`` commands as two hosts (../shared/linuxvm: Linux 6.1 + nvme-cli 2.3, or with
``LINUXVM_RELEASE=trixie`` Linux 6.12 + nvme-cli 2.13).

The target runs in this test's Trio loop (``nvmeof_emu.running_target``): one subsystem with a
64 MiB RAM namespace (reservations on, the default), any host allowed, on two ports. The guest
(tests/interop/guest/reservations.sh) boots with ``nvme_core.multipath=N`` so that every
controller has its own /dev/nvmeXnY, and connects twice: host A (its own host NQN and Host ID)
through port 1, host B through port 2. It then runs one command per step and the test judges
each answer (:func:`expected_steps`, :data:`ACCESS`, :func:`expected_reports`):

* Register (A key 0xA1, B key 0xB2); again with the same key (success), with another key
  (Reservation Conflict); Replace with CRKEY, with a stale CRKEY (conflict), with IEKEY;
  Unregister with a wrong key (conflict) and the right one.
* Acquire of each of the six types by A, Acquire by B meanwhile (conflict, except for the All
  Registrants types where B, a registrant, is a holder too), then a write and a read from B
  while registered and while unregistered, refused exactly where the spec's table says
  (:data:`ACCESS`), the holder A's write and read (always allowed); for Exclusive Access also
  ``dd`` with O_DIRECT through the block layer (the kernel maps the conflict to EBADE);
  Release with the wrong type (conflict) and the right one.
* Preempt (B takes A's reservation by A's key: A's registration is gone, its write conflicts),
  Preempt and Abort (A back, Exclusive Access: B's write and read conflict), Clear (a wrong key
  conflicts; afterwards nobody is registered and B writes).
* Report: ``nvme resv-report --eds -o json`` parses (generation, type, registrants with the
  Host IDs given to ``nvme connect`` and their keys, the holder's RCSTS); without ``--eds``
  nvme-cli 2.3 is answered Host Identifier Inconsistent Format (0x18), as over Fabrics it must
  be, while nvme-cli 2.13 asks for the extended report by itself (Identify CTRATT bit 0) and
  parses it.
* A's Exclusive Access reservation (and both registrations, same generation) holds across
  ``nvme reset`` of A's controller and across a killed path: once the guest says so, the test
  takes port 1 down (TCP RST) through the control API, waits, brings it up; the guest waits for
  A's controller to leave "live" and to be live again (a new association), then B's write and
  read still conflict and A still writes and reads.

Every refusal is matched on nvme-cli's status line: the status name (both nvme-cli versions
print "Reservation Conflict" / "Host Identifier Inconsistent Format") and the code in the
status word it prints (SC 0x83 resp. 0x18, SCT 0, and for a conflict DNR). The guest's whole
transcript is echoed as it runs (shown by pytest on failure) and kept in vm.log.

One VM boot, under a minute under TCG.

A second test, trixie only (blkpr is util-linux 2.39+; Debian 12 has 2.38), boots a guest with
util-linux-extra (``LINUXVM_EXTRA_PACKAGES``: built once, one package downloaded) and drives the
same two hosts through the kernel's own reservation code instead of nvme-cli's passthrough:
the block layer's PR ioctls (drivers/nvme/host/pr.c, which asks for CPTPL "persist" on every
register and maps 0x83 to PR_STS_RESERVATION_CONFLICT) via ``blkpr``. About 20 s.
"""

from __future__ import annotations

import faulthandler
import os
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio
from interop_harness import (
    GUEST_DIR,
    GUEST_HOST_IP,
    GuestRun,
    LinuxVM,
    Step,
    StreamingVM,
    tail,
)

from nvmeof_emu import running_target

pytestmark = pytest.mark.interop

NQN = "nqn.2026-12.io.nvmeof-emu:resv"
HOST_A = ("nqn.2014-08.org.nvmexpress:uuid:a1a1a1a1-0000-4000-8000-0000000000a1",
          "a1a1a1a1-0000-4000-8000-0000000000a1")  # fmt: skip
HOST_B = ("nqn.2014-08.org.nvmexpress:uuid:b2b2b2b2-0000-4000-8000-0000000000b2",
          "b2b2b2b2-0000-4000-8000-0000000000b2")  # fmt: skip
KEY_A, KEY_B = 0xA1, 0xB2
CONNECT_ARGS = "-k 2 -c 1 -l 60"  # keep-alive 2 s, reconnect delay 1 s, ctrl-loss-tmo 60 s
VM_TIMEOUT = 300  # s, `run -t`: bounds QEMU whatever happens
BOOT_TIMEOUT = 150.0  # s from `run` until both hosts are connected
STEPS_TIMEOUT = 180.0  # s from then until the guest asks for the port kill
DOWN_FOR = 3.0  # s port 1 stays down (the kernel's reconnects are refused meanwhile)
BACK_TIMEOUT = 90.0  # s from port up until the guest has seen host A live again
END_TIMEOUT = 120.0  # s from then until the VM has powered off

#: Two ports (free TCP ports, advertised as the guest sees the host), one subsystem on both.
CONFIG: dict[str, Any] = {
    "subsystem": [{"nqn": NQN, "allow_any_host": True,
                   "namespace": [{"nsid": 1, "size": "64MiB", "block_size": 512}]}],
    "port": [{"id": pid, "port": 0, "advertise": GUEST_HOST_IP, "subsystems": [NQN]}
             for pid in (1, 2)],
}  # fmt: skip

OK, CONFLICT, HOSTID_FORMAT, EBADE = "ok", "conflict", "hostid-format", "EBADE"
PR_CONFLICT = "PR_STS_RESERVATION_CONFLICT"  # what the kernel's PR ioctls return for 0x83
BLKPR_PACKAGES = "util-linux-extra"  # blkpr, for the guest (LINUXVM_EXTRA_PACKAGES)
BUILD_TIMEOUT = 600  # s to build that guest (the first time: download one package)

#: The spec's "Command Behavior in the Presence of a Reservation", for a host that is not the
#: holder: type -> ((write, read) while registered, (write, read) while not registered).
ACCESS: dict[int, tuple[tuple[str, str], tuple[str, str]]] = {
    1: ((CONFLICT, OK), (CONFLICT, OK)),  # Write Exclusive
    2: ((CONFLICT, CONFLICT), (CONFLICT, CONFLICT)),  # Exclusive Access
    3: ((OK, OK), (CONFLICT, OK)),  # Write Exclusive - Registrants Only
    4: ((OK, OK), (CONFLICT, CONFLICT)),  # Exclusive Access - Registrants Only
    5: ((OK, OK), (CONFLICT, OK)),  # Write Exclusive - All Registrants
    6: ((OK, OK), (CONFLICT, CONFLICT)),  # Exclusive Access - All Registrants
}
ALL_REGISTRANTS = (5, 6)


def asks_eds_by_itself(nvme_cli: str) -> bool:
    """nvme-cli 2.12 and later read Identify CTRATT and ask for the extended report when bit 0
    (128-bit Host IDs) is set (nvme.c resv_report, commit 7057e6c "set eds to true if
    controller supports 128 bit hostid"); 2.3 sends what it is told."""
    try:
        major, minor = (int(part) for part in nvme_cli.split(".")[:2])
    except ValueError:
        return False
    return (major, minor) >= (2, 12)


def expected_steps(nvme_cli: str = "") -> dict[str, str]:
    """Every guest step (tests/interop/guest/reservations.sh) -> the answer it must get. A
    Report without --eds is refused with Host Identifier Inconsistent Format (over Fabrics the
    Host ID is 128 bits), unless nvme-cli asks for EDS by itself as our CTRATT tells it to."""
    want = {
        "connect-a": OK, "connect-b": OK,
        "reg-a": OK, "reg-a-same": OK, "reg-a-other": CONFLICT, "reg-b": OK,
        "report-noeds": OK if asks_eds_by_itself(nvme_cli) else HOSTID_FORMAT,
        "report-registered": OK,
        "replace-a": OK, "replace-a-stale": CONFLICT, "replace-a-iekey": OK,
        "unreg-b-wrong": CONFLICT, "unreg-b": OK, "report-unregistered": OK, "reg-b-again": OK,
    }  # fmt: skip
    for t, ((w_reg, r_reg), (w_unreg, r_unreg)) in ACCESS.items():
        want |= {
            f"acq-a-t{t}": OK,
            # A holder acquiring the type it holds succeeds (spec); of an All Registrants
            # reservation every registrant is a holder (spec, SPDK). nvmet 6.13+ refuses B
            # there (only the registrant it points at is its holder): Reservations.acquire.
            f"acq-b-t{t}": OK if t in ALL_REGISTRANTS else CONFLICT,
            f"report-t{t}": OK,
            f"a-write-t{t}": OK, f"a-read-t{t}": OK,
            f"b-write-reg-t{t}": w_reg, f"b-read-reg-t{t}": r_reg,
            f"unreg-b-t{t}": OK,
            f"b-write-unreg-t{t}": w_unreg, f"b-read-unreg-t{t}": r_unreg,
            f"reg-b-t{t}": OK,
            f"rel-a-wrongtype-t{t}": CONFLICT, f"rel-a-t{t}": OK, f"report-released-t{t}": OK,
        }  # fmt: skip
    want |= {"b-ddwrite-reg-t2": EBADE, "b-ddread-reg-t2": EBADE}
    want |= {
        "pre-acq-a": OK, "pre-b": OK, "report-preempted": OK,
        "pre-a-write": CONFLICT, "pre-a-read": OK, "pre-a-acq": CONFLICT, "pre-reg-a": OK,
        "abort-a": OK, "report-aborted": OK, "abort-b-write": CONFLICT, "abort-b-read": CONFLICT,
        "clear-reg-b": OK, "clear-b-wrong": CONFLICT, "clear-b": OK, "report-cleared": OK,
        "clear-b-write": OK,
        "hold-reg-a": OK, "hold-reg-b": OK, "hold-acq-a": OK, "report-held": OK,
        "reset-a": OK, "reset-a-live": OK, "report-reset": OK,
        "reset-b-write": CONFLICT, "reset-b-read": CONFLICT, "reset-a-write": OK,
        "kill-a-down": OK, "kill-a-live": OK, "report-killed": OK,
        "kill-b-write": CONFLICT, "kill-b-read": CONFLICT, "kill-a-write": OK, "kill-a-read": OK,
        "disconnect": OK,
    }  # fmt: skip
    return want


#: A registrant in a report: (key, holder).
Regs = dict[str, tuple[int, bool]]


def expected_reports() -> dict[str, tuple[int, Regs]]:
    """Report step -> (reservation type, registrants by Host ID)."""
    a, b = HOST_A[1], HOST_B[1]
    both: Regs = {a: (KEY_A, False), b: (KEY_B, False)}
    want: dict[str, tuple[int, Regs]] = {
        "report-registered": (0, both),
        "report-unregistered": (0, {a: (KEY_A, False)}),
        "report-preempted": (1, {b: (KEY_B, True)}),
        "report-aborted": (2, {a: (KEY_A, True)}),
        "report-cleared": (0, {}),
    }
    for t in ACCESS:
        want[f"report-t{t}"] = (t, {a: (KEY_A, True), b: (KEY_B, t in ALL_REGISTRANTS)})
        want[f"report-released-t{t}"] = (0, both)
    for name in ("report-held", "report-reset", "report-killed"):
        want[name] = (2, {a: (KEY_A, True), b: (KEY_B, False)})
    return want


#: nvme-cli's status line, both versions: "NVMe status: <Name>: <text>(0x<status word>)".
STATUS_LINE = re.compile(r"NVMe status: (?P<text>.*)\(0x(?P<word>[0-9a-fA-F]+)\)\s*$", re.M)
KERNEL_TROUBLE = re.compile(r"Call Trace|WARNING:|BUG:")
DNR = 0x4000  # in the status word nvme-cli prints (the CQE status field without the phase tag)


def outcome(step: Step) -> str:
    """What a step got: ok, conflict, hostid-format, EBADE, or a description of anything else."""
    if step.rc == 0:
        return OK
    if "Invalid exchange" in step.output:  # EBADE: the block layer's BLK_STS_RESV_CONFLICT
        return EBADE
    if re.search(r"^blkpr: error code 0x18\b", step.output, re.M):  # <linux/pr.h> PR_STS_*
        return PR_CONFLICT
    match = STATUS_LINE.search(step.output)
    if match is None:
        return f"rc={step.rc}, no NVMe status"
    word, text = int(match["word"], 16), match["text"]
    code = word & 0x7FF  # SCT and SC
    if code == 0x083 and re.search(r"reservation[ _]conflict", text, re.I):
        return CONFLICT if word & DNR else f"conflict without DNR (0x{word:04x})"
    if code == 0x018 and re.search(r"host[ _]identifier[ _]inconsistent", text, re.I):
        return HOSTID_FORMAT
    return f"status 0x{word:04x} ({text.strip()})"


def report_problems(run: GuestRun, name: str, rtype: int, regs: Regs) -> list[str]:
    """What is wrong with the JSON of report step ``name``."""
    try:
        data = run.step(name).json()
        got_regs = {e["hostid"]: (e["rkey"], bool(e["rcsts"] & 1)) for e in data["regctlext"]}
    except (AssertionError, ValueError, KeyError, TypeError) as error:
        return [f"{name}: no parsable report: {error!r}"]
    want_regs = {hostid.replace("-", ""): value for hostid, value in regs.items()}
    problems = []
    if data["rtype"] != rtype:
        problems.append(f"{name}: rtype {data['rtype']}, expected {rtype}")
    if data["regctl"] != len(regs):
        problems.append(f"{name}: regctl {data['regctl']}, expected {len(regs)}")
    if got_regs != want_regs:
        problems.append(f"{name}: registrants (hostid: (rkey, holder)) {got_regs}, "
                        f"expected {want_regs}")  # fmt: skip
    return problems


def expected_blkpr_steps() -> dict[str, str]:
    """The SECTIONS=blkpr steps (the kernel's PR ioctls) -> the answer each must get."""
    return {
        "connect-a": OK, "connect-b": OK,
        "pr-reg-a": OK, "pr-reg-b": OK, "pr-report-registered": OK,
        "pr-reserve-a": OK, "pr-reserve-b": PR_CONFLICT,
        "pr-b-ddwrite": EBADE, "pr-b-ddread": EBADE,
        "pr-release-a-wrongtype": PR_CONFLICT, "pr-report-reserved": OK,
        "pr-preempt-b": OK, "pr-report-preempted": OK, "pr-a-ddwrite": EBADE,
        "pr-reg-a-again": OK, "pr-preempt-abort-a": OK, "pr-report-aborted": OK,
        "pr-replace-a": OK, "pr-release-a": OK, "pr-reg-b-again": OK,
        "pr-report-released": OK, "pr-clear-a": OK, "pr-report-cleared": OK,
        "pr-b-ddwrite-cleared": OK, "disconnect": OK,
    }  # fmt: skip


def expected_blkpr_reports() -> dict[str, tuple[int, Regs]]:
    a, b = HOST_A[1], HOST_B[1]
    return {
        "pr-report-registered": (0, {a: (KEY_A, False), b: (KEY_B, False)}),
        "pr-report-reserved": (2, {a: (KEY_A, True), b: (KEY_B, False)}),
        "pr-report-preempted": (1, {b: (KEY_B, True)}),
        "pr-report-aborted": (2, {a: (KEY_A, True)}),
        "pr-report-released": (0, {a: (0xA9, False), b: (KEY_B, False)}),
        "pr-report-cleared": (0, {}),
    }


def judge(run: GuestRun, steps: dict[str, str], reports: dict[str, tuple[int, Regs]]) -> list[str]:
    """Every answer of the run that is not as expected, with the guest's output."""
    problems = []
    for name, want in steps.items():
        if name not in run.steps:
            problems.append(f"{name}: not run (expected {want})")
            continue
        got = outcome(run.steps[name])
        if got != want:
            output = run.steps[name].output.strip().replace("\n", "\n      ")
            problems.append(f"{name}: {got}, expected {want}\n      {output}")
    for name, (rtype, regs) in reports.items():
        problems += report_problems(run, name, rtype, regs)
    # The block layer got BLK_STS_RESV_CONFLICT for B's dd: 6.1 names it "critical nexus
    # error", 6.12 "reservation conflict error".
    dev_b = next((i["dev_b"] for i in run.infos("dev_b")), "?")
    dmesg = run.steps["dmesg-nvme"].output if "dmesg-nvme" in run.steps else ""
    for op in ("WRITE", "READ"):
        if not re.search(rf"(critical nexus|reservation conflict) error, dev {dev_b}, sector 0 "
                         rf"op 0x\d:\({op}\)", dmesg):  # fmt: skip
            problems.append(f"dmesg: no reservation conflict logged for {dev_b}'s dd {op}")
    problems += [f"dmesg: {line}" for line in dmesg.splitlines() if KERNEL_TROUBLE.search(line)]
    return problems


def generation_problems(run: GuestRun) -> list[str]:
    """Neither the reset nor the reconnect after the killed path changed anything (no command
    changed the reservation meanwhile, so the generation stays)."""
    problems, gens = [], {}
    for name in ("report-held", "report-reset", "report-killed"):
        try:
            gens[name] = run.step(name).json()["gen"]
        except (AssertionError, ValueError, KeyError) as error:
            problems.append(f"{name}: no generation: {error!r}")
    if len(set(gens.values())) > 1:
        problems.append(f"generation changed across reset/path kill: {gens}")
    return problems


def start_vm(linuxvm: LinuxVM, ports: dict[int, Any], tmp_path: Path, sections: str) -> StreamingVM:
    """The guest script for ``sections``, host A on port 1, host B on port 2 (not started)."""
    env = {
        "NQN": NQN, "ADDR": GUEST_HOST_IP, "PORT_A": str(ports[1][1]),
        "PORT_B": str(ports[2][1]), "HOSTNQN_A": HOST_A[0], "HOSTID_A": HOST_A[1],
        "HOSTNQN_B": HOST_B[0], "HOSTID_B": HOST_B[1], "KEY_A": hex(KEY_A),
        "KEY_B": hex(KEY_B), "CONNECT_ARGS": CONNECT_ARGS, "SECTIONS": sections,
    }  # fmt: skip
    argv = [str(linuxvm.run_path), "-t", str(VM_TIMEOUT), "-k", "nvme_core.multipath=N",
            "--console-log", str(tmp_path / "console.log")]  # fmt: skip
    for key, value in env.items():
        argv += ["-e", f"{key}={value}"]
    return StreamingVM([*argv, str(GUEST_DIR / "reservations.sh")], tmp_path / "vm.log",
                       name=f"resv-{sections}")  # fmt: skip


def check_run(run: GuestRun, problems: list[str], tmp_path: Path) -> dict[str, str]:
    """Asserts the run went as expected; returns its INFO values."""
    transcript = f"\n--- guest transcript: {tmp_path / 'vm.log'}\n{run.context()}"
    info = {k: v for line in run.info for k, v in line.items()}
    assert info.get("multipath") == "N", f"nvme_core.multipath is not N: {info}{transcript}"
    assert run.steps, f"the guest ran no step{transcript}"
    # Reservations supported (ONCS bit 5), all six types and IEKEY as of NVMe 1.3 (RESCAP, as
    # nvmet 6.13+ advertises them).
    assert int(info.get("oncs", "0"), 16) & 0x20, f"ONCS without reservations: {info}"
    assert int(info.get("rescap", "0"), 16) == 0xFE, f"RESCAP: {info}"
    assert not problems, (f"{len(problems)} of the kernel host's answers were not as expected "
                          f"(Linux {info.get('kernel')}, nvme-cli {info.get('nvme_cli')}):\n"
                          + "\n".join(problems) + transcript)  # fmt: skip
    assert run.rc == 0, run.context()
    return info


def ctratt_note(info: dict[str, str]) -> str:
    """Identify Controller CTRATT as nvmet gives it (6.1, 6.12: 0x41): bit 0, the 128-bit Host
    Identifier, and bit 6, traffic-based keep-alive."""
    ctratt = int(info.get("ctratt", "0"), 16)
    assert ctratt == 0x41, f"CTRATT {ctratt:#x}, nvmet gives 0x41"
    return f"CTRATT {ctratt:#x}"


async def test_kernel_host_reservations_two_hosts(
    linuxvm: LinuxVM, interop_figures: Callable[[str], None], tmp_path: Path
) -> None:
    release = os.environ.get("LINUXVM_RELEASE", "bookworm")
    faulthandler.cancel_dump_traceback_later()  # every wait below is bounded on its own
    async with running_target(CONFIG) as target, trio.open_nursery() as nursery:
        vm = start_vm(linuxvm, target.ports, tmp_path, "nvme-cli")
        nursery.start_soon(vm.run)
        await vm.wait_marker("RESV-READY", BOOT_TIMEOUT)
        await vm.wait_marker("RESV-PORTKILL", STEPS_TIMEOUT)
        async with target.path_down(1, "reset") as affected:
            print(f"  resv| port 1 down (reset): {affected} connection(s)", flush=True)
            await trio.sleep(DOWN_FOR)
        up_at = trio.current_time()
        print("  resv| port 1 up", flush=True)
        back_at, back = await vm.wait_marker("RESV-PATH-BACK", BACK_TIMEOUT)
        await vm.wait_marker("RESV-DONE", END_TIMEOUT)
        with trio.fail_after(60):
            await vm.exited.wait()
    run = vm.result()

    nvme_cli = next((i["nvme_cli"] for i in run.infos("nvme_cli")), "")
    steps = expected_steps(nvme_cli)
    problems = judge(run, steps, expected_reports()) + generation_problems(run)
    info = check_run(run, problems, tmp_path)
    assert affected >= 1, "port 1 down touched no connection: host A was not on port 1"
    assert back.endswith("rc=0"), back
    # Each reset and reconnect made host A a new controller, which still holds what A held.
    cntlid = {i["phase"]: i["cntlid"] for i in run.infos("phase") if "cntlid" in i}
    assert len(set(cntlid.values())) == 3, f"host A's controller IDs: {cntlid}"
    cntlids = [f"{phase}:{value}" for phase, value in cntlid.items()]
    interop_figures(
        f"reservations ({release}, Linux {info.get('kernel')}, nvme-cli {info.get('nvme_cli')}): "
        f"{len(run.steps)} guest steps in {run.duration:.0f} s; host A live again "
        f"{back_at - up_at:.1f} s after port up; host A's cntlid {' '.join(cntlids)}; "
        + ctratt_note(info)
    )


@pytest.fixture
def blkpr_guest(linuxvm: LinuxVM, monkeypatch: pytest.MonkeyPatch) -> None:
    """The guest with util-linux-extra (blkpr) for this test's `run`, built now; skips with
    the reason where it cannot be built (a sync fixture: an async test's skip loses its
    reason under pytest-trio)."""
    monkeypatch.setenv("LINUXVM_EXTRA_PACKAGES", BLKPR_PACKAGES)
    build = linuxvm.run_path.parent / "build"
    try:
        result = subprocess.run([str(build), "--quiet"], stdin=subprocess.DEVNULL,
                                capture_output=True, text=True, errors="replace",
                                timeout=BUILD_TIMEOUT, check=False)  # fmt: skip
    except subprocess.TimeoutExpired:
        pytest.skip(f"linuxvm: no guest with {BLKPR_PACKAGES} within {BUILD_TIMEOUT} s")
    if result.returncode != 0:
        pytest.skip(f"linuxvm: no guest with {BLKPR_PACKAGES} (build rc {result.returncode}):\n"
                    + tail(result.stdout + result.stderr, 10))  # fmt: skip


@pytest.mark.skipif(os.environ.get("LINUXVM_RELEASE", "bookworm") == "bookworm",
                    reason="blkpr needs util-linux 2.39 or later: Debian 12 has 2.38 (trixie "
                    "2.41: LINUXVM_RELEASE=trixie)")  # fmt: skip
async def test_kernel_pr_ioctls_blkpr_two_hosts(
    linuxvm: LinuxVM,
    interop_figures: Callable[[str], None],
    tmp_path: Path,
    blkpr_guest: None,
) -> None:
    """The kernel's own reservation code (block layer PR ioctls -> drivers/nvme/host/pr.c),
    driven by util-linux's blkpr: register, reserve, conflicts (PR_STS_RESERVATION_CONFLICT,
    EBADE for I/O), release, preempt, preempt and abort, replace, clear."""
    release = os.environ.get("LINUXVM_RELEASE", "bookworm")
    faulthandler.cancel_dump_traceback_later()
    async with running_target(CONFIG) as target, trio.open_nursery() as nursery:
        vm = start_vm(linuxvm, target.ports, tmp_path, "blkpr")
        nursery.start_soon(vm.run)
        await vm.wait_marker("RESV-READY", BOOT_TIMEOUT)
        await vm.wait_marker("RESV-DONE", STEPS_TIMEOUT)
        with trio.fail_after(60):
            await vm.exited.wait()
    run = vm.result()
    info = check_run(run, judge(run, expected_blkpr_steps(), expected_blkpr_reports()), tmp_path)
    interop_figures(f"reservations via blkpr ({release}, Linux {info.get('kernel')}): "
                    f"{len(run.steps)} guest steps in {run.duration:.0f} s")  # fmt: skip
