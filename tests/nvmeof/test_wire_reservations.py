"""Golden bytes of the reservation data structures (nvmeof/wire/reservations.py) and a
hypothesis round trip of the report parser."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from nvmeof.wire.reservations import (
    NOTIFICATION_LOG_SIZE,
    REGISTERED_CTRL_EXT_SIZE,
    STATUS_EXT_HEADER_SIZE,
    AcquireAction,
    Notification,
    Registrant,
    ReservationStatus,
    ReservationType,
    acquire_cdw10,
    build_acquire_data,
    build_notification_log,
    build_register_data,
    build_release_data,
    build_reservation_status,
    parse_cdw10,
    parse_notification_log,
    parse_reservation_status,
    register_cdw10,
    release_cdw10,
    report_dwords,
    rescap,
)

HOSTID = bytes.fromhex("00112233445566778899aabbccddeeff")


def test_command_data_golden() -> None:
    assert build_register_data(crkey=0x0102030405060708, nrkey=0xA1) == bytes.fromhex(
        "0807060504030201a100000000000000"
    )
    assert build_acquire_data(crkey=1, prkey=2) == bytes.fromhex("01000000000000000200000000000000")
    assert build_release_data(crkey=0xFFFFFFFFFFFFFFFF) == b"\xff" * 8


def test_cdw10_layout() -> None:
    # action 2:0, IEKEY 3, RTYPE 15:8, CPTPL 31:30 (NVM Command Set, reservation commands)
    assert register_cdw10(2, iekey=True, cptpl=3) == 0xC000000A
    assert (
        acquire_cdw10(AcquireAction.PREEMPT_AND_ABORT, ReservationType.EXCLUSIVE_ACCESS_ALL_REGS)
        == 0x0602
    )
    assert release_cdw10(1, 4, iekey=True) == 0x0409
    fields = parse_cdw10(0xC000060A)
    assert (fields.action, fields.iekey, fields.rtype, fields.cptpl) == (2, True, 6, 3)
    assert report_dwords(4096) == (1023, 1)
    assert report_dwords(64, eds=False) == (15, 0)


def test_extended_report_golden() -> None:
    status = ReservationStatus(gen=7, rtype=3, ptpls=True, regctl=1,
                               registrants=(Registrant(HOSTID, 0xA1, True),))  # fmt: skip
    raw = build_reservation_status(status)
    assert len(raw) == STATUS_EXT_HEADER_SIZE + REGISTERED_CTRL_EXT_SIZE
    header = bytes.fromhex("07000000030100000001") + bytes(54)
    entry = bytes.fromhex("ffff010000000000a100000000000000") + HOSTID + bytes(32)
    assert raw == header + entry
    assert parse_reservation_status(raw) == status


def test_regular_report_golden() -> None:
    status = ReservationStatus(gen=1, rtype=0, ptpls=False, regctl=1, extended=False,
                               registrants=(Registrant(HOSTID[:8], 5, False),))  # fmt: skip
    raw = build_reservation_status(status)
    assert raw == (bytes.fromhex("01000000" "00" "0100") + bytes(17)
                   + bytes.fromhex("ffff" "00" "0000000000") + HOSTID[:8]
                   + (5).to_bytes(8, "little"))  # fmt: skip
    assert parse_reservation_status(raw, extended=False) == status


def test_report_truncated_lists_what_fits() -> None:
    entries = tuple(Registrant(bytes([i]) * 16, i, i == 0) for i in range(3))
    raw = build_reservation_status(ReservationStatus(2, 1, False, 3, entries))
    parsed = parse_reservation_status(raw[: STATUS_EXT_HEADER_SIZE + REGISTERED_CTRL_EXT_SIZE])
    assert parsed.regctl == 3 and parsed.registrants == entries[:1]
    with pytest.raises(ValueError, match="header"):
        parse_reservation_status(raw[:10])


def test_notification_log_golden() -> None:
    raw = build_notification_log(Notification(count=0x102, type=2, nr_pages=3, nsid=9))
    assert len(raw) == NOTIFICATION_LOG_SIZE
    assert raw[:16] == bytes.fromhex("02010000000000000203000009000000")
    assert raw[16:] == bytes(48)
    assert parse_notification_log(raw) == Notification(0x102, 2, 3, 9)


def test_rescap() -> None:
    assert rescap(persist=False) == 0xFE  # six types + IEKEY 1.3 (nvmet's value)
    assert rescap(persist=True) == 0xFF


@given(st.binary(min_size=64, max_size=64 * 6))
def test_report_parser_never_crashes(data: bytes) -> None:
    parsed = parse_reservation_status(data)
    assert len(parsed.registrants) <= (len(data) - 64) // 64
