"""The Linux host connecting to our target over NVMe/TCP TLS 1.3 with a pre-shared key (TP 8011),
refereed by the Debian 13 guest (Linux 6.12, nvme-cli 2.13, tlshd from ktls-utils 1.0.0).
Debian 12's Linux 6.1 has no NVMe/TCP TLS (CONFIG_NVME_TCP_TLS came in 6.7): skips there.

One boot runs every case of tests/interop/guest/tls_host.sh against a target with a
TLS-required port and a TLS-allowed port, and three hosts with their keys (compat derivation,
what nvme-cli 2.13 files in the kernel keyring, docs/TLS.md): plain discovery shows TREQ and
TSAS sectype of both ports, discovery over TLS works; ``--tls`` to the required port connects
(every queue over TLS, with the key the guest filed) and fio verifies; plaintext to the
required port is refused; on the allowed port plaintext is served in the clear and ``--tls``
over TLS; a key the target does not have is refused and the target logs that handshake failure
once; an 02 (SHA-384, 48-byte) key connects under a SHA-256 suite (tlshd 1.0.0, docs/TLS.md).
The target's metrics count the handshakes.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator

import pytest
from interop_harness import (
    GUEST_DIR,
    LISTENING,
    REPO_ROOT,
    TARGET_START_TIMEOUT,
    GuestRun,
    LinuxVM,
    TargetProcess,
    discovery_entries,
    stop_target,
    tail,
    target_argv,
    tls_interchange_key,
)
from test_kernel_target import free_port

pytestmark = pytest.mark.interop

NQN = "nqn.2026-12.io.nvmeof-emu:tls"
DISCOVERY_NQN = "nqn.2014-08.org.nvmexpress.discovery"
HOSTS = {
    name: f"nqn.2014-08.org.nvmexpress:uuid:0{tag}0{tag}0a0a-1111-2222-3333-444444444444"
    for name, tag in (("A", "a"), ("B", "b"), ("W", "e"))
}  # (uuid NQNs: hex digits only, the host ID is taken from them)
# KA: host A's key; KB: host B's 02 (SHA-384) key; KW: what the target knows for host W, KX:
# what the guest files for it (the wrong key)
KEYS = {"KA": tls_interchange_key(1), "KB": tls_interchange_key(2), "KW": tls_interchange_key(1),
        "KX": tls_interchange_key(1)}  # fmt: skip
# step -> connected / succeeded (True) or refused (False)
EXPECTED = {"keys": True, "discover": True, "discover-tls": True,
            "tls": True, "tls-fio": True, "tls-disconnect": True,
            "plain": False,
            "allowed-plain": True, "allowed-plain-fio": True, "allowed-plain-disconnect": True,
            "allowed-tls": True, "allowed-tls-fio": True, "allowed-tls-disconnect": True,
            "wrongkey": False,
            "sha384": True, "sha384-fio": True, "sha384-disconnect": True}  # fmt: skip
# The cases whose every queue runs a TLS handshake, and the guest key they must use.
TLS_CASES = {"tls": "A", "allowed-tls": "A", "sha384": "B"}
SHA256_SUITES = ("AES-128-GCM", "CHACHA20-POLY1305", "AES-128-CCM")
HANDSHAKE_FAILED = "tls handshake failed"
PLAINTEXT_REFUSED = "the host sent plaintext"


def config_text() -> str:
    hosts = "".join(f'[[host]]\nnqn = "{HOSTS[name]}"\ntls_key = "{KEYS[key]}"\n'
                    f'tls_psk_derivation = "compat"\n'
                    for name, key in (("A", "KA"), ("B", "KB"), ("W", "KW")))  # fmt: skip
    allowed = ", ".join(f'"{HOSTS[h]}"' for h in "ABW")
    return (
        f'{hosts}[[subsystem]]\nnqn = "{NQN}"\nallow_any_host = false\nallowed_hosts = [{allowed}]\n'
        '  [[subsystem.namespace]]\n  nsid = 1\n  size = "64MiB"\n'
        f'[[port]]\nid = 1\naddr = "127.0.0.1"\nport = 0\nsubsystems = ["{NQN}"]\ntls = "required"\n'
        f'[[port]]\nid = 2\naddr = "127.0.0.1"\nport = 0\nsubsystems = ["{NQN}"]\ntls = "allowed"\n'
    )


@pytest.fixture(scope="module")
def tls_target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TargetProcess, int]]:
    """Our target with the TLS ports (1 required, 2 allowed) and its metrics listener port."""
    release = os.environ.get("LINUXVM_RELEASE", "bookworm")
    if release != "trixie":
        pytest.skip(f"LINUXVM_RELEASE={release}: Debian 12's Linux 6.1 has no NVMe/TCP TLS "
                    "(CONFIG_NVME_TCP_TLS came in 6.7, and no tlshd): LINUXVM_RELEASE=trixie "
                    "referees this")  # fmt: skip
    workdir = tmp_path_factory.mktemp("tls-target")
    config = workdir / "target.toml"
    config.write_text(config_text(), encoding="utf-8")
    metrics_port = free_port()
    argv = target_argv(config)
    argv[argv.index("--metrics") + 1] = f"127.0.0.1:{metrics_port}"
    log_path = workdir / "target.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(argv, cwd=REPO_ROOT, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT)  # fmt: skip
    target = TargetProcess(proc, log_path)
    try:
        deadline = time.monotonic() + TARGET_START_TIMEOUT
        while len(LISTENING.findall(target.log_text())) < 2:
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"nvmeof-target did not start:\n{tail(target.log_text())}")
            time.sleep(0.05)
        for m in LISTENING.finditer(target.log_text()):
            target.listening[int(m.group(1))] = (m.group(2), int(m.group(3)), m.group(4))
        target.io_ports = (target.listening[1][1], target.listening[2][1])
        yield target, metrics_port
    finally:
        stop_target(proc)


def metric_values(port: int) -> dict[str, float]:
    """The target's TLS samples, ``name{labels}`` -> value."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    return {m.group(1): float(m.group(2))
            for m in re.finditer(r"^(nvmeof_target_tls_\S+) (\S+)$", text, re.MULTILINE)}  # fmt: skip


