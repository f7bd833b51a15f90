"""Running a scenario's schedule against a target through its control API.

:class:`ScenarioRunner` does each :class:`~target.control.scenario.Occurrence` at its offset
from the start (``trio.sleep_until``, so a slow step delays the next one but never shifts the
ones after it), then posts a marker (``POST /events``) so the step is in the target's audit
trail and counted in ``nvmeof_target_scenario_steps_total{scenario,action}``. Each step is logged
with its offset and result and, with ``log_path``, written as one JSON line::

    {"scenario": "flap", "t": 0.5, "elapsed": 0.5012, "time": 1767225600.123, "step": 0,
     "index": 0, "action": "port-down", "what": "port-down port=1 mode=reset", "ok": true,
     "detail": "2 connections affected"}

``t`` is the scheduled offset, ``elapsed`` when it ran, ``time`` the Unix time it ran (what
``nvmeof bench --events`` aligns with its own clock). A refused step stops the run (the target
is left as the steps so far made it: reverse steps not yet due are not done) unless
``keep_going``; the failing result carries the API's one-line message.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import trio

from target.control.aclient import AsyncControlClient
from target.control.clientbase import ControlApiError, ControlNotFound, Endpoint
from target.control.scenario import Occurrence, Scenario

log = logging.getLogger("nvmeof.target")


class StepRefused(Exception):
    """A step the runner itself cannot do (a fault name with no rule behind it): one line."""


class ScenarioFailed(Exception):
    """A scenario stopped at a refused step; the message names the step and the reason."""


@dataclass(frozen=True)
class StepResult:
    """What happened to one occurrence."""

    scenario: str
    t: float  # scheduled offset, seconds
    elapsed: float  # when it ran, seconds from the start
    time: float  # Unix time when it ran
    step: int
    index: int
    action: str
    what: str
    ok: bool
    detail: str

    def record(self) -> dict[str, Any]:
        """The JSON line of the step log."""
        return {**asdict(self), "elapsed": round(self.elapsed, 4)}

    def replay_key(self) -> tuple[float, int, int, str, str, bool]:
        """What two runs of one schedule must agree on (timing and counts aside)."""
        return self.t, self.step, self.index, self.action, self.what, self.ok

    def line(self) -> str:
        """``+0.500s step[0]#0 port-down port=1 mode=reset: ok (2 connections affected)``."""
        late = self.elapsed - self.t
        lateness = f" [{late * 1000:.0f} ms late]" if late >= 0.05 else ""
        outcome = "ok" if self.ok else "FAILED"
        if self.detail:
            outcome += f" ({self.detail})" if self.ok else f": {self.detail}"
        return f"+{self.t:.3f}s step[{self.step}]#{self.index} {self.what}: {outcome}{lateness}"


def first_failure(results: list[StepResult]) -> StepResult | None:
    return next((r for r in results if not r.ok), None)


