"""nvmeof-emu for test writers: an emulated NVMe/TCP target in one line, and our host.

Subprocess (any test framework; the real ``nvmeof-target serve`` daemon)::

    from nvmeof_emu import TargetProcess
    with TargetProcess(config) as target:          # dict, TOML/JSON path, TargetConfig, None
        addr, port = target.ports[1]
        with target.path_down(1, mode="reset"):
            ...

In the test's Trio run::

    async with running_target(config) as target, nvmeof_host(target) as host:
        async with target.path_down(1):
            assert (await host.verified_io()).failed == 0

With pytest, the plugin (:mod:`nvmeof_emu.pytest_plugin`, loaded automatically once the
package is installed) gives the fixtures ``nvmeof_target``, ``nvmeof_target_inprocess`` and
``nvmeof_host``. See docs/TESTING.md.
"""

from nvmeof_emu.checks import OPCODES, TargetFailed, internal_errors
from nvmeof_emu.config import ConfigSource, as_target_config, example_config
from nvmeof_emu.host import ConnectedHost, IoResult, host_options, nvmeof_host
from nvmeof_emu.inprocess import InProcessTarget, running_target, serve_target
from nvmeof_emu.process import TargetProcess
from target.config import TargetConfig
from target.control.aclient import AsyncControlClient
from target.control.client import ControlClient
from target.control.clientbase import ControlApiError, ControlNotFound, Metrics

__all__ = [
    "OPCODES",
    "AsyncControlClient",
    "ConfigSource",
    "ConnectedHost",
    "ControlApiError",
    "ControlClient",
    "ControlNotFound",
    "InProcessTarget",
    "IoResult",
    "Metrics",
    "TargetConfig",
    "TargetFailed",
    "TargetProcess",
    "as_target_config",
    "example_config",
    "host_options",
    "internal_errors",
    "nvmeof_host",
    "running_target",
    "serve_target",
]
