"""Normalise two observations of one case and say how they differ.

What is compared, per connection and in order: the type of every PDU received; ICResp PFV,
CPDA and DGST; C2HTermReq FES and FEI; CapsuleResp CID, status (SCT, SC, CRD, More, DNR: the
status field without the phase bit) and SQID, plus DW0/DW1 when the status is an error (they
then carry error information such as Connect's IPO/IATTR); C2HData CID, offset, length and the
LAST/SUCCESS flags; R2T CID, offset and length; whether the connection was closed at the end.

What legitimately differs and is left out (docs/TOLERANCE.md, "Normalised"):

* ICResp MAXH2CDATA: each target advertises its own limit (nvmet 4 MiB, ours 128 KiB).
* CapsuleResp DW0/DW1 on success: CNTLID, property values (CAP, VS), feature values, which
  are configuration, not behaviour; SQHD: nvmet reports the submission queue head of its own
  ring, which depends on its internal queue accounting.
* R2T TTAG: a target's own handle.
* C2HData PDO (both place data right after the header) and how a transfer is split into
  C2HData PDUs: consecutive C2HData of one command are compared as one.
* The contents of data (Identify, log pages): configuration.
* How a connection was closed (FIN or RST).
* A C2HTermReq before the close, where nvmet closes without one: see ``TERMREQ_EXPLAINED``.
"""

from __future__ import annotations

from typing import Any

from tests.differential.runner import ConnResult, Observation

_KEEP = {
    "ICResp": ("pfv", "cpda", "dgst"),
    "C2HTermReq": ("fes", "fei"),
    "CapsuleResp": ("cid", "status", "sqid"),
    "C2HData": ("cid", "datao", "datal", "last", "success"),
    "R2T": ("cid", "offset", "length"),
}


def normalise_pdu(pdu: dict[str, Any]) -> dict[str, Any]:
    keep = _KEEP.get(pdu["t"])
    if keep is None:
        return dict(pdu)
    out = {"t": pdu["t"], **{k: pdu[k] for k in keep}}
    if pdu["t"] == "CapsuleResp" and (pdu["status"] != "0x0000" or pdu.get("keep_dw0")):
        out.update(dw0=pdu["dw0"], dw1=pdu["dw1"])
    return out


def merge_c2h(pdus: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Consecutive C2HData PDUs of one command as one: a target may split a transfer as it
    likes (nvmet sends one PDU, ours MAXH2CDATA-sized pieces)."""
    out: list[dict[str, Any]] = []
    for pdu in pdus:
        prev = out[-1] if out else None
        if (pdu["t"] == "C2HData" and prev is not None and prev["t"] == "C2HData"
                and prev["cid"] == pdu["cid"] and not prev["last"]
                and pdu["datao"] == prev["datao"] + prev["datal"]):  # fmt: skip
            out[-1] = {**prev, "datal": prev["datal"] + pdu["datal"], "last": pdu["last"],
                       "success": pdu["success"]}  # fmt: skip
        else:
            out.append(pdu)
    return out


def normalise(obs: Observation, *, drop_termreq: bool) -> list[dict[str, Any]]:
    """One comparable dict per connection. ``drop_termreq``: a C2HTermReq that only precedes
    the connection's close is left out (the reference closes without one)."""
    out = []
    for conn in obs:
        pdus = [normalise_pdu(p) for p in merge_c2h(conn.pdus)]
        if drop_termreq:
            pdus = [p for p in pdus if p["t"] != "C2HTermReq"]
        out.append({"pdus": pdus, "closed": bool(conn.closed) or bool(conn.garbage)})
    return out


def diff(reference: Observation, ours: Observation, *, reference_sends_termreq: bool) -> str:
    """A readable difference, or "" when the two agree after normalisation."""
    left = normalise(reference, drop_termreq=False)
    right = normalise(ours, drop_termreq=not reference_sends_termreq)
    if left == right:
        return ""
    lines = []
    for i, (a, b) in enumerate(zip(left, right, strict=True)):
        if a == b:
            continue
        lines.append(f"  connection {i}:")
        n = max(len(a["pdus"]), len(b["pdus"]))
        for j in range(n):
            pa = a["pdus"][j] if j < len(a["pdus"]) else None
            pb = b["pdus"][j] if j < len(b["pdus"]) else None
            mark = "  " if pa == pb else "!="
            lines.append(f"    {mark} nvmet: {_fmt(pa):<60} ours: {_fmt(pb)}")
        if a["closed"] != b["closed"]:
            lines.append(f"    != closed at the end: nvmet {a['closed']}, ours {b['closed']}")
    return "\n".join(lines)


def _fmt(pdu: dict[str, Any] | None) -> str:
    if pdu is None:
        return "-"
    rest = " ".join(f"{k}={v}" for k, v in pdu.items() if k != "t")
    return f"{pdu['t']} {rest}".strip()


def describe(obs: list[ConnResult]) -> str:
    """One observation, as text (for reports)."""
    lines = []
    for i, conn in enumerate(obs):
        lines.append(f"  connection {i}: closed={conn.closed or 'no'}"
                     + (f" unsent={conn.unsent}" if conn.unsent else ""))  # fmt: skip
        lines.extend(f"    {_fmt(normalise_pdu(p))}" for p in conn.pdus)
    return "\n".join(lines)
