"""The tolerance table (docs/TOLERANCE.md) as cases: one per row."""

from __future__ import annotations

from dataclasses import dataclass

from tests.differential.cases import Case


@dataclass(frozen=True)
class Row:
    case: str
    check: str
    divergence: str = ""  # why we answer differently from nvmet, when we do


TABLE: list[Row] = []


def explain(case: Case) -> Row | None:
    """The table row that explains why ``case`` diverges, if any."""
    for row in TABLE:
        if row.divergence and row.case in case.name:
            return row
    return None


def table_cases() -> list[Case]:
    return []
