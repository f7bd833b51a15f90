"""Golden tolerance: our target answers every table and sequence case the way nvmet did.

``tolerance_nvmet_6.12.json`` holds the Linux 6.12 target's recorded answers (``python -m
tests.differential --sources table,sequence --record FILE``, see docs/TOLERANCE.md). Each case
is rebuilt from tests/differential (its SHA-256 must match the one recorded, so an answer always
belongs to exactly the bytes that produced it), sent to our target over loopback, and compared
with the same normalisation and the same explained-divergence rules as the live harness.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import trio

from tests.differential.cases import Case
from tests.differential.compare import diff
from tests.differential.nvmet import serve_ours
from tests.differential.runner import ConnResult, Observation, run_case
from tests.differential.stories import feature_cases, sequence_cases
from tests.differential.table import explain, table_cases

RECORDED = Path(__file__).with_name("tolerance_nvmet_6.12.json")
_CASES = {case.name: case for case in table_cases() + sequence_cases() + feature_cases()}
_ANSWERS: dict[str, dict[str, object]] = json.loads(RECORDED.read_text())["cases"]


def _observation(raw: object) -> Observation:
    assert isinstance(raw, list)
    return [ConnResult(c["pdus"], c["closed"], c["unsent"], c["garbage"]) for c in raw]


def test_every_recorded_case_still_exists_with_the_same_bytes() -> None:
    missing = sorted(set(_ANSWERS) - set(_CASES))
    assert not missing, f"recorded cases no longer generated: {missing}"
    changed = [name for name, a in _ANSWERS.items() if _CASES[name].fingerprint() != a["sha256"]]
    assert not changed, f"cases whose bytes changed since recording (re-record): {changed}"


def test_the_issue_cases_are_recorded() -> None:
    # Issue 15's two first findings, accepted as nvmet accepts them.
    for name in ("T1 CapsuleCmd without data with PDO set",
                 "T2 command without data whose SGL descriptor is all zeros"):  # fmt: skip
        pdus = _ANSWERS[name]["nvmet"][0]["pdus"]  # type: ignore[index]
        assert [p["status"] for p in pdus if p["t"] == "CapsuleResp"][-2:] == ["0x0000"] * 2


async def _answers(cases: list[Case]) -> list[Observation]:
    limiter = trio.CapacityLimiter(16)
    out: list[Observation] = [[] for _ in cases]
    async with trio.open_nursery() as nursery:
        host, port = await nursery.start(serve_ours)

        async def one(i: int, case: Case) -> None:
            async with limiter:
                out[i] = await run_case(host, port, case, quiet=0.15, final=0.25 + case.settle)

        async with trio.open_nursery() as inner:
            for i, case in enumerate(cases):
                inner.start_soon(one, i, case)
        nursery.cancel_scope.cancel()
    return out


@pytest.mark.slow
async def test_our_target_answers_like_nvmet() -> None:
    names = sorted(_ANSWERS)
    cases = [_CASES[n] for n in names]
    with trio.fail_after(120):
        ours = await _answers(cases)
    unexplained = []
    for name, case, mine in zip(names, cases, ours, strict=True):
        ref = _observation(_ANSWERS[name]["nvmet"])
        text = diff(ref, mine, reference_sends_termreq=False)
        if text and explain(case, ref, mine) is None:
            unexplained.append(f"{name}\n{text}")
    assert not unexplained, "\n".join(unexplained)
