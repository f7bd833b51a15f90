"""The host's TLS 1.3 PSK (TP 8011, docs/TLS.md): options, the nvme-cli flags, ``gen-tls-key``
and ``check-tls-key``, and queues over TLS against peers built here from ``tlsstream``'s
``server_handshake``:

* a tiny ICResp peer (the sans-IO :class:`~nvmeof.tcp.controller.ControllerConnection`): the
  handshake, identities, suites, data both ways, wrong keys, a peer that does not answer, a
  plaintext ICReq to a port that requires TLS, a ClientHello to a plaintext port;
* a TLS-terminating proxy in front of our plaintext in-process target: whole controllers and
  sessions over TLS (admin and I/O queues, discovery, reconnects, a refused reconnect, the
  metrics, the CLI).

Our target's own TLS ports are tested end to end elsewhere (tests/target/).
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest
import trio

from initiator.cli import TLS_DERIVATIONS, build_parser, main
from initiator.commands import controller_options
from initiator.controller import ControllerOptions, connect_controller
from initiator.host import open_host
from initiator.metrics import initiator_registry
from initiator.queue import HostQueue, QueueClosed
from initiator.session import SessionState
from initiator.tls import TlsCounts, TlsHandshakeError, describe_tls_key, gen_tls_key, queue_psk
from logfmt import first_leaf
from nvmeof.constants import DISCOVERY_NQN
from nvmeof.errors import TransportError
from nvmeof.tcp.controller import ControllerConnection
from nvmeof.tcp.events import CommandReceived
from nvmeof.tls.psk import PSK_DERIVATIONS, InterchangeKey, PskIdentity, TlsPsk, target_psk
from target.config import DEMO_NQN, default_config, with_free_ports
from target.daemon import Target
from tlsstream import TlsStream, server_handshake

HOSTNQN = "nqn.2014-08.org.nvmexpress:uuid:0d0d0d0d-1111-2222-3333-444444444444"
SUBNQN = "nqn.2026-12.io.test:tls"
KEY = InterchangeKey.generate(1, bytes(range(32))).export()
KEY2 = InterchangeKey.generate(2, bytes(range(48))).export()
OTHER_KEY = InterchangeKey.generate(1, bytes(range(1, 33))).export()
#: libnvme test/psk.c: the interchange text of this key.
GOLDEN_HEX = "5512dbb6737d0106f65975b773dfb011ffc344bcf442e2dd6d8bc4870b5d5b03"
GOLDEN = "NVMeTLSkey-1:01:VRLbtnN9AQb2WXW3c9+wEf/DRLz0QuLdbYvEhwtdWwNf9LrZ:"
CONNECTING = ("discover", "connect-all", "list-subsys", "id-ctrl", "id-ns", "ana-log", "read",
              "write", "bench", "resv-register", "resv-acquire", "resv-release", "resv-report")  # fmt: skip
Lookup = Callable[[bytes], TlsPsk | None]


def lookup_for(key: str, *, derivation: str = "compat", r02_sha256: bool = True,
               seen: list[bytes] | None = None) -> Lookup:  # fmt: skip
    """A target's PSK lookup that knows one host key (any host NQN, any subsystem)."""
    parsed = InterchangeKey.parse(key)

    def lookup(identity: bytes) -> TlsPsk | None:
        if seen is not None:
            seen.append(identity)
        found = PskIdentity.parse(identity)
        if found is None:
            return None
        return target_psk(found, parsed, derivation=derivation, r02_sha256=r02_sha256)

    return lookup


def psk(key: str = KEY, subnqn: str = SUBNQN, **kwargs: object) -> TlsPsk:
    return queue_psk(key, HOSTNQN, subnqn, **kwargs)  # type: ignore[arg-type]


# -- options -----------------------------------------------------------------------------------


