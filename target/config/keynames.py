"""The configuration's field paths in the words of the file they came from.

:func:`~target.config.validate.validate` checks the built configuration, whose fields are
the dataclasses' (``ports[1].port``, ``subsystems[0].namespaces[2].ana_group``). A person
reading an error wants the key they wrote: ``port[1].port`` in the native TOML, and
``ports[1].addr.trsvcid`` or ``subsystems[0].namespaces[2].ana_grpid`` in nvmetcli's JSON.
:func:`file_path` translates one path; formats: ``fields`` (unchanged), ``native``,
``nvmetcli``.
"""

from __future__ import annotations

import re

FORMATS = ("fields", "native", "nvmetcli")

#: Collections, by (the collection they sit in, dataclass name) -> native TOML key (nvmetcli
#: keeps the dataclass's, but for ANA). A port's ``subsystems`` (NQN strings) keeps its name.
_NATIVE_LISTS = {("", "subsystems"): "subsystem", ("subsystems", "namespaces"): "namespace",
                 ("", "ports"): "port", ("ports", "referrals"): "referral",
                 ("", "faults"): "fault", ("ports", "ana_states"): "ana",
                 ("", "hosts"): "host"}  # fmt: skip
_NVMETCLI_LISTS = {("ports", "ana_states"): "ana_groups"}

#: Fields nvmetcli names otherwise, by the collection they belong to.
_NVMETCLI_FIELDS = {
    "subsystems": {"serial": "attr.serial", "model": "attr.model",
                   "allow_any_host": "attr.allow_any_host", "max_io_queues": "attr.qid_max",
                   "cntlid_min": "attr.cntlid_min", "cntlid_max": "attr.cntlid_max",
                   "cqt_ms": "attr.cqt", "queue_size": "nvmeof_emu_queue_size",
                   "max_namespaces": "nvmeof_emu_max_namespaces"},
    "namespaces": {"enabled": "enable", "ana_group": "ana_grpid", "size": "device.size",
                   "block_size": "device.block_size", "backend": "device.nvmeof_emu_backend",
                   "path": "device.path", "uuid": "device.uuid", "nguid": "device.nguid",
                   "eui64": "device.eui64", "sync": "device.nvmeof_emu_sync"},
    "ports": {"id": "portid", "addr": "addr.traddr", "port": "addr.trsvcid",
              "advertise": "nvmeof_emu_advertise", "inline_data_size": "param.inline_data_size",
              "strict": "nvmeof_emu_strict"},
    "referrals": {"addr": "addr.traddr", "port": "addr.trsvcid", "portid": "addr.portid"},
    "hosts": {"dhchap_key": "dhchap.key", "dhchap_ctrl_key": "dhchap.ctrl_key",
              "dhchap_hash": "dhchap.hash", "dhchap_dhgroup": "dhchap.dhgroup"},
}  # fmt: skip

_PART = re.compile(r"([A-Za-z_]+)(\[\d+\])?")


def file_path(path: str, fmt: str) -> str:
    """``path`` (dataclass field names) as the ``fmt`` file names it."""
    if fmt == "fields" or not path:
        return path
    out: list[str] = []
    collection = ""  # the list the current element belongs to
    for part in path.split("."):
        match = _PART.fullmatch(part)
        if match is None:  # e.g. a TOML table key such as an ANA group number
            out.append(part)
            continue
        name, index = match.group(1), match.group(2) or ""
        if index:
            lists = _NATIVE_LISTS if fmt == "native" else _NVMETCLI_LISTS
            out.append(lists.get((collection, name), name) + index)
            collection = name
        else:
            fields = _NVMETCLI_FIELDS.get(collection, {}) if fmt == "nvmetcli" else {}
            out.append(fields.get(name, name))
    return ".".join(out)
