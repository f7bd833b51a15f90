"""Target metrics over real loopback: an in-process target on free ports, I/O from the
initiator's controller, then ``registry.get_sample_value`` on a registry of our own; plus the
deploy/ files (alert rules, Grafana dashboard) checked against the names the collectors export.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import trio
from prometheus_client import CollectorRegistry, generate_latest

from initiator.controller import ControllerOptions, HostController, connect_controller
from initiator.host import Host
from initiator.metrics import initiator_registry
from initiator.queue import HostQueue
from nvmeof.constants import CNTLID_DYNAMIC, AnaState, FabricsType
from nvmeof.status import StatusCode
from nvmeof.wire.fabrics import CONNECT_COMMAND, CONNECT_DATA
from target.config import NamespaceConfig, PortConfig, SubsystemConfig, TargetConfig
from target.control.metrics import opcode_name, status_name, target_registry
from target.daemon import Target
from target.state import IO_OPCODES

HOST = "127.0.0.1"
NQN = "nqn.2026-11.io.nvmeof-emu:metrics"
HOSTNQN = "nqn.2014-08.org.nvmexpress:uuid:00000000-0000-4000-8000-0000000000aa"
DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def config() -> TargetConfig:
    sub = SubsystemConfig(
        nqn=NQN,
        namespaces=(NamespaceConfig(nsid=1, size=1 << 20), NamespaceConfig(nsid=2, size=1 << 20)),
    )
    return TargetConfig(
        subsystems=(sub,),
        ports=(
            PortConfig(id=1, port=0, subsystems=(NQN,), ana_states=((1, AnaState.OPTIMIZED),)),
            PortConfig(id=2, port=0, subsystems=(NQN,),
                       ana_states=((1, AnaState.NON_OPTIMIZED),)),
        ),
    )  # fmt: skip


@pytest.fixture
async def target(nursery: trio.Nursery) -> AsyncIterator[Target]:
    with trio.fail_after(5):
        served: Target = await nursery.start(Target(config()).serve)
    yield served
    served.stop()


async def connect(nursery: trio.Nursery, target: Target, port_id: int = 1,
                  **options: int) -> HostController:  # fmt: skip
    opts = ControllerOptions(hostnqn=HOSTNQN, io_queues=1, command_timeout=5,
                             **options)  # type: ignore[arg-type]  # fmt: skip
    with trio.fail_after(5):
        return await connect_controller(nursery, HOST, target.ports[port_id].bound_port, NQN, opts)


def sampler(registry: CollectorRegistry) -> Callable[..., float | None]:
    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    return value


async def until(condition: Callable[[], bool], limit: float = 5.0) -> None:
    """Poll state that the target's own tasks change (bounded)."""
    with trio.fail_after(limit):
        while not condition():  # noqa: ASYNC110 - no event to wait on
            await trio.sleep(0.01)


def commands_on(registry: CollectorRegistry, port: str) -> float:
    return sum(s.value for family in registry.collect() for s in family.samples
               if s.name == "nvmeof_target_commands_total" and s.labels["port"] == port)  # fmt: skip


# -- commands, bytes, queues, controllers -------------------------------------------------------------


