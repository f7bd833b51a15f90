"""Run a Python program measured by ``make bench`` (``bench/probe.py``): count its allocations
and answer snapshot requests on the pipe the bench handed it, then run it as ``__main__``.

    python bench/probed.py -m target serve ...     # a module, like ``python -m``
    python bench/probed.py bench/pingpong.py ...   # a script
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import probe  # noqa: E402


def main() -> None:
    probe.start_from_env()
    args = sys.argv[1:]
    if args[0] == "-m":
        sys.argv = [args[1], *args[2:]]
        runpy.run_module(args[1], run_name="__main__", alter_sys=True)
    else:
        sys.argv = args
        runpy.run_path(args[0], run_name="__main__")


if __name__ == "__main__":
    main()
