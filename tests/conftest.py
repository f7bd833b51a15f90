"""The repository's test-wide plugins: pytester, and nvmeof_emu's own plugin.

Installed from a wheel (or reinstalled editable), the package registers its plugin through the
``pytest11`` entry point; loading it here as well would register it twice, so it is loaded by
module name only when the entry point is absent (the editable install made before it existed).
"""

from importlib.metadata import entry_points

_ENTRY_POINT_INSTALLED = any(
    ep.value == "nvmeof_emu.pytest_plugin" for ep in entry_points(group="pytest11")
)

pytest_plugins = ["pytester"] + ([] if _ENTRY_POINT_INSTALLED else ["nvmeof_emu.pytest_plugin"])