async def test_commands_bytes_connections_and_latency(nursery: trio.Nursery,
                                                      target: Target) -> None:  # fmt: skip
    registry = target_registry(target)
    value = sampler(registry)
    assert value("nvmeof_target_connections", port="1") == 0
    ctrl = await connect(nursery, target)
    with trio.fail_after(5):
        assert (await ctrl.write(1, 0, b"\xa5" * 4096, 512)).ok
        assert (await ctrl.write(2, 8, b"\x5a" * 1024, 512)).ok
        done, data = await ctrl.read(1, 0, 8, 512)
        assert done.ok and data == b"\xa5" * 4096
        assert not (await ctrl.read(1, 1 << 20, 1, 512))[0].ok  # beyond the namespace

    assert value("nvmeof_target_commands_total", port="1", opcode="write", status="success") == 2
    assert value("nvmeof_target_commands_total", port="1", opcode="read", status="success") == 1
    # Beyond the namespace nvmet's block device backend answers Internal Error (target.io)
    assert value("nvmeof_target_commands_total", port="1", opcode="read", status="internal") == 1
    fabrics = value("nvmeof_target_commands_total", port="1", opcode="fabrics", status="success")
    assert (fabrics or 0) >= 4  # Connect x2, Property Get and Set
    assert value("nvmeof_target_commands_total", port="1", opcode="identify",
                 status="success") == 1  # fmt: skip
    assert value("nvmeof_target_read_bytes_total", subsystem=NQN, nsid="1") == 4096
    assert value("nvmeof_target_written_bytes_total", subsystem=NQN, nsid="1") == 4096
    assert value("nvmeof_target_written_bytes_total", subsystem=NQN, nsid="2") == 1024
    assert value("nvmeof_target_read_bytes_total", subsystem=NQN, nsid="2") == 0
    assert value("nvmeof_target_connections", port="1") == 2  # admin + one I/O queue
    assert value("nvmeof_target_connections", port="2") == 0
    assert value("nvmeof_target_controllers", subsystem=NQN, host=HOSTNQN) == 1
    assert value("nvmeof_target_inflight_commands", port="1") == 0
    # Every completed command has a latency sample (no AER was sent here).
    count = value("nvmeof_target_command_latency_seconds_count", port="1")
    assert count == commands_on(registry, "1") > 0
    assert value("nvmeof_target_command_latency_seconds_bucket", port="1", le="+Inf") == count
    assert (value("nvmeof_target_command_latency_seconds_sum", port="1") or 0) > 0
    assert value("nvmeof_target_command_latency_seconds_count", port="2") == 0

    await ctrl.shutdown()
    await until(lambda: value("nvmeof_target_connections", port="1") == 0)
    assert value("nvmeof_target_controllers", subsystem=NQN, host=HOSTNQN) is None
    # Counters outlive the connections that bumped them.
    assert value("nvmeof_target_commands_total", port="1", opcode="write", status="success") == 2


async def test_latency_of_a_delayed_command(nursery: trio.Nursery, target: Target) -> None:
    """A command answered later (a delay fault) is timed on its own, from its arrival."""
    value = sampler(target_registry(target))
    ctrl = await connect(nursery, target, kato_ms=0)  # no Keep Alives in between

    def latency(suffix: str, **labels: str) -> float:
        return value(f"nvmeof_target_command_latency_seconds_{suffix}", port="1", **labels) or 0

    count, fast, total = latency("count"), latency("bucket", le="0.05"), latency("sum")
    target.fault_add({"action": "delay", "delay_ms": 60, "count": 1})
    with trio.fail_after(5):
        assert (await ctrl.read(1, 0, 1, 512))[0].ok
    assert latency("count") == count + 1
    assert latency("bucket", le="0.05") == fast  # not in a bucket below 50 ms
    assert latency("bucket", le="+Inf") == count + 1
    assert latency("sum") - total >= 0.06


async def test_inflight_counts_a_dropped_command(nursery: trio.Nursery, target: Target) -> None:
    value = sampler(target_registry(target))
    ctrl = await connect(nursery, target)
    target.fault_add({"action": "drop", "count": 1})
    with trio.fail_after(5):
        async with trio.open_nursery() as reads:
            reads.start_soon(ctrl.read, 1, 0, 1, 512)
            await until(lambda: value("nvmeof_target_inflight_commands", port="1") == 1)
            reads.cancel_scope.cancel()
    assert value("nvmeof_target_faults_fired_total", action="drop") == 1


# -- faults, keep-alive, TermReqs -------------------------------------------------------------------------


