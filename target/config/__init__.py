"""The configuration room: what a target is built from, and where that comes from.

- :mod:`target.config.model`: the frozen dataclasses (subsystems, namespaces, ports, ANA,
  referrals, fault tables), the embedded demo default and its derived identifiers. Re-exported
  here: ``from target.config import TargetConfig, default_config``.
- :mod:`target.config.files`: the native TOML format and nvmetcli's JSON, read and written.
- :mod:`target.config.validate`: per-field checks with one-line errors naming the field, and the
  whole-configuration cross-checks; also used by the control API for live changes.

The model imports nothing else of the target, so every other module may depend on it.
"""

from target.config.model import (
    BACKENDS,
    BLOCK_SIZES,
    DEMO_NQN,
    DHCHAP_DHGROUPS,
    DHCHAP_HASHES,
    SECRET_HIDDEN,
    SYNC_MODES,
    TLS_MODES,
    TLS_PSK_DERIVATIONS,
    ConfigError,
    HostConfig,
    NamespaceConfig,
    PortConfig,
    ReferralConfig,
    SubsystemConfig,
    TargetConfig,
    default_config,
    derived_ids,
    derived_serial,
    with_free_ports,
)

__all__ = [
    "BACKENDS",
    "BLOCK_SIZES",
    "DEMO_NQN",
    "DHCHAP_DHGROUPS",
    "DHCHAP_HASHES",
    "SECRET_HIDDEN",
    "SYNC_MODES",
    "TLS_MODES",
    "TLS_PSK_DERIVATIONS",
    "ConfigError",
    "HostConfig",
    "NamespaceConfig",
    "PortConfig",
    "ReferralConfig",
    "SubsystemConfig",
    "TargetConfig",
    "default_config",
    "derived_ids",
    "derived_serial",
    "with_free_ports",
]
