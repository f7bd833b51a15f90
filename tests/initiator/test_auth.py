"""The initiator's DH-HMAC-CHAP plumbing without a VM: the nvme-cli flags, ``gen-dhchap-key``,
secrets kept out of reprs, the error texts, and a connect to a target that does not ask for
authentication (ATR clear), where a configured secret is ignored as the Linux host ignores it
(``nvmf_connect_admin_queue`` / ``nvmf_connect_io_queue`` authenticate only when the Connect
result has ATR or ASCR set). The exchange itself is checked against nvmet in
tests/interop/test_kernel_auth_initiator.py (our own target's side comes later).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest
import trio

from initiator.auth import (
    AuthenticationError,
    AuthState,
    _failed,
    authenticate_queue,
    gen_dhchap_key,
    parse_secrets,
)
from initiator.cli import build_parser, main
from initiator.controller import ControllerOptions, connect_controller
from initiator.host import open_host
from initiator.metrics import initiator_registry
from nvmeof.auth.constants import CONNECT_AUTHREQ_ASCR, CONNECT_AUTHREQ_ATR, FailureReason
from nvmeof.auth.host import HostResult
from nvmeof.auth.secret import format_secret, generate_secret, parse_secret
from target.config import DEMO_NQN, default_config, with_free_ports
from target.daemon import Target

HOST_KEY = format_secret(generate_secret(bytes(range(32)), 1))
CTRL_KEY = format_secret(generate_secret(bytes(range(48)), 2))
CONNECTING = ("discover", "connect-all", "list-subsys", "id-ctrl", "id-ns", "ana-log", "read",
              "write", "bench", "resv-register", "resv-acquire", "resv-release", "resv-report")  # fmt: skip


# -- the command line --------------------------------------------------------------------------


@pytest.mark.parametrize("command", CONNECTING)
@pytest.mark.parametrize("short", [True, False])
def test_every_connecting_command_takes_the_dhchap_flags(command: str, short: bool) -> None:
    flags = ["-S", HOST_KEY, "-C", CTRL_KEY] if short else [
        f"--dhchap-secret={HOST_KEY}", f"--dhchap-ctrl-secret={CTRL_KEY}"]  # fmt: skip
    args = build_parser().parse_args([command, "--path", "127.0.0.1:4420", *flags])
    assert (args.dhchap_secret, args.dhchap_ctrl_secret) == (HOST_KEY, CTRL_KEY)


def test_flags_default_to_no_secret() -> None:
    args = build_parser().parse_args(["connect-all", "-a", "127.0.0.1"])
    assert (args.dhchap_secret, args.dhchap_ctrl_secret) == ("", "")


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["-S", "DHHC-1:01:nonsense:"], "--dhchap-secret: DHHC-1"),
        (["-S", HOST_KEY, "-C", HOST_KEY[:-6] + "AAAA:"], "--dhchap-ctrl-secret: DHHC-1"),
        (["-C", CTRL_KEY], "--dhchap-ctrl-secret needs --dhchap-secret"),
    ],
)
def test_bad_secret_is_one_line_usage_error(
    flags: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["id-ctrl", "--path", "127.0.0.1:1", "-n", DEMO_NQN, *flags]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert "nonsense" not in err  # no secret material echoed


@pytest.mark.parametrize("hmac", [0, 1, 2, 3])
@pytest.mark.parametrize("length", [32, 48, 64])
def test_gen_dhchap_key_parses_back(
    hmac: int, length: int, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["gen-dhchap-key", "--key-length", str(length), "--hmac", str(hmac)]) == 0
    secret = parse_secret(capsys.readouterr().out.strip())
    assert (secret.hmac_id, len(secret.key)) == (hmac, length)


def test_gen_dhchap_key_defaults_and_given_secret(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["gen-dhchap-key"]) == 0
    secret = parse_secret(capsys.readouterr().out)
    assert (secret.hmac_id, len(secret.key)) == (0, 32)
    assert main(["gen-dhchap-key", "-m", "3"]) == 0  # the digest size by default
    assert len(parse_secret(capsys.readouterr().out).key) == 64
    key = os.urandom(48)
    assert main(["gen-dhchap-key", "--secret", key.hex(), "--hmac", "2"]) == 0
    assert parse_secret(capsys.readouterr().out).key == key


def test_gen_dhchap_key_with_nqn_is_nvme_cli_2() -> None:
    key, nqn = bytes(range(32)), "nqn.2014-08.org.nvmexpress:uuid:1"
    text = gen_dhchap_key(32, 1, nqn=nqn, secret_hex=key.hex())
    assert parse_secret(text) == generate_secret(key, 1, nqn=nqn)
    assert parse_secret(text).key != key


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--secret", "zz"], "--secret: not a hexadecimal string"),
        (["--secret", "00" * 32, "-l", "48"], "--secret is 32 bytes, --key-length says 48"),
        (["--secret", "00" * 40], "key length 40: not 32, 48 or 64"),
        (["-m", "1", "-l", "64", "-n", "nqn.x"], "wants a 32-byte key"),
    ],
)
def test_gen_dhchap_key_errors(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["gen-dhchap-key", *argv]) == 2
    assert message in capsys.readouterr().err


# -- options and errors ------------------------------------------------------------------------


def test_secrets_stay_out_of_the_options_repr() -> None:
    options = ControllerOptions(dhchap_secret=HOST_KEY, dhchap_ctrl_secret=CTRL_KEY)
    text = repr(options)
    assert HOST_KEY not in text and CTRL_KEY not in text and "dhchap" not in text
    assert HOST_KEY.split(":")[2][:10] not in repr(parse_secrets(HOST_KEY, CTRL_KEY))


def test_options_refuse_bad_secrets() -> None:
    with pytest.raises(ValueError, match=r"^--dhchap-secret: DHHC-1 secret must start"):
        ControllerOptions(dhchap_secret="secret")
    with pytest.raises(ValueError, match="needs --dhchap-secret"):
        ControllerOptions(dhchap_ctrl_secret=CTRL_KEY)


@pytest.mark.parametrize(
    ("result", "text", "permanent"),
    [
        (HostResult(False, 1, True), "the controller answered failure1, reason FAILED (1)", True),
        (HostResult(False, 5, True), "failure1, reason DHGROUP_UNUSABLE (5)", True),
        (HostResult(False, 1), "response did not match (bidirectional): reason FAILED (1)", True),
        (HostResult(False, 7), "(type or T_ID): reason INCORRECT_MESSAGE (7)", True),
        (HostResult(False, 4), "unusable hash or hash length: reason HASH_UNUSABLE (4)", False),
        (HostResult(False, 6), "reason INCORRECT_PAYLOAD (6)", False),
    ],
)
def test_failure_texts_name_the_reason(result: HostResult, text: str, permanent: bool) -> None:
    err = _failed(2, result)
    assert str(err).startswith("qid 2: authentication failed: ") and str(err).endswith(text)
    assert (err.qid, err.reason, err.permanent) == (2, result.reason, permanent)
    assert FailureReason(err.reason)


def test_transaction_ids_count_per_controller() -> None:
    state = AuthState()
    assert [state.next_transaction_id() for _ in range(3)] == [0, 1, 2]
    state.transaction = 0xFFFF
    assert [state.next_transaction_id() for _ in range(2)] == [0xFFFF, 0]


# -- a target that does not ask for authentication ---------------------------------------------


@pytest.fixture
async def target(nursery: trio.Nursery) -> AsyncIterator[Target]:
    served: Target = await nursery.start(Target(with_free_ports(default_config())).serve)
    yield served
    served.stop()


async def test_secret_is_ignored_when_atr_is_clear(target: Target) -> None:
    port = target.ports[1].bound_port
    options = ControllerOptions(io_queues=2, dhchap_secret=HOST_KEY, dhchap_ctrl_secret=CTRL_KEY)
    with trio.fail_after(20):
        async with open_host(options) as host:
            session = await host.connect("127.0.0.1", port, DEMO_NQN)
            head = host.namespace(DEMO_NQN, 1)
            data = os.urandom(4096)
            await head.write(0, data)
            assert bytes(await head.read(0, 4096 // head.block_size)) == data
            auth = session.auth
            assert (auth.successes, auth.failures, auth.transaction) == (0, 0, 0)
            registry = initiator_registry(host)
            for result in ("success", "failure"):
                labels = {"path": session.label, "subsystem": DEMO_NQN, "result": result}
                assert registry.get_sample_value("nvmeof_initiator_auth_total", labels) == 0


async def test_no_auth_without_atr_even_on_a_raw_queue(
    target: Target, nursery: trio.Nursery
) -> None:
    """``authenticate_queue`` sends nothing for a Connect result without ATR/ASCR, and says
    what is missing or unsupported when they are set (checked before anything is sent)."""
    port = target.ports[1].bound_port
    with trio.fail_after(20):
        ctrl = await connect_controller(nursery, "127.0.0.1", port, DEMO_NQN,
                                        ControllerOptions(kato_ms=0, io_queues=0))  # fmt: skip
        try:
            commands = ctrl.admin.commands
            kwargs = dict(secret=None, ctrl_secret=None, hostnqn=ctrl.options.hostnqn,
                          subsysnqn=DEMO_NQN, state=ctrl.auth, timeout=5.0)  # fmt: skip
            assert not await authenticate_queue(ctrl.admin, 0, ctrl.cntlid, **kwargs)  # type: ignore[arg-type]
            with pytest.raises(AuthenticationError, match=(
                    r"^qid 0: the controller requires authentication: give --dhchap-secret$")):  # fmt: skip
                await authenticate_queue(ctrl.admin, 0, CONNECT_AUTHREQ_ATR, **kwargs)  # type: ignore[arg-type]
            with pytest.raises(AuthenticationError, match="secure channel"):
                await authenticate_queue(ctrl.admin, 0, CONNECT_AUTHREQ_ASCR, **kwargs)  # type: ignore[arg-type]
            assert ctrl.admin.commands == commands  # nothing was sent
            assert (ctrl.auth.successes, ctrl.auth.failures) == (0, 2)
        finally:
            await ctrl.shutdown()
