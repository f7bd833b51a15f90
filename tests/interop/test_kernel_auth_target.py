"""The Linux host authenticating to our target with DH-HMAC-CHAP (the Debian 13 guest: Linux
6.12's host has NVMe authentication; Debian 12's 6.1 is built without it, so this skips there).

One boot runs every case of tests/interop/guest/auth_host.sh against a target whose subsystem
allows three hosts, each with its own key, hash and DH group: the right key connects and runs
fio verify; a wrong key and no key are refused, and the target logs why once; bidirectional
authentication with the controller key connects, a wrong controller key makes the host refuse
us; hmac(sha512) with ffdhe4096 and a 64-byte key connects.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterator

import pytest
from interop_harness import (
    GUEST_DIR,
    LISTENING,
    REPO_ROOT,
    TARGET_START_TIMEOUT,
    LinuxVM,
    TargetProcess,
    stop_target,
    tail,
    target_argv,
)

from nvmeof.auth.secret import format_secret, generate_secret

pytestmark = pytest.mark.interop

NQN = "nqn.2026-12.io.nvmeof-emu:auth"
HOSTS = {name: f"nqn.2014-08.org.nvmexpress:uuid:0{name.lower()}0{name.lower()}0a0a-1111-2222-3333-444444444444"
         for name in "ABC"}  # fmt: skip


def key(length: int, hmac_id: int) -> str:
    return format_secret(generate_secret(os.urandom(length), hmac_id))


KEYS = {"KA": key(32, 1), "KX": key(32, 1), "KB": key(48, 2), "KC": key(48, 2),
        "KY": key(48, 2), "KD": key(64, 3)}  # fmt: skip
# (host, its key, the controller key, hash, DH group), as nvmet's configfs hosts/<nqn>/dhchap_*
SETTINGS = (("A", "KA", None, "hmac(sha256)", "null"),
            ("B", "KB", "KC", "hmac(sha384)", "ffdhe2048"),
            ("C", "KD", None, "hmac(sha512)", "ffdhe4096"))  # fmt: skip
EXPECTED = {"right": True, "right-fio": True, "right-disconnect": True, "wrong": False,
            "nokey": False, "bidir": True, "bidir-fio": True, "bidir-disconnect": True,
            "badctrl": False, "sha512": True, "sha512-disconnect": True}  # fmt: skip


def config_text() -> str:
    lines = [
        f'[[subsystem]]\nnqn = "{NQN}"\nallow_any_host = false\n'
        f"allowed_hosts = {[HOSTS[h] for h in 'ABC']}\n".replace("'", '"'),
        '  [[subsystem.namespace]]\n  nsid = 1\n  size = "64MiB"\n',
        f'[[port]]\nid = 1\naddr = "127.0.0.1"\nport = 0\nsubsystems = ["{NQN}"]\n',
    ]
    for name, host_key, ctrl_key, hash_name, group in SETTINGS:
        table = (f'[[host]]\nnqn = "{HOSTS[name]}"\ndhchap_key = "{KEYS[host_key]}"\n'
                 f'dhchap_hash = "{hash_name}"\ndhchap_dhgroup = "{group}"\n')  # fmt: skip
        if ctrl_key:
            table += f'dhchap_ctrl_key = "{KEYS[ctrl_key]}"\n'
        lines.insert(0, table)
    return "".join(lines)


@pytest.fixture(scope="module")
def auth_target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TargetProcess]:
    if os.environ.get("LINUXVM_RELEASE", "bookworm") == "bookworm":
        pytest.skip("Debian 12's Linux 6.1 is built without NVMe authentication "
                    "(CONFIG_NVME_AUTH is not set): LINUXVM_RELEASE=trixie referees this")  # fmt: skip
    workdir = tmp_path_factory.mktemp("auth-target")
    config = workdir / "target.toml"
    config.write_text(config_text(), encoding="utf-8")
    log_path = workdir / "target.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(target_argv(config), cwd=REPO_ROOT, stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    target = TargetProcess(proc, log_path)
    try:
        deadline = time.monotonic() + TARGET_START_TIMEOUT
        while not LISTENING.search(target.log_text()):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"nvmeof-target did not start:\n{tail(target.log_text())}")
            time.sleep(0.05)
        for m in LISTENING.finditer(target.log_text()):
            target.listening[int(m.group(1))] = (m.group(2), int(m.group(3)), m.group(4))
        target.io_ports = (target.listening[1][1],)
        yield target
    finally:
        stop_target(proc)


def test_kernel_host_authenticates_to_our_target(
    linuxvm: LinuxVM, auth_target: TargetProcess, interop_figures: Callable[[str], None]
) -> None:
    env = {"PORT": str(auth_target.io_ports[0]), "NQN": NQN,
           **{f"H{name}": nqn for name, nqn in HOSTS.items()}, **KEYS}  # fmt: skip
    run = linuxvm.run("auth-host", GUEST_DIR / "auth_host.sh", env, timeout=300,
                      target=auth_target)  # fmt: skip
    outcomes = {name: run.step(name).rc == 0 for name in EXPECTED}
    wrong = {n: run.step(n).output for n, ok in outcomes.items() if ok != EXPECTED[n]}
    assert not wrong, f"unexpected outcomes: {wrong}\n{run.context()}"
    failures = [line for line in run.target_log.splitlines() if "authentication failed" in line]
    # Logged once each: the wrong key (our failure1, FAILED) and the wrong controller key (the
    # host's failure2, which nvmet reads as INCORRECT_MESSAGE); with no key the host gives up
    # before it sends anything (it cannot answer ATR), so nothing fails on our side.
    assert len(failures) == 2, failures
    assert f"host={HOSTS['A']}" in failures[0] and "reason=FAILED" in failures[0], failures
    assert f"host={HOSTS['B']}" in failures[1], failures
    assert "reason=INCORRECT_MESSAGE (the host refused the controller: failure2)" in failures[1]
    for secret in KEYS.values():
        assert secret not in run.target_log, "a secret in the target's log"
    info = next(iter(run.infos("kernel")), {})
    interop_figures(f"DH-HMAC-CHAP (Linux {info.get('kernel')}, nvme-cli {info.get('nvme_cli')} "
                    f"-> our target): {len(outcomes)} steps as expected in {run.duration:.0f} s, "
                    f"{len(failures)} refusal(s) logged")  # fmt: skip
