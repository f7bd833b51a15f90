"""How ``nvmeof-target ctl`` prints what the control API answers: tables for people."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from target.control.clientbase import format_endpoint


def human_size(size: int) -> str:
    """Bytes as the largest exact binary unit (``64MiB``), or plain bytes."""
    for shift, unit in ((60, "EiB"), (50, "PiB"), (40, "TiB"), (30, "GiB"), (20, "MiB"),
                        (10, "KiB")):  # fmt: skip
        if size >= 1 << shift and not size % (1 << shift):
            return f"{size >> shift}{unit}"
    return f"{size}B"


def _table(rows: Sequence[Sequence[object]], indent: str = "") -> list[str]:
    cells = [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    return [indent + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
            for row in cells]  # fmt: skip


def describe_fault(rule: dict[str, Any]) -> str:
    """What a fault rule matches, how often it fires and what it does, on one line."""
    parts = []
    for key in ("port", "subsystem", "nsid", "host"):
        if rule.get(key) is not None:
            parts.append(f"{key}={rule[key]}")
    if rule.get("opcode") is not None:
        parts.append(f"opcode={rule['opcode']:#04x}")
    if rule.get("fctype") is not None:
        parts.append(f"fctype={rule['fctype']:#04x}")
    parts.append(f"queue={rule.get('queue', 'io')}")
    if rule.get("probability", 1.0) < 1.0:
        parts.append(f"probability={rule['probability']}")
    if rule.get("every", 1) > 1:
        parts.append(f"every={rule['every']}")
    if rule.get("count") is not None:
        parts.append(f"count={rule['count']}")
    action = rule["action"]
    if action in ("delay", "ghost-write"):
        parts.append(f"delay_ms={rule['delay_ms']}")
    elif action == "status":
        parts.append(f"status={rule['status']:#05x}" + (" dnr" if rule.get("dnr") else ""))
    elif action == "close":
        parts.append(f"after={rule['after']}")
    elif action == "stall":
        parts.append(f"direction={rule['direction']} duration_ms={rule['duration_ms']}")
    return " ".join(parts)


def format_faults(rules: list[dict[str, Any]], indent: str = "") -> list[str]:
    """The fault rules as a table."""
    if not rules:
        return [indent + "no fault rules"]
    rows: list[Sequence[object]] = [("ID", "ACTION", "MATCHED", "FIRED", "RULE")]
    rows += [(r["id"], r["action"], r["matched"], r["fired"], describe_fault(r)) for r in rules]
    return _table(rows, indent)


#: Short names of the reservation types for tables (RTYPE 1..6).
RESERVATION_TYPE_ABBREVIATIONS = {1: "WE", 2: "EA", 3: "WE-RO", 4: "EA-RO", 5: "WE-AR",
                                  6: "EA-AR"}  # fmt: skip


def reservation_type_abbreviation(rtype: int) -> str:
    """``WE-RO`` for type 3 (Write Exclusive - Registrants Only); ``none`` for 0."""
    if rtype == 0:
        return "none"
    return RESERVATION_TYPE_ABBREVIATIONS.get(rtype, f"type {rtype}")


def describe_reservation_summary(summary: dict[str, Any] | None) -> str:
    """A namespace's reservations in one status cell: ``WE-RO, 2 registrants``, or ``off``."""
    if summary is None:
        return "off"
    count = summary["registrants"]
    held = "held " + reservation_type_abbreviation(summary["type"]) if summary["type"] else "none"
    return f"{held}, {count} registrant{'s' if count != 1 else ''}"


def format_reservations(info: dict[str, Any]) -> str:
    """``GET .../reservations`` for people: a heading, then one row per registrant."""
    rtype = info["type"]
    held = (f"{info['type_name']} (type {rtype}, {reservation_type_abbreviation(rtype)})"
            if rtype else "no reservation held")  # fmt: skip
    ptpl = "on" if info["ptpl"] else "off"
    lines = [
        f"namespace {info['nsid']} of {info['nqn']}: {held}",
        f"  holder {info['holder'] or '-'}",
        f"  generation {info['generation']}, persist through power loss {ptpl} "
        f"({'possible' if info['can_persist'] else 'not possible'} on this backend), "
        f"{info['conflicts']} reservation conflicts",
    ]  # fmt: skip
    if not info["registrants"]:
        return "\n".join([*lines, "  no registrants"])
    rows: list[Sequence[object]] = [("HOST ID", "KEY", "HOLDS", "HOSTS")]
    rows += [(r["hostid"], f"{r['key']:#018x}", "yes" if r["holds"] else "no",
              ",".join(r["hosts"]) or "-") for r in info["registrants"]]  # fmt: skip
    return "\n".join([*lines, *_table(rows, "  ")])


def format_status(status: dict[str, Any]) -> str:
    """``GET /status`` as tables: ports, subsystems (namespaces, controllers), faults."""
    rows: list[Sequence[object]] = [("PORT", "ADDRESS", "MODE", "LISTENING", "CONNECTIONS",
                                     "ANA", "SUBSYSTEMS")]  # fmt: skip
    for p in status["ports"]:
        conns = f"{p['connections']}" + (f" ({p['blackholed']} blackholed)"
                                         if p["blackholed"] else "")  # fmt: skip
        if p.get("tls"):
            conns += f" (TLS {p['tls']}: {p.get('tls_connections', 0)})"
        ana = " ".join(f"{g}={s}" for g, s in p["ana"].items()) or "-"
        rows.append((p["id"], format_endpoint((p["addr"], p["port"])), p["mode"],
                     "yes" if p["listening"] else "no", conns, ana,
                     len(p["subsystems"]) or "discovery"))  # fmt: skip
    lines = _table(rows)
    for sub in status["subsystems"]:
        lines += ["", f"subsystem {sub['nqn']} (serial {sub['serial']})"]
        ns_rows: list[Sequence[object]] = [("NSID", "SIZE", "BLOCK", "BACKEND", "DURABILITY",
                                            "ANA GROUP", "ENABLED", "RESERVATION")]  # fmt: skip
        ns_rows += [(n["nsid"], human_size(n["size"]), n["block_size"], n["backend"],
                     n.get("durability", "-"), n["ana_group"], "yes" if n["enabled"] else "no",
                     describe_reservation_summary(n.get("reservations")))
                    for n in sub["namespaces"]]  # fmt: skip
        lines += _table(ns_rows, "  ") if sub["namespaces"] else ["  no namespaces"]
        if sub["controllers"]:
            ctrl_rows: list[Sequence[object]] = [("CNTLID", "PORT", "KATO MS", "QUEUES", "HOST")]
            ctrl_rows += [(c["cntlid"], c["port"], c["kato_ms"],
                           ",".join(map(str, c["queues"])), c["host"])
                          for c in sub["controllers"]]  # fmt: skip
            lines += _table(ctrl_rows, "  ")
        else:
            lines.append("  no controllers")
    lines += ["", "faults", *format_faults(status["faults"], "  "), ""]
    lines.append(f"ANA change count {status['ana_change_count']}, "
                 f"{status['connections']} connections, "
                 f"{status['discovery_controllers']} discovery controllers")  # fmt: skip
    return "\n".join(lines)
