"""nvme-cli's output for reservations without a target: the Report text and JSON of both data
structures (our target only answers the extended one), a report cut short, the ``NVMe status:``
line, and ``-d``'s clamping."""

from __future__ import annotations

import pytest

from initiator.resv_cli import report_length
from initiator.resv_commands import report_json, report_text
from initiator.status_text import nvme_status_line
from nvmeof.status import StatusCode, status_word
from nvmeof.wire.reservations import (
    Registrant,
    ReservationStatus,
    build_reservation_status,
    parse_reservation_status,
)

HOSTID_1 = bytes.fromhex("0102030405060708") + bytes(8)
HOSTID_2 = bytes.fromhex("a1a2a3a4a5a6a7a8b1b2b3b4b5b6b7b8")


def wire(extended: bool, length: int = 4096) -> ReservationStatus:
    """Two registrants, the first holding Write Exclusive, as read off the wire."""
    whole = ReservationStatus(7, 1, False, 2, (Registrant(HOSTID_1, 0xABC, True, 1),
                                               Registrant(HOSTID_2, 0xDEF, False, 2)),
                              extended)  # fmt: skip
    data = build_reservation_status(whole)[:length].ljust(length, b"\0")
    return parse_reservation_status(data, extended=extended)


def test_the_64_bit_host_id_structure_in_nvme_clis_text_and_json() -> None:
    status = wire(extended=False)
    assert report_text(status) == (
        "\nNVME Reservation status:\n\n"
        "gen       : 7\nrtype     : 1\nregstrnt  : 2\nptpls     : 0\n"
        "registrant[0] :\n  cntlid  : 1\n  rcsts   : 1\n  hostid  : 807060504030201\n"
        "  rkey    : abc\n"
        "registrant[1] :\n  cntlid  : 2\n  rcsts   : 0\n  hostid  : a8a7a6a5a4a3a2a1\n"
        "  rkey    : def\n\n"
    )
    assert report_json(status) == {
        "gen": 7, "rtype": 1, "regstrnt": 2, "ptpls": 0,
        "registrants": [
            {"cntlid": 1, "rcsts": 1, "hostid": 0x0807060504030201, "rkey": 0xABC},
            {"cntlid": 2, "rcsts": 0, "hostid": 0xA8A7A6A5A4A3A2A1, "rkey": 0xDEF},
        ],
    }  # fmt: skip


def test_a_report_cut_short_lists_what_fit_and_counts_everyone() -> None:
    status = wire(extended=True, length=128)  # header + one 64-byte entry
    text = report_text(status)
    assert "regstrnt  : 2\n" in text and "registrantext[0] :" in text
    assert "registrantext[1]" not in text
    assert "  hostid     : 01020304050607080000000000000000\n" in text
    assert report_json(status)["registrantext"] == [
        {"cntlid": 1, "rcsts": 1, "rkey": 0xABC, "hostid": "01020304050607080000000000000000"}
    ]


@pytest.mark.parametrize(
    ("word", "line"),
    [
        (status_word(StatusCode.RESERVATION_CONFLICT, dnr=True),
         "NVMe status: Reservation Conflict: The command was aborted due to a conflict with a "
         "reservation held on the accessed namespace(0x4083)"),
        (status_word(StatusCode.INVALID_FIELD) | 0x4000 | 0x8000,  # More and DNR
         "NVMe status: Invalid Field in Command: A reserved coded value or an unsupported value "
         "in a defined field(0x6002)"),
        (status_word(StatusCode.HOST_PATH_ERROR, dnr=True),
         "NVMe status: Host Pathing Error: A pathing error was detected by the host(0x4370)"),
        (status_word(0x0C5), "NVMe status: unrecognized (SCT0_SCc5)(0xc5)"),
        (status_word(0x701), "NVMe status: Vendor Specific Status(0x701)"),
    ],
)  # fmt: skip
def test_the_nvme_status_line(word: int, line: str) -> None:
    assert nvme_status_line(word) == line


@pytest.mark.parametrize(("numd", "length"),
                         [(0, 4096), (1, 16), (3, 16), (15, 64), (1022, 4092), (1023, 4096),
                          (5000, 4096)])  # fmt: skip
def test_numd_is_clamped_like_nvme_cli(numd: int, length: int) -> None:
    assert report_length(numd) == length