async def test_fault_status_is_counted(nursery: trio.Nursery, target: Target) -> None:
    value = sampler(target_registry(target))
    assert value("nvmeof_target_faults_fired_total", action="status") == 0
    assert value("nvmeof_target_fault_rules") == 0
    ctrl = await connect(nursery, target)
    target.fault_add({"action": "status", "status": 0x370, "count": 2})
    assert value("nvmeof_target_fault_rules") == 1
    with trio.fail_after(5):
        for _ in range(3):
            await ctrl.read(1, 0, 1, 512)
    assert value("nvmeof_target_faults_fired_total", action="status") == 2
    assert value("nvmeof_target_commands_total", port="1", opcode="read",
                 status="host_path_error") == 2  # fmt: skip
    assert value("nvmeof_target_commands_total", port="1", opcode="read", status="success") == 1


async def test_keepalive_expiration_is_counted(nursery: trio.Nursery, target: Target) -> None:
    """A host that connects with KATO 200 ms and never sends a Keep Alive."""
    value = sampler(target_registry(target))
    assert value("nvmeof_target_keepalive_expirations_total") == 0
    with trio.fail_after(5):
        admin = await HostQueue.connect(nursery, HOST, target.ports[1].bound_port, qid=0,
                                        depth=8)  # fmt: skip
        sqe = CONNECT_COMMAND.build(dict(fctype=FabricsType.CONNECT, qid=0, sqsize=7, kato=200))
        data = CONNECT_DATA.build(dict(hostid=bytes(16), cntlid=CNTLID_DYNAMIC, subsysnqn=NQN,
                                       hostnqn=HOSTNQN))  # fmt: skip
        assert (await admin.submit(sqe, write=data, timeout=5)).ok
    assert value("nvmeof_target_controllers", subsystem=NQN, host=HOSTNQN) == 1
    await until(lambda: value("nvmeof_target_keepalive_expirations_total") == 1)
    await until(lambda: value("nvmeof_target_controllers", subsystem=NQN, host=HOSTNQN) is None)


async def test_termreq_sent_on_a_protocol_error(target: Target) -> None:
    value = sampler(target_registry(target))
    with trio.fail_after(5):
        stream = await trio.open_tcp_stream(HOST, target.ports[2].bound_port)
        async with stream:
            await stream.send_all(b"\xee\x00\x08\x00\x08\x00\x00\x00")  # unknown PDU type
            reply = await stream.receive_some(4096)
            assert reply[:1] == b"\x03"  # C2HTermReq
    await until(lambda: value("nvmeof_target_termreqs_sent_total") == 1)


# -- ANA and ports ------------------------------------------------------------------------------------------


async def test_ana_states_and_port_modes(target: Target) -> None:
    value = sampler(target_registry(target))
    assert value("nvmeof_target_ana_state", port="1", group="1", state="optimized") == 1
    assert value("nvmeof_target_ana_state", port="1", group="1", state="inaccessible") == 0
    assert value("nvmeof_target_ana_state", port="2", group="1", state="non-optimized") == 1
    assert value("nvmeof_target_ana_state_code", port="2", group="1") == AnaState.NON_OPTIMIZED
    assert value("nvmeof_target_ana_changes_total") == 0

    target.set_ana(2, 1, "inaccessible")
    assert value("nvmeof_target_ana_state", port="2", group="1", state="inaccessible") == 1
    assert value("nvmeof_target_ana_state", port="2", group="1", state="non-optimized") == 0
    assert value("nvmeof_target_ana_state_code", port="2", group="1") == AnaState.INACCESSIBLE
    assert value("nvmeof_target_ana_changes_total") == 1

    assert value("nvmeof_target_port_up", port="2") == 1
    assert value("nvmeof_target_port_mode", port="2", mode="up") == 1
    await target.port_down(2, "refuse")
    assert value("nvmeof_target_port_up", port="2") == 0
    assert value("nvmeof_target_port_mode", port="2", mode="refuse") == 1
    assert value("nvmeof_target_port_mode", port="2", mode="up") == 0
    await trio.sleep(0.05)  # the listener task closes its socket before the port binds again
    await target.port_up(2)
    assert value("nvmeof_target_port_up", port="2") == 1


