"""Our initiator over TLS to our target's TLS ports, end to end (ours <-> ours): the right key
does verified I/O on every queue, a wrong key and an unknown host are refused with one clear,
permanent error, a plaintext host gets the ``--tls`` hint from a ``required`` port and is
served by an ``allowed`` one, and ``connect-all`` follows the discovery log's TREQ/TSAS."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio

from initiator.cli import main
from initiator.controller import ControllerOptions
from initiator.host import open_host
from initiator.queue import QueueClosed
from initiator.tls import TlsHandshakeError
from logfmt import first_leaf
from nvmeof.tls.psk import InterchangeKey
from target.config import HostConfig, NamespaceConfig, PortConfig, SubsystemConfig, TargetConfig
from target.daemon import Target

HOST = "nqn.2014-08.org.nvmexpress:uuid:0c0c0c0c-1111-2222-3333-444444444444"
STRANGER = "nqn.2014-08.org.nvmexpress:uuid:0e0e0e0e-1111-2222-3333-444444444444"
SUBNQN = "nqn.2026-12.io.test:tls-e2e"
PLAIN_NQN = "nqn.2026-12.io.test:plain"
KEY = InterchangeKey.generate(1, bytes(range(32))).export()
OTHER_KEY = InterchangeKey.generate(1, bytes(range(1, 33))).export()
REQUIRED, ALLOWED, PLAIN = 1, 2, 3


@asynccontextmanager
async def tls_target() -> AsyncIterator[Target]:
    """``SUBNQN`` on port 1 (tls = required) and 2 (allowed), ``PLAIN_NQN`` on port 3
    (plaintext); every port serves discovery too. ``HOST`` has ``KEY``."""
    namespaces = (NamespaceConfig(nsid=1, size=16 << 20),)
    config = TargetConfig(
        subsystems=(SubsystemConfig(nqn=SUBNQN, namespaces=namespaces),
                    SubsystemConfig(nqn=PLAIN_NQN, namespaces=namespaces)),
        ports=(PortConfig(id=REQUIRED, port=0, subsystems=(SUBNQN,), tls="required"),
               PortConfig(id=ALLOWED, port=0, subsystems=(SUBNQN,), tls="allowed"),
               PortConfig(id=PLAIN, port=0, subsystems=(PLAIN_NQN,))),
        hosts=(HostConfig(nqn=HOST, tls_key=KEY),),
    )  # fmt: skip
    target = Target(config)
    async with trio.open_nursery() as nursery:
        await nursery.start(target.serve)
        try:
            yield target
        finally:
            nursery.cancel_scope.cancel()


def port(target: Target, port_id: int) -> int:
    return target.state.ports[port_id].bound_port


async def first_error(options: ControllerOptions, addr: tuple[str, int]) -> BaseException:
    with trio.fail_after(15):
        async with open_host(options) as host:
            with pytest.raises(BaseExceptionGroup) as info:
                await host.connect(*addr, SUBNQN)
            assert not host.sessions
    return first_leaf(info.value)


@pytest.mark.parametrize("port_id", [REQUIRED, ALLOWED])
async def test_right_key_does_verified_io_on_every_queue(port_id: int) -> None:
    options = ControllerOptions(hostnqn=HOST, io_queues=2, tls_key=KEY)
    async with tls_target() as target:
        with trio.fail_after(30):
            async with open_host(options) as host:
                session = await host.connect("127.0.0.1", port(target, port_id), SUBNQN)
                assoc = session.assoc
                assert assoc is not None
                queues = [assoc.admin, *assoc.io_queues]
                assert len(queues) == 3 and all(q.tls_cipher for q in queues)
                assert (session.tls.ok, session.tls.failed) == (3, 0)
                head = host.namespace(SUBNQN, 1)
                data = os.urandom(256 << 10)  # past the in-capsule limit: R2T + H2CData
                await head.write(8, data)
                assert bytes(await head.read(8, len(data) // head.block_size)) == data


@pytest.mark.parametrize(
    ("hostnqn", "key"), [(HOST, OTHER_KEY), (STRANGER, KEY)], ids=["wrong-key", "unknown-host"]
)
async def test_a_refused_key_is_one_clear_permanent_error(hostnqn: str, key: str) -> None:
    async with tls_target() as target:
        addr = ("127.0.0.1", port(target, REQUIRED))
        err = await first_error(ControllerOptions(hostnqn=hostnqn, tls_key=key), addr)
    assert isinstance(err, TlsHandshakeError) and err.permanent, repr(err)
    text = str(err)
    assert text.startswith(f"TLS handshake with 127.0.0.1:{addr[1]} failed: "), text
    assert "\n" not in text and "NVMeTLSkey" not in text


async def test_plaintext_to_a_required_port_gets_the_hint_and_an_allowed_port_serves_it() -> None:
    async with tls_target() as target:
        err = await first_error(ControllerOptions(hostnqn=HOST),
                                ("127.0.0.1", port(target, REQUIRED)))  # fmt: skip
        assert isinstance(err, QueueClosed), repr(err)
        assert str(err).endswith("; the port may require TLS (--tls)"), str(err)
        with trio.fail_after(30):
            async with open_host(ControllerOptions(hostnqn=HOST, io_queues=1)) as host:
                session = await host.connect("127.0.0.1", port(target, ALLOWED), SUBNQN)
                assert session.assoc is not None and session.assoc.admin.tls_cipher is None
                assert session.tls.ok == 0


async def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    with trio.fail_after(60):
        code = await trio.to_thread.run_sync(main, list(argv))
    out, err = capsys.readouterr()
    return code, out, err


async def test_cli_discovers_over_tls_and_follows_treq(capsys: pytest.CaptureFixture[str]) -> None:
    """Discovery over TLS on the required port (the discovery NQN in the identity), both TLS
    paths connected; without a key, discovery on the allowed port works in the clear and the
    entry whose TREQ says required is refused up front, naming the flag."""
    async with tls_target() as target:
        required, allowed = str(port(target, REQUIRED)), str(port(target, ALLOWED))
        code, out, err = await run(capsys, "list-subsys", "-a", "127.0.0.1", "-s", required,
                                   "-q", HOST, "--tls-key", KEY, "-n", SUBNQN)  # fmt: skip
        assert code == 0, err
        assert f"trsvcid={required}" in out and f"trsvcid={allowed}" in out
        assert out.count(" live ") == 2
        code, out, err = await run(capsys, "discover", "-a", "127.0.0.1", "-s", allowed, "-q", HOST)
        assert code == 0 and f"trsvcid: {required}" in out, err
        code, out, err = await run(capsys, "list-subsys", "-a", "127.0.0.1", "-s", allowed,
                                   "-q", HOST, "-n", SUBNQN)  # fmt: skip
        assert code == 1 and err == (
            f"nvmeof list-subsys: {SUBNQN} at 127.0.0.1:{required}: the discovery log says the "
            "port requires TLS: give --tls-key\n"
        )
