"""Shared construct building blocks for the wire declarations.

Rules for everything under ``nvmeof/wire``: little-endian integers (``Int16ul``...), flag words
as plain integers decoded with masks (never ``BitStruct`` on LE words), reserved areas as
``Padding``, every field that a builder may omit wrapped in ``Default``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from construct import Adapter, Bytes, ConstructError, PaddedString, Padding

#: Reserved bytes: zeros on build, skipped on parse.
Reserved = Padding


def nqn_field(size: int = 256) -> Any:
    """NUL-padded ASCII string (NQNs, discovery TRADDR/TRSVCID); trailing spaces stripped."""
    return _StripSpaces(PaddedString(size, "ascii"))


class _StripSpaces(Adapter):  # type: ignore[misc]
    def _decode(self, obj: str, context: Any, path: Any) -> str:
        return obj.rstrip(" ")

    def _encode(self, obj: str, context: Any, path: Any) -> str:
        return obj


class SpacePadded(Adapter):  # type: ignore[misc]
    """ASCII field padded with spaces, not NUL-terminated (Identify SN/MN/FR)."""

    def __init__(self, size: int) -> None:
        super().__init__(Bytes(size))
        self.size = size

    def _decode(self, obj: bytes, context: Any, path: Any) -> str:
        return obj.decode("ascii", "replace").rstrip(" \x00")

    def _encode(self, obj: str, context: Any, path: Any) -> bytes:
        raw = obj.encode("ascii")[: self.size]
        return raw.ljust(self.size, b" ")


def build_strict(struct: Any, fields: Mapping[str, Any]) -> bytes:
    """Build ``struct`` from a partial mapping; unknown names and bad values raise ValueError.

    construct silently ignores keys it does not know, so a misspelt field would build as its
    default: refuse it instead. Keys starting with ``_`` (construct's own) are ignored.
    """
    known = {sc.name for sc in struct.subcons if sc.name}
    unknown = sorted(k for k in fields if not k.startswith("_") and k not in known)
    if unknown:
        raise ValueError(f"unknown field(s) {unknown}")
    try:
        return bytes(struct.build(dict(fields)))
    except ConstructError as exc:
        raise ValueError(f"cannot build: {exc}") from exc


def parse_strict(struct: Any, data: bytes | bytearray | memoryview) -> Any:
    """Parse ``data`` with ``struct``; construct errors become ValueError."""
    try:
        return struct.parse(bytes(data))
    except ConstructError as exc:
        raise ValueError(f"cannot parse: {exc}") from exc