def test_label_names() -> None:
    assert opcode_name(0x06) == "identify"
    assert opcode_name(IO_OPCODES + 0x02) == "read"
    assert opcode_name(IO_OPCODES + 0x7F) == opcode_name(0x7F) == "fabrics"
    assert opcode_name(0xC1) == "admin_0xc1"
    assert status_name(0) == "success"
    assert status_name(StatusCode.ANA_INACCESSIBLE) == "ana_inaccessible"
    assert status_name(0x7EE) == "0x7ee"


def test_exposition_names_follow_conventions() -> None:
    text = generate_latest(target_registry(Target(config()))).decode()
    types = dict(line.split()[2:4] for line in text.splitlines() if line.startswith("# TYPE"))
    assert len(types) >= 15 and all(name.startswith("nvmeof_target_") for name in types)
    assert all(name.endswith("_total") for name, kind in types.items() if kind == "counter")
    histograms = {name for name, kind in types.items() if kind == "histogram"}
    assert histograms == {"nvmeof_target_command_latency_seconds"}


# -- deploy/: dashboard and alert rules use only names we export -------------------------------------------


def exported_names() -> set[str]:
    """Every sample name the two collectors can produce (families are listed even when empty)."""
    names = {"up"}  # Prometheus' own

    async def collect() -> None:
        async with trio.open_nursery() as nursery:
            registries = [target_registry(Target(config())),
                          initiator_registry(Host(nursery, ControllerOptions()))]  # fmt: skip
            for registry in registries:
                for family in registry.collect():
                    if family.type == "counter":
                        names.add(f"{family.name}_total")
                    elif family.type == "histogram":
                        names.update(f"{family.name}{s}" for s in ("_bucket", "_count", "_sum"))
                    else:
                        names.add(family.name)

    trio.run(collect)
    return names


def dashboard_exprs() -> list[tuple[str, str]]:
    dashboard = json.loads((DEPLOY / "grafana" / "nvmeof.json").read_text())
    assert dashboard["schemaVersion"] >= 36
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    exprs: list[tuple[str, str]] = []
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
        exprs.extend((panel["title"], t["expr"]) for t in panel["targets"])
    return exprs


def alert_exprs() -> list[tuple[str, str]]:
    text = (DEPLOY / "alerts.yml").read_text()
    # Plain YAML without a YAML library: an expr is a one-line value or a "|" block.
    exprs: list[tuple[str, str]] = []
    for match in re.finditer(r"- alert: (\w+)\n((?: {8,}.*\n)+)", text):
        body = match.group(2)
        expr = re.search(r"expr: \|\n((?: {10,}.*\n)+)|expr: (.*)\n", body)
        assert expr is not None, match.group(1)
        exprs.append((match.group(1), expr.group(1) or expr.group(2)))
    return exprs


METRIC = re.compile(r"\b(nvmeof_[a-z0-9_]+|up)\b(?!\s*\()")


def test_dashboard_and_alerts_use_exported_names() -> None:
    exported = exported_names()
    dashboard, alerts = dashboard_exprs(), alert_exprs()
    assert len(alerts) >= 5 and {"NvmeofNoOptimizedPath", "NvmeofPathDown",
                                 "NvmeofFailoverStorm", "NvmeofTargetPortDown"} <= dict(alerts).keys()  # fmt: skip
    for where, expr in dashboard + alerts:
        used = set(METRIC.findall(expr))
        assert used, f"{where}: no metric in {expr!r}"
        assert used <= exported, f"{where}: {sorted(used - exported)} are not exported"
    titles = " ".join(where for where, _ in dashboard)
    for topic in ("IOPS", "Requeues", "ANA state per (port, group)", "ANA state per path",
                  "Failover time", "commands by status"):  # fmt: skip
        assert topic in titles


PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed "
                                    "(Debian: apt-get install prometheus)")  # fmt: skip

RULE_TESTS = """
rule_files: [{rules}]
evaluation_interval: 15s
tests:
  - interval: 15s
    input_series:
      - series: 'nvmeof_initiator_path_state{{job="i",instance="h",path="a:1",subsystem="s",nsid="1",state="live"}}'
        values: '1 1 0 0 0 0 0'
      - series: 'nvmeof_initiator_path_ana_state{{job="i",instance="h",path="a:1",subsystem="s",nsid="1",state="optimized"}}'
        values: '1 1 1 1 1 1 1'
      - series: 'nvmeof_initiator_path_state{{job="i",instance="h",path="b:2",subsystem="s",nsid="1",state="live"}}'
        values: '1 1 1 1 1 1 1'
      - series: 'nvmeof_initiator_path_ana_state{{job="i",instance="h",path="b:2",subsystem="s",nsid="1",state="optimized"}}'
        values: '0 0 0 0 0 0 0'
      - series: 'nvmeof_initiator_failovers_total{{job="i",instance="h",subsystem="s",nsid="1"}}'
        values: '0+2x40'
      - series: 'nvmeof_target_port_up{{job="nvmeof-target",instance="t",port="1"}}'
        values: '1 0 0 0 0 0 0'
    alert_rule_test:
      - eval_time: 15s
        alertname: NvmeofNoOptimizedPath
        exp_alerts: []
      - eval_time: 75s
        alertname: NvmeofNoOptimizedPath
        exp_alerts:
          - exp_labels: {{severity: critical, job: i, instance: h, subsystem: s, nsid: "1"}}
      - eval_time: 75s
        alertname: NvmeofPathDown
        exp_alerts:
          - exp_labels: {{severity: warning, job: i, instance: h, path: "a:1", subsystem: s, nsid: "1", state: live}}
      - eval_time: 75s
        alertname: NvmeofTargetPortDown
        exp_alerts:
          - exp_labels: {{severity: warning, job: nvmeof-target, instance: t, port: "1"}}
      - eval_time: 10m
        alertname: NvmeofFailoverStorm
        exp_alerts:
          - exp_labels: {{severity: warning, job: i, instance: h, subsystem: s, nsid: "1"}}
"""


def without_annotations(rules: str) -> str:
    """The rules with their annotations removed (promtool's unit tests compare them too)."""
    return re.sub(r"\n {8}annotations:\n(?: {10}.*\n)+", "\n", rules)


def promtool(*args: str) -> str:
    assert PROMTOOL is not None
    done = subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@needs_promtool
def test_promtool_accepts_config_and_rules() -> None:
    promtool("check", "config", str(DEPLOY / "prometheus.yml"))
    promtool("check", "rules", str(DEPLOY / "alerts.yml"))


@needs_promtool
def test_alert_rules_fire_as_intended(tmp_path: Path) -> None:
    rules = tmp_path / "alerts.yml"
    rules.write_text(without_annotations((DEPLOY / "alerts.yml").read_text()))
    assert "annotations" not in rules.read_text()
    tests = tmp_path / "alerts_test.yml"
    tests.write_text(RULE_TESTS.format(rules=json.dumps(str(rules))))
    promtool("test", "rules", str(tests))


@needs_promtool
def test_dashboard_queries_parse(tmp_path: Path) -> None:
    """Each dashboard query, as a recording rule, passes ``promtool check rules``."""
    rules = ["groups:", "  - name: dashboard", "    rules:"]
    for index, (_, expr) in enumerate(dashboard_exprs()):
        concrete = expr.replace("$__rate_interval", "1m")
        rules.append(f"      - record: dashboard:query{index}")
        rules.append(f"        expr: {json.dumps(concrete)}")
    path = tmp_path / "dashboard_rules.yml"
    path.write_text("\n".join(rules) + "\n")
    promtool("check", "rules", str(path))
