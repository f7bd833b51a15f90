"""The repository's test-wide plugins: pytester, and nvmeof_emu's own plugin.

Installed from a wheel (or reinstalled editable), the package registers its plugin through the
``pytest11`` entry point; loading it here as well would register it twice, so it is loaded by
module name only when the entry point is absent (the editable install made before it existed).
"""

import logging
from collections.abc import Iterator
from importlib.metadata import entry_points

import pytest

_ENTRY_POINT_INSTALLED = any(
    ep.value == "nvmeof_emu.pytest_plugin" for ep in entry_points(group="pytest11")
)

pytest_plugins = ["pytester"] + ([] if _ENTRY_POINT_INSTALLED else ["nvmeof_emu.pytest_plugin"])


@pytest.fixture(autouse=True)
def _root_logging_restored() -> Iterator[None]:
    """The CLIs' ``main()`` configures the root logger (``logfmt.setup_logging``), as a program
    should; a test that calls it must not leave that handler and level to the tests after it."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
