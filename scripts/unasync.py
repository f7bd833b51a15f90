"""Generate the blocking control client from the async one (the approach httpcore takes).

    python scripts/unasync.py          # rewrite target/control/client.py
    python scripts/unasync.py --check  # exit 1 if it is out of date (tests run this check)

The async client (target/control/aclient.py) is the one implementation; this rewrites it word
for word into target/control/client.py: ``async def`` -> ``def``, ``await`` dropped,
``httpx.AsyncClient`` -> ``httpx.Client`` and so on (REPLACEMENTS). Names are replaced as whole
words only, so nothing else can change by accident.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "target" / "control" / "aclient.py"
GENERATED = ROOT / "target" / "control" / "client.py"

REPLACEMENTS = {
    "AsyncControlClient": "ControlClient",
    "AsyncClient": "Client",
    "AsyncBaseTransport": "BaseTransport",
    "__aenter__": "__enter__",
    "__aexit__": "__exit__",
    "aclose": "close",
}
DOCSTRING = '''"""The control API's blocking client: GENERATED from aclient.py by scripts/unasync.py.

Do not edit: change :mod:`target.control.aclient` and run ``python scripts/unasync.py``.
:class:`ControlClient` has the same methods, arguments and errors as
:class:`~target.control.aclient.AsyncControlClient`, without ``await``.
"""'''


def generate(source: str) -> str:
    body = source.split('"""', 2)[2]  # drop the module docstring
    body = re.sub(r"\basync def\b", "def", body)
    body = re.sub(r"\basync with\b", "with", body)
    body = re.sub(r"\bawait ", "", body)
    for old, new in REPLACEMENTS.items():
        body = re.sub(rf"\b{old}\b", new, body)
    return DOCSTRING + body


def main(argv: list[str]) -> int:
    text = generate(SOURCE.read_text())
    if "--check" in argv:
        if GENERATED.read_text() != text:
            print(f"{GENERATED} is out of date: run python scripts/unasync.py", file=sys.stderr)
            return 1
        return 0
    GENERATED.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
