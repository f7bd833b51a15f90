"""Scenario files without a target: parsing (golden cases and one-line errors naming the field in
the file's own key names), durations, and the schedule (repeats, jitter, reverse steps, order,
determinism per seed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings, strategies as st

from target.config import ConfigError
from target.control.scenario import (
    ACTIONS,
    build_scenario,
    format_schedule,
    load_scenario,
    parse_duration,
    parse_scenario,
)

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "deploy" / "scenario.example.toml"


def schedule_of(text: str, seed: int | None = None) -> list[tuple[float, int, int, str]]:
    scenario = parse_scenario(text, "s.toml")
    return [(o.time, o.step.number, o.index, o.describe()) for o in scenario.schedule(seed)]


# -- durations ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "seconds"), [
    (5, 5.0), (0.25, 0.25), ("5s", 5.0), ("250ms", 0.25), ("1.5s", 1.5), ("2m", 120.0),
    ("1h", 3600.0), (" 10 ms ", 0.01), ("0s", 0.0), (".5s", 0.5), ("3MS", 0.003),
])  # fmt: skip
def test_durations(value: object, seconds: float) -> None:
    assert parse_duration(value) == pytest.approx(seconds)


@pytest.mark.parametrize(("value", "message"), [
    ("5", "not a duration: '5'"), ("5 sec", "not a duration"), ("-1s", "not a duration"),
    (-1, "must be between 0 and 86400"), ("2d", "not a duration"), (True, "got true"),
    ([1], "got list"), ("25h", "must be between 0 and 86400 seconds, got 90000"),
])  # fmt: skip
def test_bad_durations(value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_duration(value)


# -- golden cases ---------------------------------------------------------------------------------


def test_every_action_parses_with_its_arguments_ready_for_the_control_api() -> None:
    scenario = parse_scenario('''
        name = "all"
        seed = 42
        description = "one of each"
        [[step]]
        at = "100ms"
        action = "port-down"
        port = 1
        mode = "blackhole"
        duration = "50ms"
        [[step]]
        at = 0.2
        action = "port-up"
        port = 1
        [[step]]
        at = "300ms"
        action = "ana"
        port = 2
        group = 1
        state = "inaccessible"
        via_change_ms = 20
        duration = "1s"
        restore = "non-optimized"
        [[step]]
        at = "400ms"
        action = "fault-add"
        name = "slow"
        fault = { action = "delay", delay_ms = 5, opcode = "0x02", port = 1 }
        [[step]]
        at = "500ms"
        action = "fault-remove"
        name = "slow"
        [[step]]
        at = "600ms"
        action = "fault-clear"
        [[step]]
        at = "700ms"
        action = "ns-add"
        nqn = "nqn.x:a"
        nsid = 5
        size = "8M"
        block_size = 4096
        [[step]]
        at = "800ms"
        action = "ns-resize"
        nqn = "nqn.x:a"
        nsid = 5
        size = 16777216
        [[step]]
        at = "900ms"
        action = "ns-remove"
        nqn = "nqn.x:a"
        nsid = 5
        [[step]]
        at = "1s"
        action = "subsystem-add"
        nqn = "nqn.x:b"
        ports = [1, 2]
        allow_any_host = true
        model = "m"
        [[step.namespace]]
        nsid = 1
        size = "4M"
        [[step]]
        at = "1.1s"
        action = "subsystem-remove"
        nqn = "nqn.x:b"
        [[step]]
        at = "1.2s"
        action = "restart"
        [[step]]
        at = "1.3s"
        action = "wait"
        label = "let it settle"
        [[step]]
        at = "1.4s"
        action = "mark"
        label = "done"
        [[step]]
        at = "1.5s"
        action = "resv-clear"
        nqn = "nqn.x:a"
        nsid = 5
    ''', "all.toml")  # fmt: skip
    assert (scenario.name, scenario.seed, scenario.description) == ("all", 42, "one of each")
    assert sorted(s.action for s in scenario.steps) == sorted(ACTIONS)
    params = [dict(s.params) for s in scenario.steps]
    assert params[0] == {"port": 1, "mode": "blackhole"}
    assert params[2] == {"port": 2, "group": 1, "state": "inaccessible", "via_change_ms": 20,
                         "restore": "non-optimized"}  # fmt: skip
    assert params[3] == {"fault": {"action": "delay", "port": 1, "opcode": 2, "delay_ms": 5},
                         "name": "slow"}  # fmt: skip
    assert params[6] == {"nqn": "nqn.x:a", "nsid": 5, "size": "8M", "block_size": 4096}
    assert params[9] == {"nqn": "nqn.x:b", "allow_any_host": True, "model": "m",
                         "namespace": [{"nsid": 1, "size": "4M"}], "ports": [1, 2]}  # fmt: skip
    assert params[11] == {} and scenario.steps[12].label == "let it settle"
    lines = format_schedule(scenario.schedule())
    assert lines[:3] == ["+0.100s  step[0]#0  port-down port=1 mode=blackhole",
                         "+0.150s  step[0]#0  port-up port=1 (end of step[0])",
                         "+0.200s  step[1]#0  port-up port=1"]  # fmt: skip
    assert "+1.300s  step[2]#0  ana port=2 group=1 state=non-optimized (end of step[2])" in lines
    assert params[14] == {"nqn": "nqn.x:a", "nsid": 5}
    assert lines[-2:] == ["+1.400s  step[13]#0  mark done",
                          "+1.500s  step[14]#0  resv-clear nqn=nqn.x:a nsid=5"]  # fmt: skip


def test_the_name_defaults_to_the_file_stem_and_the_seed_to_zero(tmp_path: Path) -> None:
    path = tmp_path / "flap-port-1.toml"
    path.write_text('[[step]]\nat = 0\naction = "restart"\n')
    scenario = load_scenario(path)
    assert (scenario.name, scenario.seed) == ("flap-port-1", 0)


def test_repeat_jitter_and_duration_expand_in_time_order_with_a_stable_tie_break() -> None:
    text = '''
        seed = 3
        [[step]]
        at = "1s"
        action = "port-down"
        port = 1
        duration = "200ms"
        repeat = 3
        every = "1s"
        [[step]]
        at = "1s"                # same time as step[0]#0: file order decides
        action = "mark"
        label = "tie"
        [[step]]
        at = "0.5s"              # earlier in time, later in the file
        action = "mark"
        label = "early"
    '''  # fmt: skip
    assert schedule_of(text) == [
        (0.5, 2, 0, "mark early"),
        (1.0, 0, 0, "port-down port=1 mode=reset"),
        (1.0, 1, 0, "mark tie"),
        (1.2, 0, 0, "port-up port=1 (end of step[0])"),
        (2.0, 0, 1, "port-down port=1 mode=reset"),
        (2.2, 0, 1, "port-up port=1 (end of step[0])"),
        (3.0, 0, 2, "port-down port=1 mode=reset"),
        (3.2, 0, 2, "port-up port=1 (end of step[0])"),
    ]
    jittered = text.replace('every = "1s"', 'every = "1s"\njitter = "100ms"')
    first = schedule_of(jittered)
    assert first == schedule_of(jittered) == schedule_of(jittered, seed=3)
    assert first != schedule_of(jittered, seed=4)
    downs = [t for t, number, _, what in first if number == 0 and "down" in what]
    ups = [t for t, number, _, what in first if number == 0 and "up" in what]
    for index, (down, up) in enumerate(zip(downs, ups, strict=True)):
        assert 1.0 + index <= down <= 1.1 + index and up == pytest.approx(down + 0.2)


def test_the_example_file_parses() -> None:
    scenario = load_scenario(EXAMPLE)
    assert scenario.name == "example" and len(scenario.steps) >= 10
    assert {s.action for s in scenario.steps} >= {"port-down", "ana", "fault-add", "restart"}


# -- one-line errors ------------------------------------------------------------------------------

STEP = '[[step]]\nat = "1s"\n'


@pytest.mark.parametrize(("text", "message"), [
    ("", "s.toml: step: a scenario needs at least one [[step]]"),
    ("seed = 1\n[[step]\n", "s.toml: invalid TOML: "),
    ('nmae = "x"\n' + STEP + 'action = "restart"', "s.toml: nmae: unknown key"),
    ('seed = "7"\n' + STEP + 'action = "restart"', "s.toml: seed: must be an integer, got '7'"),
    ('name = ""\n' + STEP + 'action = "restart"', "s.toml: name: must be a non-empty"),
    ('[[step]]\naction = "restart"', "s.toml: step[0].at: missing"),
    (STEP, "s.toml: step[0].action: missing"),
    (STEP + 'action = "explode"', "s.toml: step[0].action: must be one of port-down, port-up"),
    ('[[step]]\nat = "soon"\naction = "restart"', "s.toml: step[0].at: not a duration: 'soon'"),
    (STEP + 'action = "restart"\nport = 1',
     "s.toml: step[0].port: unknown key for restart (it takes no keys of its own)"),
    (STEP + 'action = "port-down"\nprot = 1',
     "s.toml: step[0].prot: unknown key for port-down (it takes duration, mode, port)"),
    (STEP + 'action = "port-down"', "s.toml: step[0].port: missing"),
    (STEP + 'action = "port-down"\nport = "1"', "s.toml: step[0].port: must be an integer"),
    (STEP + 'action = "port-down"\nport = 1\nmode = "rst"',
     "s.toml: step[0].mode: must be one of reset, close, blackhole, refuse, got 'rst'"),
    (STEP + 'action = "port-up"\nport = 70000', "s.toml: step[0].port: must be a port ID"),
    (STEP + 'action = "ana"\nport = 1\ngroup = 1', "s.toml: step[0].state: missing (one of"),
    (STEP + 'action = "ana"\nport = 1\ngroup = 0\nstate = "optimized"',
     "s.toml: step[0].group: must be an ANA group 1..128, got 0"),
    (STEP + 'action = "ana"\nport = 1\ngroup = 1\nstate = "down"',
     "s.toml: step[0].state: must be one of optimized, "),
    (STEP + 'action = "ana"\nport = 1\ngroup = 1\nstate = "optimized"\nrestore = "optimized"',
     "s.toml: step[0].restore: only means something with duration"),
    (STEP + 'action = "fault-add"', "s.toml: step[0].fault: missing: the rule"),
    (STEP + 'action = "fault-add"\nfault = { action = "explode" }',
     "s.toml: step[0].fault.action: must be one of delay, status"),
    (STEP + 'action = "fault-add"\nfault = { action = "delay", probability = 2 }',
     "s.toml: step[0].fault.probability: must be between 0 and 1, got 2.0"),
    (STEP + 'action = "fault-add"\nfault = { action = "delay", dealy_ms = 2 }',
     "s.toml: step[0].fault.dealy_ms: unknown key"),
    (STEP + 'action = "fault-remove"\nname = "slow"',
     "s.toml: step[0].name: no fault-add step is named 'slow'"),
    (STEP + 'action = "fault-remove"', "s.toml: step[0].name: missing"),
    (STEP + 'action = "ns-add"\nnsid = 1', "s.toml: step[0].nqn: missing"),
    (STEP + 'action = "ns-add"\nnqn = "n"', "s.toml: step[0].nsid: missing"),
    (STEP + 'action = "ns-add"\nnqn = "n"\nnsid = 1\nsize = "lots"',
     "s.toml: step[0].size: not a size: 'lots'"),
    (STEP + 'action = "ns-add"\nnqn = "n"\nnsid = 1\nsize = 1000',
     "s.toml: step[0].size: 1000 is not a multiple of block_size 512"),
    (STEP + 'action = "ns-add"\nnqn = "n"\nnsid = 1\nbackend = "tape"',
     "s.toml: step[0].backend: must be one of ram, file, null, got 'tape'"),
    (STEP + 'action = "ns-resize"\nnqn = "n"\nnsid = 1', "s.toml: step[0].size: missing"),
    (STEP + 'action = "ns-remove"\nnqn = "n"\nnsid = 0', "s.toml: step[0].nsid: must be 1.."),
    (STEP + 'action = "subsystem-add"\nnqn = "n"\nports = ["1"]',
     "s.toml: step[0].ports: must be an array of port IDs"),
    (STEP + 'action = "subsystem-add"\nnqn = "n"\n[[step.namespace]]\nnsid = 1\nsise = 1',
     "s.toml: step[0].namespace[0].sise: unknown key"),
    (STEP + 'action = "subsystem-remove"', "s.toml: step[0].nqn: missing"),
    (STEP + 'action = "mark"\nrepeat = 3', "s.toml: step[0].every: missing: a step with"),
    (STEP + 'action = "mark"\nrepeat = 0\nevery = 1', "s.toml: step[0].repeat: must be 1..10000"),
    (STEP + 'action = "mark"\nevery = 1', "s.toml: step[0].every: only means something with"),
    (STEP + 'action = "port-down"\nport = 1\nrepeat = 2\nevery = "1s"\nduration = "1s"',
     "s.toml: step[0].every: must exceed duration + jitter (1s)"),
    (STEP + 'action = "mark"\nlabel = 5', "s.toml: step[0].label: must be a string, got 5"),
    (STEP + 'action = "mark"\n' + STEP + 'action = "mark"\njitter = "a while"',
     "s.toml: step[1].jitter: not a duration"),
])  # fmt: skip
def test_errors_are_one_line_naming_the_field(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_scenario(text, "s.toml")
    assert str(err.value).startswith(message), str(err.value)
    assert "\n" not in str(err.value)


def test_an_unreadable_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"missing\.toml: cannot read: No such file"):
        load_scenario(tmp_path / "missing.toml")


# -- the schedule as a property -------------------------------------------------------------------

_SECONDS = st.integers(min_value=0, max_value=5000).map(lambda ms: ms / 1000)


@st.composite
def steps(draw: st.DrawFn) -> dict[str, Any]:
    step: dict[str, Any] = {"at": draw(_SECONDS), "action": "port-down", "port": 1}
    jitter = draw(st.sampled_from([0, 0, 0.05, 0.3]))
    duration = draw(st.one_of(st.none(), _SECONDS))
    repeat = draw(st.integers(min_value=1, max_value=5))
    if jitter:
        step["jitter"] = jitter
    if duration is not None:
        step["duration"] = duration
    if repeat > 1:
        step["repeat"] = repeat
        step["every"] = (duration or 0) + jitter + draw(st.integers(1, 2000)) / 1000
    return step


@settings(deadline=None, max_examples=200)
@given(st.lists(steps(), min_size=1, max_size=8), st.integers(0, 2**32), st.integers(0, 2**32))
def test_schedules_are_sorted_complete_and_deterministic_per_seed(
    table: list[dict[str, Any]], seed: int, other: int
) -> None:
    scenario = build_scenario({"step": table}, "prop")
    first = scenario.schedule(seed)
    assert first == scenario.schedule(seed)
    keys = [(o.time, o.step.number, o.index, o.undo) for o in first]
    assert keys == sorted(keys)
    expected = sum(s.repeat * (2 if s.duration is not None else 1) for s in scenario.steps)
    assert len(first) == expected
    for occurrence in first:
        step = occurrence.step
        start = step.at + occurrence.index * step.every
        low = start + (step.duration or 0.0 if occurrence.undo else 0.0)
        assert low - 1e-6 <= occurrence.time <= low + step.jitter + 1e-6
    # Two jittered occurrences drawn alike by two seeds: about one chance in 2.5e9.
    if sum(s.repeat for s in scenario.steps if s.jitter) >= 2 and seed != other:
        assert [o.time for o in first] != [o.time for o in scenario.schedule(other)]


def test_the_dry_run_shown_in_the_documentation_is_what_the_seed_gives() -> None:
    doc = (ROOT / "docs" / "SCENARIOS.md").read_text()
    example = doc.split("```toml\n", 1)[1].split("```", 1)[0]
    shown = doc.split("(dry run)\n", 1)[1].split("```", 1)[0].splitlines()
    assert format_schedule(parse_scenario(example, "flap.toml").schedule()) == shown
