"""The differential harness against the real nvmet, a seeded sample that fits CI.

``make differential`` runs thousands of cases on both kernel releases; this runs the table,
the sequences and 300 seeded mutations against the release of ``LINUXVM_RELEASE`` (default
Debian 12's 6.1) and fails on any divergence that docs/TOLERANCE.md does not explain.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from interop_harness import REPO_ROOT, LinuxVM

pytestmark = pytest.mark.interop

SEED = int(os.environ.get("NVMEOF_DIFFERENTIAL_SEED", "7"))
COUNT = int(os.environ.get("NVMEOF_DIFFERENTIAL_COUNT", "300"))


def test_no_unexplained_divergence_from_nvmet(linuxvm: LinuxVM) -> None:
    release = os.environ.get("LINUXVM_RELEASE", "bookworm")
    argv = [sys.executable, "-m", "tests.differential", "--release", release,
            "--sources", "table,sequence,mutation", "--seed", str(SEED), "--count", str(COUNT),
            "--concurrency", "8"]  # fmt: skip
    env = {**os.environ, "LINUXVM_RUN": str(linuxvm.run_path)}
    # Own session: a timeout stops the harness and the VM it started, nothing else.
    proc = subprocess.Popen(argv, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)  # fmt: skip
    try:
        out, _ = proc.communicate(timeout=1200)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        out, _ = proc.communicate(timeout=30)
        pytest.fail(f"differential harness did not finish in 20 minutes:\n{out[-4000:]}")
    summary = [line for line in out.splitlines() if line.startswith("differential:")]
    print("\n".join(summary))
    assert proc.returncode == 0, out[-8000:]