def test_tls_key_implies_tls_and_stays_out_of_the_repr() -> None:
    options = ControllerOptions(tls_key=KEY)
    assert options.tls and options.tls_psk_derivation == "compat" and options.tls_r02_sha256
    assert options.tls_identity_version == 0
    text = repr(options)
    assert KEY not in text and KEY.split(":")[2][:12] not in text and "tls_key" not in text
    assert "tls=True" in text


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"tls": True}, r"^--tls needs --tls-key \(there is no kernel keyring here\)$"),
        ({"tls_key": "NVMeTLSkey-1:01:nonsense:"}, r"^--tls-key: NVMeTLSkey-1 "),
        ({"tls_key": KEY[:-6] + "AAAA:"}, r"^--tls-key: "),
        ({"tls_key": "DHHC-1:01:abc:"}, r"^--tls-key: TLS key must start with"),
        ({"tls_key": KEY, "tls_identity_version": 2}, r"^--tls-identity-version 2: not 0 or 1$"),
        ({"tls_key": KEY, "tls_psk_derivation": "rfc"}, r"^--tls-psk-derivation 'rfc': not "),
    ],
)
def test_options_refuse_bad_tls_settings(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        ControllerOptions(**kwargs)  # type: ignore[arg-type]
    assert "\n" not in str(info.value) and "nonsense" not in str(info.value)


def test_the_cli_offers_the_derivations_of_the_core() -> None:
    assert TLS_DERIVATIONS == PSK_DERIVATIONS


# -- the command line --------------------------------------------------------------------------


@pytest.mark.parametrize("command", CONNECTING)
@pytest.mark.parametrize("spelling", ["--tls-key", "--tls_key"])
def test_every_connecting_command_takes_the_tls_flags(command: str, spelling: str) -> None:
    argv = [command, "--path", "127.0.0.1:4420", f"--nqn={SUBNQN}", "--tls", f"{spelling}={KEY}",
            "--tls-identity-version", "1", "--tls-psk-derivation", "rfc8446", "--tls-sha384-r02"]  # fmt: skip
    args = build_parser().parse_args(argv)
    assert (args.tls, args.tls_key, args.tls_identity_version) == (True, KEY, 1)
    assert (args.tls_psk_derivation, args.tls_r02_sha256) == ("rfc8446", False)
    options = controller_options(args)
    assert (options.tls, options.tls_key, options.tls_identity_version) == (True, KEY, 1)
    assert (options.tls_psk_derivation, options.tls_r02_sha256) == ("rfc8446", False)


def test_tls_flags_default_to_plain() -> None:
    args = build_parser().parse_args(["connect-all", "-a", "127.0.0.1"])
    assert (args.tls, args.tls_key, args.tls_identity_version) == (False, "", 0)
    assert (args.tls_psk_derivation, args.tls_r02_sha256) == ("compat", True)
    assert not controller_options(args).tls


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--tls"], "--tls needs --tls-key (there is no kernel keyring here)"),
        (["--tls-key", "NVMeTLSkey-1:01:nonsense:"], "--tls-key: NVMeTLSkey-1"),
        (["--tls-key", KEY[:-6] + "AAAA:"], "--tls-key: "),
    ],
)
def test_bad_tls_flags_are_one_line_usage_errors(
    flags: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["id-ctrl", "--path", "127.0.0.1:1", "-n", SUBNQN, *flags]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert "nonsense" not in err and KEY[16:40] not in err  # no key material echoed


@pytest.mark.parametrize("bad", ["--tls-identity-version=2", "--tls-psk-derivation=rfc"])
def test_bad_tls_choices_are_usage_errors(bad: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["id-ctrl", "--path", "127.0.0.1:1", "-n", SUBNQN, "--tls-key", KEY, bad])
    assert info.value.code == 2 and "invalid choice" in capsys.readouterr().err


@pytest.mark.parametrize(("hmac", "length"), [(1, 32), (2, 48)])
def test_gen_tls_key_parses_back(
    hmac: int, length: int, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["gen-tls-key", "--hmac", str(hmac)]) == 0
    first = capsys.readouterr().out.strip()
    key = InterchangeKey.parse(first)
    assert (key.hmac, len(key.configured)) == (hmac, length)
    assert main(["gen-tls-key", "-m", str(hmac)]) == 0
    assert capsys.readouterr().out.strip() != first  # random


def test_gen_tls_key_defaults_and_golden(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["gen-tls-key"]) == 0
    assert InterchangeKey.parse(capsys.readouterr().out).hmac == 1
    assert main(["gen-tls-key", "--secret", GOLDEN_HEX]) == 0
    assert capsys.readouterr().out == GOLDEN + "\n"
    assert gen_tls_key(2, random_bytes=lambda n: bytes(n)) == InterchangeKey(2, bytes(48)).export()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--secret", "zz"], "--secret: not a hexadecimal string"),
        (["--secret", "00" * 48], "--secret is 48 bytes, --hmac 1 wants 32"),
        (["-m", "2", "-s", "00" * 32], "--secret is 32 bytes, --hmac 2 wants 48"),
    ],
)
def test_gen_tls_key_errors(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["gen-tls-key", *argv]) == 2
    assert message in capsys.readouterr().err


