"""Configurations for emulated targets: from whatever a test writer has at hand.

A test gives a configuration as a native TOML document already parsed into a dict (the tables
of ``deploy/target.example.toml``), a path to a TOML or nvmetcli JSON file, a
:class:`~target.config.TargetConfig`, or None for the embedded demo (two I/O ports and a
discovery port). :func:`as_target_config` turns any of these into a validated
``TargetConfig``; :func:`config_toml` writes one back as the native TOML the daemon reads
(fault rules included), which is how :class:`~nvmeof_emu.process.TargetProcess` hands its
configuration to a subprocess.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import replace
from importlib import resources
from pathlib import Path
from typing import Any

import tomli_w

from target.config import TargetConfig, default_config
from target.config.export import export_native
from target.config.files import load_config, load_native

#: What a test may pass as a configuration.
ConfigSource = TargetConfig | Mapping[str, Any] | str | os.PathLike[str] | None

#: The example configurations shipped inside the package (``nvmeof_emu/examples``).
EXAMPLES = ("target.example.toml",)


def as_target_config(source: ConfigSource, *, name: str = "<dict>") -> TargetConfig:
    """A validated :class:`TargetConfig` from a dict, a file path, a config, or None (the
    demo). A problem raises :class:`~target.config.ConfigError` naming the field."""
    if source is None:
        return default_config()
    if isinstance(source, TargetConfig):
        return source
    if isinstance(source, Mapping):
        return load_native(source, name)
    return load_config(source)


def config_toml(config: TargetConfig) -> str:
    """``config`` as native TOML, its ``[[fault]]`` rules included (the daemon installs them
    at start, as it does for any configuration file)."""
    document = export_native(config, show_secrets=True)  # the daemon needs the secrets
    if config.faults:
        document["fault"] = [dict(rule) for rule in config.faults]
    return tomli_w.dumps(document)


def with_ports(config: TargetConfig, bound: Mapping[int, int]) -> TargetConfig:
    """``config`` with each port pinned to the TCP port it was bound to (for a restart on the
    same ports); ports not in ``bound`` keep their setting."""
    ports = tuple(replace(port, port=bound.get(port.id, port.port)) for port in config.ports)
    return replace(config, ports=ports)


def example_config(name: str = "target.example.toml") -> Path:
    """The path of an example configuration shipped with the package (a copy of
    ``deploy/target.example.toml``, kept identical by a test)."""
    if name not in EXAMPLES:
        raise ValueError(f"no example {name!r} (examples: {', '.join(EXAMPLES)})")
    return Path(str(resources.files("nvmeof_emu") / "examples" / name))
