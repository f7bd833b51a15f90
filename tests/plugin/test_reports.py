"""The plugin as a test writer meets it, through pytester: fixtures configured by the marker, a
failing test's report with the daemon's log and kept captures, a crashed daemon failing the
teardown, the captures of passing tests deleted, and the opt-out."""

from __future__ import annotations

import re
from importlib.metadata import entry_points
from pathlib import Path

# pytester's in-process runs put sys.modules back as they found it: a module first imported
# inside one would come back as a second copy when imported again later. httpx imports httpcore
# lazily (at its first client) and then maps httpcore's exceptions by class, so with a second
# copy a refused connection escapes as a raw httpcore.ConnectError. Import it out here first.
import httpcore  # noqa: F401
import pytest

#: Load the plugin in the inner runs unless pytest loads it already (installed entry point).
PLUGIN_ARGS = (
    []
    if any(ep.value == "nvmeof_emu.pytest_plugin" for ep in entry_points(group="pytest11"))
    else ["-p", "nvmeof_emu.pytest_plugin"]
)

INNER_TESTS = """
import os
import signal
import socket

import pytest

NQN = "nqn.2026-12.io.test:inner"
CONFIG = {
    "subsystem": [{"nqn": NQN, "namespace": [{"nsid": 1, "size": "1M"}]}],
    "port": [{"id": 1, "port": 0, "subsystems": [NQN]}],
}


def touch(target):
    # One TCP connection is enough for the target to open a capture file for it.
    with socket.create_connection(target.ports[1], timeout=5):
        pass
    assert target.client.status()["ports"][0]["id"] == 1


@pytest.mark.nvmeof_target(CONFIG)
def test_fails_with_a_capture(nvmeof_target):
    touch(nvmeof_target)
    assert nvmeof_target.nqns == [NQN]
    assert False, "the host under test misbehaved"


@pytest.mark.nvmeof_target(CONFIG)
def test_passes_with_a_capture(nvmeof_target):
    touch(nvmeof_target)
    assert nvmeof_target.captures()
    with open("passing_capture_dir.txt", "w") as out:  # for the outer test to look at
        out.write(str(nvmeof_target.pcap_dir))


def test_daemon_crashes(nvmeof_target):
    os.kill(nvmeof_target.pid, signal.SIGKILL)
"""


def run_inner(pytester: pytest.Pytester, *args: str) -> pytest.HookRecorder:
    pytester.makepyfile(test_inner=INNER_TESTS)
    return pytester.inline_run(*PLUGIN_ARGS, "-p", "no:cacheprovider", *args)


def reports(recorder: pytest.HookRecorder, name: str) -> dict[str, pytest.TestReport]:
    found = recorder.getreports("pytest_runtest_logreport")
    return {r.when: r for r in found if isinstance(r, pytest.TestReport) and
            r.nodeid.endswith(f"::{name}")}  # fmt: skip


def section(report: pytest.TestReport, title: str) -> str:
    texts = [text for name, text in report.sections if name == title]
    assert texts, f"no section {title!r} in {[name for name, _ in report.sections]}"
    return texts[0]


def test_failing_test_reports_the_daemon_log_and_keeps_its_capture(
    pytester: pytest.Pytester,
) -> None:
    recorder = run_inner(pytester, "-k", "capture")
    recorder.assertoutcome(passed=1, failed=1)
    failed = reports(recorder, "test_fails_with_a_capture")["call"]
    log = section(failed, "nvmeof-target log")
    assert "ready file" in log and "level=debug" in log  # the daemon's own lines, debug on
    files = section(failed, "nvmeof-target files")
    capture = Path(re.search(r"capture: (\S+) \((\d+) pcapng files\)", files)[1])  # type: ignore[index]
    assert list(capture.glob("*.pcapng")), "the failed test's capture is kept"
    assert Path(re.search(r"log: (\S+)", files)[1]).is_file()  # type: ignore[index]
    passing_captures = Path(pytester.path / "passing_capture_dir.txt").read_text()
    assert not Path(passing_captures).exists(), "a passing test's capture is deleted"


def test_keep_pcap_option_keeps_passing_captures_too(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nnvmeof_emu_keep_pcap = true\n")
    recorder = run_inner(pytester, "-k", "passes")
    recorder.assertoutcome(passed=1)
    passing_captures = Path(pytester.path / "passing_capture_dir.txt").read_text()
    assert list(Path(passing_captures).glob("*.pcapng"))


def test_a_crashed_daemon_fails_the_teardown_clearly(pytester: pytest.Pytester) -> None:
    recorder = run_inner(pytester, "-k", "crashes")
    phases = reports(recorder, "test_daemon_crashes")
    assert phases["call"].passed and phases["teardown"].failed
    message = str(phases["teardown"].longrepr)
    assert "TargetFailed" in message
    # Seen before or after the harness sends SIGTERM, depending on how fast the kernel reaps.
    assert re.search(r"nvmeof-target \(pid \d+\) failed: it exited (on its own with signal "
                     r"SIGKILL|with signal SIGKILL, not from our SIGTERM)", message)  # fmt: skip
    assert "nvmeof-target log" in [name for name, _ in phases["teardown"].sections]


def test_marker_options_are_checked(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.nvmeof_target(pcap=False, colour="blue")
        def test_it(nvmeof_target):
            pass
        """
    )
    result = pytester.runpytest_inprocess(*PLUGIN_ARGS)
    result.stdout.fnmatch_lines(["*unknown option(s) ?'colour'? for nvmeof_target*"])
    assert result.ret != 0


def test_marker_takes_a_config_file_and_options(pytester: pytest.Pytester) -> None:
    config = pytester.path / "target.toml"
    config.write_text(
        '[[subsystem]]\nnqn = "nqn.2026-12.io.test:file"\n'
        '[[subsystem.namespace]]\nnsid = 1\nsize = "1M"\n'
        '[[port]]\nid = 5\nport = 4420\nsubsystems = ["nqn.2026-12.io.test:file"]\n'
    )
    pytester.makepyfile(
        f"""
        import pytest

        @pytest.mark.nvmeof_target(config={str(config)!r}, pcap=False)
        def test_it(nvmeof_target):
            assert list(nvmeof_target.ports) == [5]
            assert nvmeof_target.ports[5][1] != 4420  # free ports by default
            assert nvmeof_target.pcap_dir is None
            assert nvmeof_target.metrics().value("nvmeof_target_port_up", port="5") == 1
        """
    )
    result = pytester.runpytest_inprocess(*PLUGIN_ARGS)
    result.assert_outcomes(passed=1)


def test_plugin_registers_its_marker_and_fixtures(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_inprocess(*PLUGIN_ARGS, "--fixtures")
    result.stdout.fnmatch_lines(["nvmeof_target -- *", "nvmeof_target_inprocess -- *",
                                 "nvmeof_host -- *", "nvmeof_host_inprocess -- *"])  # fmt: skip
    markers = pytester.runpytest_inprocess(*PLUGIN_ARGS, "--markers")
    markers.stdout.fnmatch_lines(["@pytest.mark.nvmeof_target(config=None, **options):*"])
