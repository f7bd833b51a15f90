"""Status field encoding and the kernel's classification (docs/PROTOCOL.md §3.3, §3.4, §10)."""

from __future__ import annotations

from hypothesis import given, strategies as st

from nvmeof.status import Sct, Status, StatusCode, status_word


def test_worked_examples() -> None:
    assert Status(StatusCode.ANA_TRANSITION).word == 0x0606
    assert Status(StatusCode.ANA_INACCESSIBLE).word == 0x0604
    assert Status(StatusCode.INVALID_FIELD, dnr=True).word == 0x8004
    assert Status(StatusCode.LBA_RANGE, dnr=True).word == 0x8100
    assert Status(StatusCode.CONNECT_INVALID_PARAM, dnr=True).word == 0x8304
    assert status_word(StatusCode.INVALID_FIELD, dnr=True) == 0x8004


def test_fields() -> None:
    status = Status(StatusCode.HOST_PATH_ERROR, crd=2, more=True)
    assert (status.sct, status.sc) == (Sct.PATH, 0x70)
    assert status.is_path_error and not status.is_ana_error
    assert Status.from_word(status.word) == status
    assert Status(StatusCode.ANA_PERSISTENT_LOSS).is_ana_error
    assert not Status(StatusCode.INTERNAL).is_path_error
    assert Status().ok and not Status(StatusCode.INTERNAL).ok


def test_names_and_str() -> None:
    assert Status(StatusCode.COMPARE_FAILED).name == "COMPARE_FAILED"
    assert "DNR" in str(Status(StatusCode.INVALID_NS, dnr=True))
    assert Status(0x7FF).name.startswith("SCT7")
    # Fabrics names share numbers with NVM I/O names: both spellings resolve.
    assert StatusCode.CONNECT_INVALID_PARAM == StatusCode.READ_ONLY == 0x182


@given(st.integers(min_value=0, max_value=0xFFFF))
def test_round_trip_every_word(word: int) -> None:
    assert Status.from_word(word).word == word & 0xFFFE
