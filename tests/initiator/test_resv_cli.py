"""``nvmeof resv-register/-acquire/-release/-report`` end to end against an in-process target:
nvme-cli's flags, its report text and JSON (golden), its ``NVMe status:`` line and a non-zero
exit for a refused command, and one-line errors for bad arguments.

``main()`` runs ``trio.run`` itself, so each call goes to a worker thread while the target
serves from the test's event loop (as tests/initiator/test_cli.py does).
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from initiator.cli import main
from target.config import DEMO_NQN, default_config, with_free_ports
from target.daemon import Target

HOST_A = "nqn.2014-08.org.nvmexpress:uuid:aaaaaaaa-0000-4000-8000-00000000000a"
HOST_B = "nqn.2014-08.org.nvmexpress:uuid:bbbbbbbb-0000-4000-8000-00000000000b"
#: The Host ID our host sends for a given host NQN (ControllerOptions derives it).
HOSTID_A = uuid.uuid5(uuid.NAMESPACE_URL, HOST_A).hex
CONFLICT = ("NVMe status: Reservation Conflict: The command was aborted due to a conflict with "
            "a reservation held on the accessed namespace(0x4083)")  # fmt: skip


@pytest.fixture
async def target(nursery: trio.Nursery) -> AsyncIterator[Target]:
    served: Target = await nursery.start(Target(with_free_ports(default_config())).serve)
    yield served
    served.stop()


async def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    with trio.fail_after(60):
        code = await trio.to_thread.run_sync(main, list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def via(target: Target, hostnqn: str = HOST_A) -> list[str]:
    """Both paths of the demo subsystem, as host ``hostnqn``."""
    ports = [f"127.0.0.1:{target.ports[pid].bound_port}" for pid in (1, 2)]
    return ["--path", ports[0], "--path", ports[1], "--nqn", DEMO_NQN, "-q", hostnqn]


GOLDEN_TEXT = f"""
NVME Reservation status:

gen       : 1
rtype     : 1
regstrnt  : 1
ptpls     : 0
registrantext[0] :
  cntlid     : ffff
  rcsts      : 1
  rkey       : abc
  hostid     : {HOSTID_A}

"""

GOLDEN_JSON = {
    "gen": 1,
    "rtype": 1,
    "regstrnt": 1,
    "ptpls": 0,
    "registrantext": [{"cntlid": 65535, "rcsts": 1, "rkey": 0xABC, "hostid": HOSTID_A}],
}


async def test_register_acquire_report_release(target: Target,
                                               capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    code, out, err = await run(capsys, "resv-register", *via(target), "-n", "1", "-k", "0xabc")
    assert (code, out, err) == (0, "", "")  # nvme-cli is silent unless -v
    code, out, _ = await run(capsys, "resv-acquire", *via(target), "-c", "0xabc", "-t", "1",
                             "-a", "0", "-v")  # fmt: skip
    assert (code, out) == (0, "NVME Reservation Acquire success\n")

    code, out, err = await run(capsys, "resv-report", *via(target), "-e")
    assert code == 0, err
    assert out == GOLDEN_TEXT
    code, out, _ = await run(capsys, "resv-report", *via(target), "--eds", "-o", "json")
    assert code == 0 and json.loads(out) == GOLDEN_JSON
    assert list(json.loads(out)) == list(GOLDEN_JSON)  # nvme-cli's key order

    # -d 15: 64 bytes, the header alone (regstrnt still counts everyone)
    code, out, _ = await run(capsys, "resv-report", *via(target), "-e", "-d", "15", "-o", "json")
    assert code == 0 and json.loads(out) == {**GOLDEN_JSON, "registrantext": []}

    code, out, _ = await run(capsys, "resv-release", *via(target), "-c", "0xabc", "-t", "1",
                             "--rrela", "0", "--verbose")  # fmt: skip
    assert (code, out) == (0, "NVME Reservation Release success\n")
    code, out, _ = await run(capsys, "resv-register", *via(target), "--crkey", "0xabc",
                             "--rrega", "1", "-v")  # fmt: skip
    assert (code, out) == (0, "NVME Reservation success\n")
    code, out, _ = await run(capsys, "resv-report", *via(target), "-e", "-o", "json")
    assert json.loads(out) == {"gen": 2, "rtype": 0, "regstrnt": 0, "ptpls": 0,
                               "registrantext": []}  # fmt: skip


async def test_a_refused_command_prints_nvme_clis_status_line(
    target: Target, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (await run(capsys, "resv-register", *via(target), "-k", "1"))[0] == 0
    assert (await run(capsys, "resv-acquire", *via(target), "-c", "1", "-t", "1"))[0] == 0
    assert (await run(capsys, "resv-register", *via(target, HOST_B), "-k", "2"))[0] == 0

    code, out, err = await run(capsys, "resv-acquire", *via(target, HOST_B), "-c", "2", "-t", "1")
    assert code == 1 and out == ""
    assert err == f"nvmeof resv-acquire: {CONFLICT}\n"
    code, _, err = await run(capsys, "resv-release", *via(target, HOST_B), "-c", "7", "-t", "1")
    assert code == 1 and err == f"nvmeof resv-release: {CONFLICT}\n"

    # a write of the non-holder fails through the same head with the same status
    code, _, err = await run(capsys, "write", *via(target, HOST_B), "--blocks", "1")
    assert code != 0 and "RESERVATION_CONFLICT" in err


async def test_report_without_eds_where_the_controller_claims_128_bit_host_ids(
    target: Target, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = await run(capsys, "resv-report", *via(target), "-o", "json")
    assert code == 0, err
    assert json.loads(out)["registrantext"] == []


async def test_report_as_a_separate_process(target: Target) -> None:
    """The console entry point's way: a real process, JSON or the raw data on stdout."""
    argv = [sys.executable, "-m", "initiator.cli", "resv-report", *via(target), "-e"]

    def report(*more: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run([*argv, *more], capture_output=True, timeout=30,
                              cwd=Path(__file__).resolve().parents[2], check=False)  # fmt: skip

    with trio.fail_after(60):
        as_json = await trio.to_thread.run_sync(report, "-o", "json")
        raw = await trio.to_thread.run_sync(report, "-b", "-d", "31")
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout) == {"gen": 0, "rtype": 0, "regstrnt": 0, "ptpls": 0,
                                          "registrantext": []}  # fmt: skip
    assert raw.returncode == 0, raw.stderr
    assert raw.stdout == bytes(128)  # (31 + 1) dwords: an empty report's header and zeros


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["resv-acquire", "--traddr", "x", "-a", "8"], "invalid racqa:8"),
        (["resv-release", "--traddr", "x", "-a", "9"], "invalid rrela:9"),
        (["resv-register", "--traddr", "x", "-r", "8"], "invalid rrega:8"),
        (["resv-register", "--traddr", "x", "-p", "4"], "invalid cptpl:4"),
        (["resv-register", "--traddr", "x", "-k", "key"], "not a number: 'key'"),
        (["resv-register", "--traddr", "x", "-c", str(1 << 64)], "a reservation key must be"),
        (["resv-acquire", "--traddr", "x", "-t", "256"], "a byte must be 0..255"),
        (["resv-report"], "give --traddr (discovery) or --path"),
        (["resv-report", "--path", "127.0.0.1:4420"], "--path needs --nqn"),
    ],
)
def test_bad_arguments_are_one_line(argv: list[str], needle: str,
                                    capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own errors exit; ours return the status
        code = exc.code  # type: ignore[assignment]
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and "\n" not in err