class ScenarioRunner:
    """Runs one scenario's schedule through ``client`` (one run per instance)."""

    def __init__(
        self,
        client: AsyncControlClient,
        scenario: Scenario,
        *,
        seed: int | None = None,
        keep_going: bool = False,
        log_path: str | Path | None = None,
        on_step: Callable[[StepResult], object] | None = None,
    ) -> None:
        self.client = client
        self.scenario = scenario
        self.schedule = scenario.schedule(seed)
        self.keep_going = keep_going
        self.log_path = log_path
        self.on_step = on_step
        self.results: list[StepResult] = []
        # Fault rules this run added: by occurrence (for its reverse step) and by step name.
        self._rules: dict[tuple[int, int], int] = {}
        self._named: dict[str, list[int]] = {}

    async def run(self) -> list[StepResult]:
        """Do every occurrence at its time; the results (up to the failing one, by default)."""
        step_log = None if self.log_path is None else await trio.open_file(self.log_path, "w")
        try:
            start = trio.current_time()
            for occurrence in self.schedule:
                await trio.sleep_until(start + occurrence.time)
                result = await self._run_one(occurrence, trio.current_time() - start)
                self.results.append(result)
                if step_log is not None:
                    await step_log.write(json.dumps(result.record()) + "\n")
                    await step_log.flush()  # a reader may follow the file as it grows
                if self.on_step is not None:
                    self.on_step(result)
                if not result.ok and not self.keep_going:
                    break
        finally:
            if step_log is not None:
                with trio.CancelScope(shield=True):
                    await step_log.aclose()
        return self.results

    async def _run_one(self, occurrence: Occurrence, elapsed: float) -> StepResult:
        wall = time.time()
        what = occurrence.describe()
        try:
            detail = await self._perform(occurrence)
            ok = True
        except (ControlApiError, StepRefused) as err:
            detail, ok = str(err), False
        marker = f"step[{occurrence.step.number}]#{occurrence.index} {what}: " + (
            f"ok{f' ({detail})' if detail else ''}" if ok else f"failed: {detail}"
        )
        try:
            await self.client.event(marker, self.scenario.name, occurrence.action)
        except ControlApiError as err:
            if ok:  # the step is not done until the target has it on record
                detail, ok = f"marker not recorded: {err}", False
        result = StepResult(self.scenario.name, occurrence.time, elapsed, wall,
                            occurrence.step.number, occurrence.index, occurrence.action, what,
                            ok, detail)  # fmt: skip
        # INFO even when refused: the caller reports failures (ctl prints them once, on stderr).
        log.info("scenario %s %s", self.scenario.name, result.line())
        return result

    async def _perform(self, occurrence: Occurrence) -> str:
        """Do one occurrence; a short description of what it did."""
        client = self.client
        action, params = occurrence.action, occurrence.params
        if action == "port-down":
            count = await client.port_down(params["port"], params["mode"])
            return f"{count} connections affected" if params["mode"] != "refuse" else ""
        if action == "port-up":
            await client.port_up(params["port"])
            return ""
        if action == "ana":
            answer = await client.set_ana(params["port"], params["group"], params["state"],
                                          via_change_ms=params.get("via_change_ms"))  # fmt: skip
            if "via" in answer:
                return f"change for {answer['after_ms']} ms"
            return f"ANA change count {answer['ana_change_count']}"
        if action.startswith("fault-"):
            return await self._fault(occurrence)
        if action in ("ns-add", "ns-remove", "ns-resize"):
            fields = dict(params)
            nqn, nsid = fields.pop("nqn"), fields.pop("nsid")
            if action == "ns-add":
                return _changes(await client.ns_add(nqn, nsid, **fields))
            if action == "ns-resize":
                return _changes(await client.ns_resize(nqn, nsid, fields["size"]))
            return _changes(await client.ns_remove(nqn, nsid))
        if action == "subsystem-add":
            fields = dict(params)
            nqn, ports = fields.pop("nqn"), fields.pop("ports")
            namespaces = fields.pop("namespace", [])
            changes = await client.subsystem_add(nqn, namespaces=namespaces, ports=ports,
                                                 **fields)  # fmt: skip
            return _changes(changes)
        if action == "subsystem-remove":
            return _changes(await client.subsystem_remove(params["nqn"]))
        if action == "resv-clear":
            cleared = await client.reservations_clear(params["nqn"], params["nsid"])
            return (f"{cleared['removed']} registrants removed, "
                    f"{cleared['notified']} controllers notified")  # fmt: skip
        if action == "restart":
            done = await client.restart()
            return f"{done['connections']} connections, {done['controllers']} controllers dropped"
        return ""  # wait, mark: the marker is the whole step

    async def _fault(self, occurrence: Occurrence) -> str:
        client = self.client
        action, params = occurrence.action, occurrence.params
        if action == "fault-add":
            fields = dict(params["fault"])
            rule = await client.fault_add(fields.pop("action"), **fields)
            self._rules[occurrence.key] = rule["id"]
            if "name" in params:
                self._named.setdefault(params["name"], []).append(rule["id"])
            return f"rule {rule['id']}"
        if action == "fault-clear":
            self._rules.clear()
            self._named.clear()
            return f"{await client.fault_clear()} rules removed"
        if occurrence.undo:  # the end of one fault-add occurrence: its own rule only
            rule_id = self._rules.pop(occurrence.key, None)
            ids = [] if rule_id is None else [rule_id]
        else:
            name = params["name"]
            ids = list(self._named.get(name, []))
            if not ids:
                raise StepRefused(f"no fault rule added under the name {name!r} (yet)")
        for rule_id in ids:
            for named in self._named.values():
                if rule_id in named:
                    named.remove(rule_id)
        gone = 0
        for rule_id in ids:
            try:
                await client.fault_remove(rule_id)
            except ControlNotFound:
                gone += 1  # removed meanwhile (fault-clear, by hand): nothing left to undo
        removed = [str(i) for i in ids]
        return f"rules {', '.join(removed) or '-'} removed" + (f" ({gone} already gone)"
                                                               if gone else "")  # fmt: skip


def _changes(changes: list[str]) -> str:
    return "; ".join(changes)


async def run_scenario(
    endpoint: Endpoint | str,
    scenario: Scenario,
    *,
    token: str | None = None,
    seed: int | None = None,
    keep_going: bool = False,
    log_path: str | Path | None = None,
    on_step: Callable[[StepResult], object] | None = None,
) -> list[StepResult]:
    """Run ``scenario`` against the control API at ``endpoint`` (a fresh client)."""
    async with AsyncControlClient(endpoint, token=token) as client:
        runner = ScenarioRunner(client, scenario, seed=seed, keep_going=keep_going,
                                log_path=log_path, on_step=on_step)  # fmt: skip
        return await runner.run()


def failure_message(scenario: Scenario, failed: StepResult) -> str:
    """``scenario flap: step[2]#0 port-down port=9 mode=reset at +0.300s failed: no port 9``."""
    return (f"scenario {scenario.name}: step[{failed.step}]#{failed.index} {failed.what} at "
            f"+{failed.t:.3f}s failed: {failed.detail}")  # fmt: skip
