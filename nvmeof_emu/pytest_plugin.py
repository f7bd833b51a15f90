"""pytest plugin: an emulated NVMe/TCP target (and our host) as fixtures.

Installed with the package, pytest loads it through the ``pytest11`` entry point; opt out with
``-p no:nvmeof_emu``. Without the installed entry point (a source checkout), load it with
``-p nvmeof_emu.pytest_plugin`` or ``pytest_plugins = ["nvmeof_emu.pytest_plugin"]`` in the
top-level conftest.py.

Fixtures:

* ``nvmeof_target``: a :class:`~nvmeof_emu.process.TargetProcess` (the real daemon in a
  subprocess) in the test's ``tmp_path / "nvmeof-target"``; at teardown it is stopped by its
  PID and the test fails if the daemon crashed, had to be killed or logged an internal error.
* ``nvmeof_target_inprocess``: an :class:`~nvmeof_emu.inprocess.InProcessTarget` in the test's
  Trio run (needs pytest-trio: ``trio_mode = true`` or ``@pytest.mark.trio``); fails the same
  way on an internal error.
* ``nvmeof_host`` / ``nvmeof_host_inprocess``: our initiator connected to every path of the
  first subsystem of ``nvmeof_target`` / ``nvmeof_target_inprocess``
  (:class:`~nvmeof_emu.host.ConnectedHost`; Trio tests).

Configure both targets with ``@pytest.mark.nvmeof_target(config, **options)``: ``config`` is a
native TOML document as a dict, a TOML or nvmetcli JSON path, or a ``TargetConfig``; without
one, the demo (two I/O ports, discovery) on free ports. ``options`` are keyword arguments of
``TargetProcess`` (``pcap``, ``log_level``, ``free_ports``, ``startup_timeout``,
``stop_timeout``, ``command``); the in-process target takes ``pcap`` and ``free_ports``.

When a test fails, its report gets the daemon's log (the last lines; the path of the whole
file) and where the packet captures are, and the captures are kept. Those of a passing test are
deleted unless the ini option ``nvmeof_emu_keep_pcap = true``.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Callable, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from nvmeof_emu.config import ConfigSource
from nvmeof_emu.host import ConnectedHost, nvmeof_host as connect_host  # the fixture's name
from nvmeof_emu.inprocess import InProcessTarget, running_target
from nvmeof_emu.process import TargetProcess

MARKER = "nvmeof_target"
KEEP_PCAP_INI = "nvmeof_emu_keep_pcap"
#: Log lines quoted in a failed test's report (the whole log stays in its file).
REPORT_LOG_LINES = 200
PROCESS_OPTIONS = frozenset(
    {"pcap", "log_level", "free_ports", "startup_timeout", "stop_timeout", "command"}
)
INPROCESS_OPTIONS = frozenset({"pcap", "free_ports"})


@dataclass
class Attached:
    """What a failed test's report shows of one target: its log and where its files are."""

    name: str
    log: Callable[[], str]
    files: Callable[[], list[str]]


ATTACHED = pytest.StashKey[list[Attached]]()
REPORTS = pytest.StashKey[dict[str, pytest.TestReport]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(KEEP_PCAP_INI, "keep the packet captures of passing tests too (nvmeof_emu)",
                  type="bool", default=False)  # fmt: skip


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}(config=None, **options): the configuration of the nvmeof_target fixtures "
        "(a native TOML document as a dict, a TOML or nvmetcli JSON path, or a TargetConfig) "
        "and TargetProcess options",
    )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    item.stash.setdefault(REPORTS, {})[report.when] = report
    if report.failed:
        for attached in item.stash.get(ATTACHED, []):
            lines = attached.log().splitlines()
            shown = lines[-REPORT_LOG_LINES:]
            header = (
                f"(last {len(shown)} of {len(lines)} lines)\n" if len(lines) > len(shown) else ""
            )
            report.sections.append((f"{attached.name} log", header + "\n".join(shown)))
            report.sections.append((f"{attached.name} files", "\n".join(attached.files())))
    return report


def _marker(
    request: pytest.FixtureRequest, allowed: frozenset[str]
) -> tuple[ConfigSource, dict[str, Any]]:
    marker = request.node.get_closest_marker(MARKER)
    if marker is None:
        return None, {}
    if len(marker.args) > 1 or (marker.args and "config" in marker.kwargs):
        raise pytest.UsageError(f"@pytest.mark.{MARKER}: give one configuration")
    options = dict(marker.kwargs)
    config: ConfigSource = marker.args[0] if marker.args else options.pop("config", None)
    unknown = set(options) - allowed
    if unknown:
        raise pytest.UsageError(f"@pytest.mark.{MARKER}: unknown option(s) {sorted(unknown)} "
                                f"for {request.fixturename} (known: {sorted(allowed)})")  # fmt: skip
    return config, options


def _passed(item: pytest.Item) -> bool:
    reports = item.stash.get(REPORTS, {})
    return all(report.passed for report in reports.values()) and "call" in reports


def _drop_captures_if_passed(request: pytest.FixtureRequest, pcap_dir: Path | None) -> None:
    if pcap_dir is not None and _passed(request.node) and not request.config.getini(KEEP_PCAP_INI):
        shutil.rmtree(pcap_dir, ignore_errors=True)


@pytest.fixture
def nvmeof_target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TargetProcess]:
    """The real ``nvmeof-target`` daemon in a subprocess (see the plugin's docstring)."""
    config, options = _marker(request, PROCESS_OPTIONS)
    target = TargetProcess(config, workdir=tmp_path / "nvmeof-target", **options)

    def files() -> list[str]:
        captures = target.captures()
        return [f"log: {target.log_path}",
                f"capture: {target.pcap_dir or 'off'} ({len(captures)} pcapng files)"]  # fmt: skip

    request.node.stash.setdefault(ATTACHED, []).append(
        Attached("nvmeof-target", lambda: target.log, files)
    )
    target.start()
    yield target
    target.stop()  # TargetFailed here fails the test's teardown, captures kept
    _drop_captures_if_passed(request, target.pcap_dir)


@pytest.fixture
async def nvmeof_target_inprocess(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[InProcessTarget]:
    """A target in the test's Trio run (see the plugin's docstring)."""
    config, options = _marker(request, INPROCESS_OPTIONS)
    pcap_dir = tmp_path / "nvmeof-target-pcap" if options.pop("pcap", True) else None
    async with running_target(config, pcap_dir=pcap_dir, **options) as target:

        def files() -> list[str]:
            return [f"capture: {pcap_dir or 'off'} ({len(target.captures())} pcapng files)"]

        request.node.stash.setdefault(ATTACHED, []).append(
            Attached("nvmeof-target (in-process)", lambda: target.log, files))  # fmt: skip
        yield target
    _drop_captures_if_passed(request, pcap_dir)


@pytest.fixture
async def nvmeof_host(nvmeof_target: TargetProcess) -> AsyncIterator[ConnectedHost]:
    """Our initiator on every path of ``nvmeof_target``'s first subsystem."""
    async with connect_host(nvmeof_target) as host:
        yield host


@pytest.fixture
async def nvmeof_host_inprocess(
    nvmeof_target_inprocess: InProcessTarget,
) -> AsyncIterator[ConnectedHost]:
    """Our initiator on every path of ``nvmeof_target_inprocess``'s first subsystem."""
    async with connect_host(nvmeof_target_inprocess) as host:
        yield host
