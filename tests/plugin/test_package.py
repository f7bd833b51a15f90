"""The public face of nvmeof_emu: what it exports, the example it ships, where it stands."""

from __future__ import annotations

from pathlib import Path

import nvmeof_emu
from nvmeof_emu import example_config
from target.config import default_config
from target.config.files import load_config

ROOT = Path(__file__).resolve().parents[2]


def test_everything_exported_is_there() -> None:
    for name in nvmeof_emu.__all__:
        assert getattr(nvmeof_emu, name) is not None, name
    from target.control.client import ControlClient

    assert nvmeof_emu.ControlClient is ControlClient


def test_shipped_example_is_the_deploy_example() -> None:
    shipped = example_config()
    assert shipped.read_bytes() == (ROOT / "deploy" / "target.example.toml").read_bytes(), (
        "nvmeof_emu/examples/target.example.toml is a copy of deploy/target.example.toml: "
        "copy it again"
    )
    assert load_config(shipped) == default_config()