def test_check_tls_key_prints_the_identity(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["check-tls-key", "--key", KEY, "--hostnqn", HOSTNQN, "--subsysnqn", SUBNQN]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.startswith("Key is valid (hash 01 SHA-256, 32-byte PSK, CRC-32 ok)\n")
    assert f"identity: NVMe0R01 {HOSTNQN} {SUBNQN}\n" in out
    assert "TLS_AES_128_GCM_SHA256 (compat derivation)" in out
    assert KEY not in out
    # version 1: the digest depends on the derivation (the retained key does)
    assert main([*argv, "--identity", "1", "--compat"]) == 0
    compat = capsys.readouterr().out
    assert main(["check-tls-key", "-d", KEY, "-q", HOSTNQN, "-n", SUBNQN, "-I", "1",
                 "--tls-psk-derivation", "rfc8446"]) == 0  # fmt: skip
    rfc = capsys.readouterr().out
    for text, derivation in ((compat, "compat"), (rfc, "rfc8446")):
        line = next(x for x in text.splitlines() if x.startswith("identity: "))
        assert (
            line.removeprefix("identity: ")
            == psk(identity_version=1, derivation=derivation).identity.decode()
        )
        assert line.startswith(f"identity: NVMe1R01 {HOSTNQN} {SUBNQN} ")
    assert compat != rfc
    assert main([*argv[:2], KEY2, *argv[3:], "--tls-sha384-r02"]) == 0
    assert "NVMe0R02" in (out := capsys.readouterr().out) and "TLS_AES_256_GCM_SHA384" in out


def test_check_tls_key_refuses_a_bad_key(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-tls-key", "--key", KEY[:-6] + "AAAA:", "-q", HOSTNQN, "-n", SUBNQN]) == 2
    err = capsys.readouterr().err
    assert err.startswith("nvmeof check-tls-key: error: --key: ") and err.count("\n") == 1
    with pytest.raises(ValueError, match=r"^--key: "):
        describe_tls_key(KEY, "nqn.with space", SUBNQN)


# -- a tiny ICResp peer ------------------------------------------------------------------------


class Peer:
    """A listener that does, per connection, the TLS handshake (``lookup`` set) and then
    answers an ICReq and every command (success; reads get ``read_data``, in-capsule writes
    are kept in ``written``). ``mode``: ``serve``, ``close-plain`` (close at the first
    plaintext byte, as nvmet's TLS-required port) or ``silent`` (accept, never answer)."""

    def __init__(self, lookup: Lookup | None, mode: str = "serve") -> None:
        self.lookup, self.mode = lookup, mode
        self.port = 0
        self.streams: list[TlsStream] = []
        self.errors: list[BaseException] = []
        self.written: list[bytes] = []
        self.read_data = b""

    async def serve(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started()
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, tcp: trio.SocketStream) -> None:
        if self.mode == "silent":
            await trio.sleep_forever()
        stream: trio.SocketStream | TlsStream = tcp
        try:
            if self.lookup is not None:
                stream = await server_handshake(tcp, self.lookup)
                self.streams.append(stream)
            elif self.mode == "close-plain":
                await tcp.receive_some(1)
                await tcp.aclose()
                return
            await self._serve(stream)
        except (trio.BrokenResourceError, trio.ClosedResourceError, TransportError) as exc:
            self.errors.append(exc)
        finally:
            await stream.aclose()

    async def _serve(self, stream: trio.SocketStream | TlsStream) -> None:
        conn = ControllerConnection()
        while data := await stream.receive_some(1 << 16):
            conn.receive_data(data)
            try:
                while (event := conn.next_event()) is not None:
                    if isinstance(event, CommandReceived):
                        if event.data is not None:
                            self.written.append(event.data)
                        if event.sqe[0] == 0x02 and self.read_data:  # Get Log Page: C2HData
                            conn.send_data(event.cid, self.read_data, success=True)
                        else:
                            conn.send_response(event.cid, dw0=len(self.written))
            finally:
                if out := conn.data_to_send():
                    await stream.send_all(b"".join(out))


@asynccontextmanager
async def peer(lookup: Lookup | None, mode: str = "serve") -> AsyncIterator[Peer]:
    async with trio.open_nursery() as nursery:
        served = Peer(lookup, mode)
        await nursery.start(served.serve)
        yield served
        nursery.cancel_scope.cancel()


def sqe(opcode: int) -> bytes:
    """A command with only its opcode: the connection fills in the CID and the SGL."""
    return bytes([opcode]) + bytes(63)


@pytest.mark.parametrize(
    ("key", "version", "derivation", "r02_sha256", "cipher"),
    [
        (KEY, 0, "compat", True, "TLS_AES_128_GCM_SHA256"),
        (KEY, 1, "rfc8446", True, "TLS_AES_128_GCM_SHA256"),
        (KEY2, 0, "compat", True, "TLS_AES_128_GCM_SHA256"),  # tlshd 1.0.0's way
        (KEY2, 1, "compat", False, "TLS_AES_256_GCM_SHA384"),  # TP 8011's
    ],
)
async def test_queue_over_tls_carries_pdus_both_ways(
    key: str, version: int, derivation: str, r02_sha256: bool, cipher: str,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    seen: list[bytes] = []
    lookup = lookup_for(key, derivation=derivation, r02_sha256=r02_sha256, seen=seen)
    host_psk = psk(key, identity_version=version, derivation=derivation, r02_sha256=r02_sha256)
    caplog.set_level(logging.DEBUG, "nvmeof.initiator")
    with trio.fail_after(20):
        async with peer(lookup) as target, trio.open_nursery() as nursery:
            queue = await HostQueue.connect(nursery, "127.0.0.1", target.port, qid=0, depth=8,
                                            tls=host_psk)  # fmt: skip
            assert queue.tls_cipher == cipher and target.streams[0].cipher == cipher
            assert seen == [host_psk.identity] == [target.streams[0].peer_identity]
            assert seen[0].startswith(f"NVMe{version}R0{key[14]} {HOSTNQN} {SUBNQN}".encode())
            # the reader decrypts straight into the PDU buffer (chosen once, no socket read)
            assert queue._recv_into == target.streams[0].__class__.receive_into.__get__(
                queue.stream
            )
            data = os.urandom(4096)
            done = await queue.submit(sqe(0x01), write=data, timeout=5)
            assert done.ok and target.written == [data]
            target.read_data = os.urandom(4096)
            buffer = bytearray(4096)
            done = await queue.submit(sqe(0x02), read=buffer, timeout=5)
            assert done.ok and bytes(buffer) == target.read_data
            await queue.aclose()
            nursery.cancel_scope.cancel()
    assert f"qid 0 127.0.0.1:{target.port}: tls {cipher}" in caplog.text


async def test_plain_queue_reads_the_socket_directly() -> None:
    with trio.fail_after(10):
        async with peer(None) as target, trio.open_nursery() as nursery:
            queue = await HostQueue.connect(nursery, "127.0.0.1", target.port, qid=0, depth=8)
            assert isinstance(queue.stream, trio.SocketStream) and queue.tls_cipher is None
            # the socket's own descriptor, not a stream layer
            assert queue._recv_into == queue._receive_into
            assert queue._plain is queue.stream and queue.stream.socket.fileno() >= 0
            assert (await queue.submit(sqe(0x01), write=bytes(512), timeout=5)).ok
            await queue.aclose()
            nursery.cancel_scope.cancel()


@pytest.mark.parametrize(
    ("lookup", "host_key", "derivation"),
    [
        (lookup_for(OTHER_KEY), KEY, "compat"),  # another key
        (lookup_for(KEY, derivation="rfc8446"), KEY, "compat"),  # another derivation
        (lambda identity: None, KEY, "compat"),  # an unknown identity
    ],
    ids=["wrong-key", "wrong-derivation", "unknown-identity"],
)
async def test_a_refused_handshake_is_a_clear_permanent_error(
    lookup: Lookup, host_key: str, derivation: str
) -> None:
    with trio.fail_after(10):
        async with peer(lookup) as target, trio.open_nursery() as nursery:
            with pytest.raises(TlsHandshakeError) as info:
                await HostQueue.connect(nursery, "127.0.0.1", target.port, qid=0, depth=8,
                                        tls=psk(host_key, derivation=derivation))  # fmt: skip
            nursery.cancel_scope.cancel()
    text = str(info.value)
    assert text.startswith(f"TLS handshake with 127.0.0.1:{target.port} failed: "), text
    assert text.endswith(")") and "\n" not in text
    assert info.value.permanent


async def test_a_closed_handshake_hints_at_the_key() -> None:
    """tlshd refuses a wrong key by closing the connection, without an alert."""

    async def close_at_hello(tcp: trio.SocketStream) -> None:
        await tcp.receive_some(1 << 16)
        await tcp.aclose()

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(trio.serve_tcp, close_at_hello, 0)
            port = listeners[0].socket.getsockname()[1]
            with pytest.raises(TlsHandshakeError) as info:
                await HostQueue.connect(nursery, "127.0.0.1", port, qid=0, depth=8, tls=psk())
            nursery.cancel_scope.cancel()
    assert str(info.value) == (
        f"TLS handshake with 127.0.0.1:{port} failed: the peer closed the connection in the TLS "
        "handshake (wrong key? --tls-psk-derivation compat|rfc8446?)"
    )
    assert info.value.permanent


async def test_a_handshake_without_answer_times_out_and_may_be_retried() -> None:
    with trio.fail_after(10):
        async with peer(lookup_for(KEY), mode="silent") as target, trio.open_nursery() as nursery:
            with pytest.raises(TlsHandshakeError) as info:
                await HostQueue.connect(nursery, "127.0.0.1", target.port, qid=0, depth=8,
                                        tls=psk(), timeout=0.3)  # fmt: skip
            nursery.cancel_scope.cancel()
    assert str(info.value) == (
        f"TLS handshake with 127.0.0.1:{target.port} failed: no answer within 0.3 s"
    )
    assert not info.value.permanent


async def test_plain_icreq_to_a_tls_port_gets_the_hint() -> None:
    with trio.fail_after(10):
        async with peer(None, mode="close-plain") as target, trio.open_nursery() as nursery:
            with pytest.raises(QueueClosed) as info:
                await HostQueue.connect(nursery, "127.0.0.1", target.port, qid=0, depth=8)
            nursery.cancel_scope.cancel()
    text = str(info.value)  # a close, or a reset: the ICReq was left unread
    assert text.startswith(f"ICReq to 127.0.0.1:{target.port} failed: ")
    assert text.endswith("; the port may require TLS (--tls)")


async def test_tls_to_a_plain_port_says_so() -> None:
    with trio.fail_after(10):
        async with peer(None) as target, trio.open_nursery() as nursery:
            with pytest.raises(TlsHandshakeError) as info:
                await HostQueue.connect(nursery, "127.0.0.1", target.port, qid=0, depth=8,
                                        tls=psk())  # fmt: skip
            nursery.cancel_scope.cancel()
    assert str(info.value) == (
        f"TLS handshake with 127.0.0.1:{target.port} failed: wrong version number "
        "(the port may not do TLS)"
    )
    assert isinstance(target.errors[0], TransportError)  # our ClientHello was no ICReq


# -- whole controllers through a TLS-terminating proxy -----------------------------------------


class Proxy:
    """TLS in front of a plaintext port: handshake with ``lookup``, then pump both ways."""

    def __init__(self, upstream: int, lookup: Lookup) -> None:
        self.upstream, self.lookup = upstream, lookup
        self.port = 0
        self.identities: list[bytes] = []
        self.refused = 0
        self._scopes: set[trio.CancelScope] = set()

    async def serve(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started()
        await trio.serve_listeners(self._handle, listeners)

    def drop_all(self) -> None:
        """Close every proxied connection (a path loss for the host)."""
        for scope in self._scopes:
            scope.cancel()

    async def _handle(self, tcp: trio.SocketStream) -> None:
        with trio.CancelScope() as scope:
            self._scopes.add(scope)
            try:
                tls = await server_handshake(tcp, self.lookup)
            except trio.BrokenResourceError:
                self.refused += 1
                return
            assert tls.peer_identity is not None
            self.identities.append(tls.peer_identity)
            plain = await trio.open_tcp_stream("127.0.0.1", self.upstream)
            async with tls, plain, trio.open_nursery() as nursery:
                nursery.start_soon(self._pump, tls, plain, nursery.cancel_scope)
                nursery.start_soon(self._pump, plain, tls, nursery.cancel_scope)
        self._scopes.discard(scope)

    @staticmethod
    async def _pump(src: trio.abc.Stream, dst: trio.abc.Stream, scope: trio.CancelScope) -> None:
        try:
            while data := await src.receive_some(1 << 16):
                await dst.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        scope.cancel()


@pytest.fixture
async def target(nursery: trio.Nursery) -> AsyncIterator[Target]:
    served: Target = await nursery.start(Target(with_free_ports(default_config())).serve)
    yield served
    served.stop()


@pytest.fixture
async def proxy(target: Target, nursery: trio.Nursery) -> Proxy:
    served = Proxy(target.ports[1].bound_port, lookup_for(KEY))
    await nursery.start(served.serve)
    return served


async def test_session_over_tls_does_io_and_reconnects_with_new_handshakes(
    proxy: Proxy, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "nvmeof.initiator")
    options = ControllerOptions(hostnqn=HOSTNQN, io_queues=2, tls_key=KEY, reconnect_delay=0.1)
    with trio.fail_after(30):
        async with open_host(options) as host:
            session = await host.connect("127.0.0.1", proxy.port, DEMO_NQN)
            head = host.namespace(DEMO_NQN, 1)
            data = os.urandom(64 << 10)
            await head.write(0, data)
            assert bytes(await head.read(0, len(data) // head.block_size)) == data
            identity = f"NVMe0R01 {HOSTNQN} {DEMO_NQN}".encode()
            assert proxy.identities == [identity] * 3  # admin + 2 I/O queues
            assert (session.tls.ok, session.tls.failed) == (3, 0)
            assert all(q.tls_cipher == "TLS_AES_128_GCM_SHA256"
                       for q in [session.assoc.admin, *session.assoc.io_queues])  # type: ignore[union-attr]  # fmt: skip
            proxy.drop_all()
            while session.reconnected < 1 or not session.live:  # noqa: ASYNC110 - polling state
                await trio.sleep(0.02)
            assert proxy.identities == [identity] * 6 and session.tls.ok == 6
            assert bytes(await head.read(0, len(data) // head.block_size)) == data
            registry = initiator_registry(host)
            labels = {"path": session.label, "subsystem": DEMO_NQN}
            ok = registry.get_sample_value(
                "nvmeof_initiator_tls_handshakes_total", {**labels, "result": "ok"}
            )
            failed = registry.get_sample_value(
                "nvmeof_initiator_tls_handshakes_total", {**labels, "result": "failed"}
            )
            assert (ok, failed) == (6, 0)
    infos = [r.getMessage() for r in caplog.records if "tls cipher=" in r.getMessage()]
    assert infos[0] == (f"controller 127.0.0.1:{proxy.port} {DEMO_NQN}: tls "
                        f"cipher=TLS_AES_128_GCM_SHA256 identity={identity.decode()}")  # fmt: skip
    assert len(infos) == 2  # once per association, not per queue
    assert KEY not in caplog.text


async def test_a_refused_reconnect_is_not_retried(proxy: Proxy) -> None:
    """As after a refused DH-HMAC-CHAP key: the same key would be refused again."""
    options = ControllerOptions(hostnqn=HOSTNQN, io_queues=1, tls_key=KEY, reconnect_delay=0.05,
                                ctrl_loss_tmo=-1)  # fmt: skip
    with trio.fail_after(30):
        async with open_host(options) as host:
            session = await host.connect("127.0.0.1", proxy.port, DEMO_NQN)
            proxy.lookup = lookup_for(OTHER_KEY)  # the target's key changed
            proxy.drop_all()
            while session.state is not SessionState.DELETED:  # noqa: ASYNC110 - polling state
                await trio.sleep(0.02)
            await trio.sleep(0.3)  # no further attempt
            assert proxy.refused == 1 and session.reconnects == 1
            assert (session.tls.ok, session.tls.failed) == (2, 1)


async def test_first_connect_refused_names_tls(proxy: Proxy) -> None:
    options = ControllerOptions(hostnqn=HOSTNQN, tls_key=OTHER_KEY)
    with trio.fail_after(30):
        async with open_host(options) as host:
            with pytest.raises(BaseExceptionGroup) as info:  # from the session's nursery
                await host.connect("127.0.0.1", proxy.port, DEMO_NQN)
            assert proxy.refused == 1
    leaf = first_leaf(info.value)
    assert isinstance(leaf, TlsHandshakeError) and leaf.permanent
    assert str(leaf).startswith(f"TLS handshake with 127.0.0.1:{proxy.port} failed: ")


async def test_discovery_over_tls_uses_the_discovery_nqn(
    target: Target, nursery: trio.Nursery
) -> None:
    proxy = Proxy(target.ports[3].bound_port, lookup_for(KEY))
    await nursery.start(proxy.serve)
    with trio.fail_after(30):
        async with open_host(ControllerOptions(hostnqn=HOSTNQN, tls_key=KEY)) as host:
            entries = await host.discover("127.0.0.1", proxy.port)
    assert DEMO_NQN in {e.subnqn for e in entries}
    assert proxy.identities == [f"NVMe0R01 {HOSTNQN} {DISCOVERY_NQN}".encode()]


async def test_connect_controller_counts_failed_handshakes(
    proxy: Proxy, nursery: trio.Nursery
) -> None:
    counts = TlsCounts()
    options = ControllerOptions(hostnqn=HOSTNQN, tls_key=KEY2, kato_ms=0)
    with trio.fail_after(10), pytest.raises(TlsHandshakeError):
        await connect_controller(nursery, "127.0.0.1", proxy.port, DEMO_NQN, options,
                                 tls_counts=counts)  # fmt: skip
    assert (counts.ok, counts.failed) == (0, 1)


async def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    with trio.fail_after(60):
        code = await trio.to_thread.run_sync(main, list(argv))
    out, err = capsys.readouterr()
    return code, out, err


async def test_cli_over_tls(proxy: Proxy, capsys: pytest.CaptureFixture[str]) -> None:
    path = f"127.0.0.1:{proxy.port}"
    code, out, err = await run(capsys, "id-ctrl", "--path", path, "-n", DEMO_NQN, "-q", HOSTNQN,
                               "--tls_key", KEY, "-o", "json")  # fmt: skip
    assert code == 0, err
    assert '"subnqn"' in out
    code, out, err = await run(capsys, "id-ctrl", "--path", path, "-n", DEMO_NQN, "-q", HOSTNQN,
                               "--tls-key", OTHER_KEY)  # fmt: skip
    assert code == 1 and not out
    assert err.startswith(f"nvmeof id-ctrl: TLS handshake with {path} failed: ")
    assert err.count("\n") == 1 and OTHER_KEY not in err
    code, out, err = await run(capsys, "id-ctrl", "--path", path, "-n", DEMO_NQN)  # plain
    assert code == 1 and err.startswith(f"nvmeof id-ctrl: ICReq to {path} failed: ")
    assert err.endswith("; the port may require TLS (--tls)\n") and err.count("\n") == 1
