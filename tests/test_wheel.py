"""The wheel, as a test writer outside this repository gets it: ``python -m build``, a fresh
venv, ``pip install`` of the wheel and its dependencies from the package index, then pytest on
a test file of their own in a directory of their own. It must find the console scripts, the
plugin (loaded by its entry point, no conftest), the shipped example and a working
``nvmeof_target`` fixture.

Skipped, with the reason, when ``build`` is not installed or the package index cannot be reached.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: What is not part of the source tree a release is built from.
NOT_SOURCE = shutil.ignore_patterns(".git", ".venv", "*.egg-info", "build", "dist", "__pycache__",
                                    ".*_cache", ".hypothesis", "bench-results")  # fmt: skip
#: pip's words for "the index cannot be reached", as opposed to a broken package.
UNREACHABLE = ("Could not find a version", "No matching distribution", "Failed to establish",
               "Temporary failure in name resolution", "Network is unreachable", "timed out",
               "ProxyError", "SSLError", "Connection refused")  # fmt: skip

OUTSIDE_TEST = """
import subprocess
import sys
from pathlib import Path

import pytest

from nvmeof_emu import TargetProcess, example_config

BIN = Path(sys.executable).parent


def test_fixture_from_the_installed_plugin(nvmeof_target):
    assert "site-packages" in __import__("nvmeof_emu").__file__
    assert sorted(nvmeof_target.ports) == [1, 2, 3]
    with nvmeof_target.path_down(1, mode="refuse"):
        assert nvmeof_target.client.status()["ports"][0]["mode"] == "refuse"
    assert nvmeof_target.metrics().value("nvmeof_target_port_up", port=1) == 1


def test_console_scripts_and_the_shipped_example(tmp_path):
    for script in ("nvmeof-target", "nvmeof"):
        subprocess.run([str(BIN / script), "--help"], check=True, capture_output=True)
    with TargetProcess(example_config(), workdir=tmp_path,
                       command=[str(BIN / "nvmeof-target")]) as target:
        assert target.nqns == ["nqn.2026-11.io.nvmeof-emu:demo"]
        assert target.discovery == target.ports[3]
"""


def run(command: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)  # fmt: skip


def skip_if_unreachable(done: subprocess.CompletedProcess[str], what: str) -> None:
    if done.returncode != 0 and any(word in done.stdout + done.stderr for word in UNREACHABLE):
        pytest.skip(f"{what}: the package index cannot be reached: {done.stderr.strip()[-300:]}")
    assert done.returncode == 0, f"{what} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"


@pytest.mark.slow
def test_wheel_installed_in_a_fresh_venv_serves_a_test_outside_the_repository(
    tmp_path: Path,
) -> None:
    pytest.importorskip("build", reason="python -m build is needed: pip install build")
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=NOT_SOURCE)
    dist = tmp_path / "dist"
    built = run([sys.executable, "-m", "build", "--outdir", str(dist), str(source)], tmp_path, 600)
    skip_if_unreachable(built, "python -m build")
    (wheel,) = dist.glob("nvmeof_emu-*.whl")

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    installed = run([str(python), "-m", "pip", "install", "-q", str(wheel), "pytest",
                     "pytest-trio"], tmp_path, 600)  # fmt: skip
    skip_if_unreachable(installed, "pip install")

    project = tmp_path / "elsewhere"
    project.mkdir()
    (project / "test_my_host.py").write_text(textwrap.dedent(OUTSIDE_TEST))
    fixtures = run([str(python), "-m", "pytest", "--fixtures", "-p", "no:cacheprovider"],
                   project, 120)  # fmt: skip
    assert "nvmeof_target -- " in fixtures.stdout, fixtures.stdout[-2000:]
    tested = run([str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider"], project, 300)
    assert tested.returncode == 0, tested.stdout[-4000:] + tested.stderr[-2000:]
    assert "2 passed" in tested.stdout
