"""Shared construct building blocks for the wire declarations.

Rules for everything under ``nvmeof/wire``: little-endian integers (``Int16ul``...), flag words
as plain integers decoded with masks (never ``BitStruct`` on LE words), reserved areas as
``Padding``, every field that a builder may omit wrapped in ``Default``.
"""

from __future__ import annotations

from typing import Any

from construct import Adapter, Bytes, PaddedString, Padding

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