def key_serials(run: GuestRun) -> dict[str, str]:
    """KEYSERIAL lines of the keys step: key name -> serial in hex (as sysfs tls_key shows)."""
    return {m.group(1): m.group(2).lower().lstrip("0")
            for m in re.finditer(r"^KEYSERIAL (\S+) ([0-9a-fA-F]+)$", run.step("keys").output,
                                 re.MULTILINE)}  # fmt: skip


def connection(run: GuestRun, case: str) -> tuple[str, int, str]:
    """(tls_key serial or "none", queue_count, tlshd's lines) of a connected case."""
    out = run.step(f"{case}-info").output
    m = re.search(r"^tls_key=(\S+) queue_count=(\d+)$", out, re.MULTILINE)
    assert m, f"{case}-info: {out}\n{run.context()}"
    return m.group(1).lower().lstrip("0"), int(m.group(2)), out


def test_kernel_host_tls_to_our_target(
    linuxvm: LinuxVM, tls_target: tuple[TargetProcess, int],
    interop_figures: Callable[[str], None],
) -> None:  # fmt: skip
    target, metrics_port = tls_target
    port_req, port_allowed = target.io_ports
    env = {"PORT_REQ": str(port_req), "PORT_ALLOWED": str(port_allowed), "NQN": NQN,
           "HA": HOSTS["A"], "HB": HOSTS["B"], "HW": HOSTS["W"],
           "KA": KEYS["KA"], "KB": KEYS["KB"], "KX": KEYS["KX"]}  # fmt: skip
    run = linuxvm.run("tls-host", GUEST_DIR / "tls_host.sh", env, timeout=240, target=target)
    outcomes = {name: run.step(name).rc == 0 for name in EXPECTED}
    wrong = {n: run.step(n).output for n, ok in outcomes.items() if ok != EXPECTED[n]}
    assert not wrong, f"unexpected outcomes: {wrong}\n{run.context()}"

    # the discovery log: TREQ and TSAS sectype of each TLS port
    entries = discovery_entries(run.step("discover").output)
    assert any(e.get("subnqn") == NQN and e.get("trsvcid") == str(port_allowed) for e in entries), (
        run.step("discover").output
    )
    for entry in entries:
        want = {str(port_req): "required", str(port_allowed): "not required"}[entry["trsvcid"]]
        assert entry.get("treq", "").split(",")[0] == want, entry
        assert entry.get("sectype") == "tls13", entry
    tls_entries = discovery_entries(run.step("discover-tls").output)
    assert any(e.get("subnqn") == NQN for e in tls_entries), run.step("discover-tls").output

    # every queue of a TLS case used the key the guest filed for its identity, under TLS 1.3
    serials = key_serials(run)
    handshakes = 1  # discover-tls: one admin queue
    for case, key_name in TLS_CASES.items():
        serial, queues, out = connection(run, case)
        assert serial == serials[key_name], (case, out, serials)
        sessions = re.findall(r"(\d+) Session description: \(TLS1\.3\)--\(([^)]+)\)", out)
        assert sum(int(n) for n, _ in sessions) == queues, (case, out)
        if case == "sha384":  # tlshd 1.0.0: an 02 key's binder is SHA-256 (docs/TLS.md)
            assert all(suite in SHA256_SUITES for _, suite in sessions), out
        handshakes += queues
    serial, _, out = connection(run, "allowed-plain")
    assert serial == "none", out  # served in the clear
    # refusals: nothing connected, the guest's tlshd gave up (wrong key)
    assert "failed" in run.step("wrongkey-info").output, run.step("wrongkey-info").output

    # the target: identities seen, each refusal logged once, no secret in the log
    log = run.target_log
    for name, subnqn, hh in (("A", NQN, "01"), ("A", DISCOVERY_NQN, "01"), ("B", NQN, "02")):
        assert f"identity=NVMe0R{hh} {HOSTS[name]} {subnqn}" in log, (name, subnqn, tail(log))
    failures = [line for line in log.splitlines()
                if HANDSHAKE_FAILED in line or PLAINTEXT_REFUSED in line]  # fmt: skip
    # once each, on the required port: the plaintext ICReq, then the wrong key (tlshd's
    # ClientHello with a binder made from a key the target does not have)
    assert len(failures) == 2, "\n".join(failures) or tail(log)
    assert all("port=1 " in line for line in failures), failures
    assert PLAINTEXT_REFUSED in failures[0] and "binder" in failures[1], failures
    for secret in KEYS.values():
        assert secret not in log, "a key in the target's log"

    samples = metric_values(metrics_port)
    assert samples.get('nvmeof_target_tls_handshakes_total{result="ok"}') == handshakes, samples
    assert samples.get('nvmeof_target_tls_handshakes_total{result="failed"}') == 2, samples
    assert samples.get('nvmeof_target_tls_handshakes_total{result="timeout"}') == 0, samples
    for port_id in (1, 2):  # every connection closed again
        assert samples.get(f'nvmeof_target_tls_connections{{port="{port_id}"}}') == 0, samples

    info = next(iter(run.infos("kernel")), {})
    interop_figures(f"TLS (Linux {info.get('kernel')}, nvme-cli {info.get('nvme_cli')}, tlshd "
                    f"{info.get('tlshd')} -> our target): {len(outcomes)} steps as expected in "
                    f"{run.duration:.0f} s, {handshakes} handshakes ok, {len(failures)} refused")  # fmt: skip
