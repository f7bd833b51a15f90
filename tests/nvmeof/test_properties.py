"""Controller register state machine (docs/PROTOCOL.md §4.4, §4.5)."""

from __future__ import annotations

import pytest

from nvmeof.constants import Property
from nvmeof.errors import CommandError
from nvmeof.properties import (
    CSTS_CFS,
    CSTS_RDY,
    ControllerRegisters,
    build_cap,
    version,
)


def make() -> ControllerRegisters:
    return ControllerRegisters(cap=build_cap(mqes=127), vs=version(1, 4))


def test_cap_layout() -> None:
    cap = build_cap(mqes=127, timeout_500ms=15)
    assert cap & 0xFFFF == 127
    assert (cap >> 24) & 0xFF == 15
    assert cap >> 37 & 1 == 1
    assert (cap >> 48) & 0xF == 0  # MPSMIN 4 KiB


def test_enable_sequence_like_linux() -> None:
    regs = make()
    assert regs.get(Property.CAP, True) == regs.cap
    regs.set(Property.CC, False, 0x00460000)
    assert regs.get(Property.CSTS, False) == 0
    regs.set(Property.CC, False, 0x00460001)
    assert regs.get(Property.CSTS, False) & CSTS_RDY
    assert regs.get(Property.VS, False) == 0x00010400
    regs.set(Property.CC, False, 0x00464001)
    assert regs.shutdown_complete
    regs.set(Property.CC, False, 0x00460000)
    assert not regs.ready


def test_bad_cc_sets_cfs() -> None:
    regs = make()
    regs.set(Property.CC, False, 0x00460001 | (1 << 7))  # MPS 8 KiB
    assert regs.csts & CSTS_CFS and not regs.ready


def test_discovery_skips_queue_entry_size_check() -> None:
    regs = ControllerRegisters(cap=build_cap(mqes=31), vs=version(1, 4), io_controller=False)
    regs.set(Property.CC, False, 0x1)
    assert regs.ready


@pytest.mark.parametrize(
    ("offset", "size8"),
    [(Property.CAP, False), (Property.VS, True), (0x0C, False), (Property.CRTO, False)],
)
def test_invalid_reads(offset: int, size8: bool) -> None:
    with pytest.raises(CommandError) as info:
        make().get(offset, size8)
    assert info.value.status.word == 0x8004


def test_only_cc_is_writable() -> None:
    with pytest.raises(CommandError):
        make().set(Property.CSTS, False, 1)
