"""The CQT demonstration (``make cqt-demo``): with CQT 0 the held-back writes land after the
failover and overwrite newer data, block by block as the verifier names them; with CQT above
the ghost delay the host holds its retries until the lost controller is quiet and nothing is
lost. For block writes and for passthrough writes through the ring."""

from __future__ import annotations

import pytest
import trio

from demo.cqt import WRITERS, report, run_demo


@pytest.mark.parametrize("kind", ["block", "passthrough"])
async def test_cqt_zero_shows_the_stale_overwrite_and_cqt_above_the_ghost_delay_cures_it(
    kind: str,
) -> None:
    with trio.fail_after(30):
        hazard = await run_demo(0, kind, ghost_ms=600)
        cured = await run_demo(900, kind, ghost_ms=600)
    assert hazard.ghosts == cured.ghosts == WRITERS
    assert hazard.held == 0 and len(hazard.corruptions) == WRITERS, report(hazard)
    for corruption in hazard.corruptions:
        assert corruption.found.seq < corruption.expected.seq
        assert corruption.found.issued < corruption.expected.acked
        assert f"LBA {corruption.lba}: holds write #{corruption.found.seq}" in report(hazard)
    assert cured.held == WRITERS and cured.corruptions == [], report(cured)
