"""The control API's client for async code (Trio or asyncio, through httpx).

:class:`AsyncControlClient` has one method per route of :data:`target.control.openapi.ROUTES`;
:class:`target.control.client.ControlClient`, the blocking twin, is generated from this file by
``scripts/unasync.py`` (edit this one, then run the script). A refusal raises
:class:`~target.control.clientbase.ControlApiError` carrying the API's one-line message
(:class:`~target.control.clientbase.ControlNotFound` for HTTP 404); an unreachable API raises it
with status 0.

Bodies that create configuration are the native TOML tables (``deploy/target.example.toml``):
``subsystem_add(nqn, namespaces=[{"nsid": 1, "size": "64M", "uuid": "..."}], ports=[1])``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, cast

import httpx

from target.control.clientbase import (
    DEFAULT_CONTROL,
    DEFAULT_TIMEOUT,
    ControlApiError,
    Endpoint,
    Metrics,
    PortStatus,
    ReservationInfo,
    ReservationsCleared,
    TargetStatus,
    api_error,
    base_url,
    compact,
    read_config_file,
    segment,
)


class AsyncControlClient:
    """A client of one target's control API (``endpoint``: ``(addr, port)``, ``"ADDR:PORT"``
    or a URL). Use as a context manager, or call :meth:`aclose`."""

    def __init__(
        self,
        endpoint: Endpoint | str = DEFAULT_CONTROL,
        *,
        token: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.url = base_url(endpoint)
        headers = {"Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.AsyncClient(
            base_url=self.url,
            headers=headers,
            timeout=timeout,
            transport=transport,
            trust_env=False,
        )

    async def __aenter__(self) -> AsyncControlClient:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def request(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None = None,
        params: Mapping[str, str] | None = None,
        *,
        text: bool = False,
    ) -> Any:
        """One request: the decoded JSON answer (the text with ``text``, or for a text answer)."""
        try:
            response = await self._http.request(method, path, json=body, params=params)
        except httpx.ConnectError:
            where = self.url.split("://", 1)[-1]
            raise ControlApiError(
                0,
                f"cannot reach the control API at {where} (is the target running with --control?)",
            ) from None
        except httpx.TransportError as err:
            where = self.url.split("://", 1)[-1]
            raise ControlApiError(
                0, f"control API at {where}: {err or type(err).__name__}"
            ) from None
        is_json = not text and response.headers.get("content-type", "").startswith(
            "application/json"
        )
        try:
            answer = response.json() if is_json else response.text
        except ValueError:
            answer = None
        if response.status_code >= 400:
            raise api_error(response.status_code, answer, response.reason_phrase)
        return answer

    # -- status, ports, paths ------------------------------------------------------------------

    async def status(self) -> TargetStatus:
        return cast(TargetStatus, await self.request("GET", "/status"))

    async def port_add(
        self,
        port_id: int,
        *,
        addr: str = "127.0.0.1",
        port: int = 0,
        subsystems: Sequence[str] = (),
        ana: Mapping[int, str] | None = None,
        advertise: str | None = None,
        inline_data_size: int | None = None,
        strict: bool | None = None,
        tls: str | None = None,
    ) -> PortStatus:
        """Create a port and listen on it (``port`` 0: any free TCP port, answered in
        ``["port"]``)."""
        body = compact(
            id=port_id,
            addr=addr,
            port=port,
            subsystems=list(subsystems),
            ana={str(g): s for g, s in ana.items()} if ana else None,
            advertise=advertise,
            inline_data_size=inline_data_size,
            strict=strict,
            tls=tls,
        )
        return cast(PortStatus, await self.request("POST", "/ports", body))

    async def port_remove(self, port_id: int) -> list[str]:
        return await self._changes("DELETE", f"/ports/{port_id}")

    async def port_down(self, port_id: int, mode: str = "reset") -> int:
        """Take a path down (reset, close, blackhole, refuse); connections affected."""
        answer = await self.request("POST", f"/ports/{port_id}/down", {"mode": mode})
        return int(answer["connections"])

    async def port_up(self, port_id: int) -> None:
        await self.request("POST", f"/ports/{port_id}/up")

    async def port_link(self, port_id: int, nqn: str) -> list[str]:
        return await self._changes("POST", f"/ports/{port_id}/subsystems", {"nqn": nqn})

    async def port_unlink(self, port_id: int, nqn: str) -> list[str]:
        return await self._changes("DELETE", f"/ports/{port_id}/subsystems/{segment(nqn)}")

    async def referral_add(
        self,
        port_id: int,
        name: str,
        addr: str,
        *,
        port: int | None = None,
        portid: int | None = None,
    ) -> list[str]:
        body = compact(name=name, addr=addr, port=port, portid=portid)
        return await self._changes("POST", f"/ports/{port_id}/referrals", body)

    async def referral_remove(self, port_id: int, name: str) -> list[str]:
        return await self._changes("DELETE", f"/ports/{port_id}/referrals/{segment(name)}")

    async def set_ana(
        self, port_id: int, group: int, state: str, *, via_change_ms: int | None = None
    ) -> dict[str, Any]:
        """Set an ANA group's state on a port; with ``via_change_ms`` go through the change
        state that long first (the call returns once "change" is in place)."""
        body = compact(
            port=port_id,
            group=group,
            state=state,
            via=None if via_change_ms is None else "change",
            after_ms=via_change_ms,
        )
        return cast(dict[str, Any], await self.request("POST", "/ana", body))

    async def ana_group_remove(self, port_id: int, group: int) -> list[str]:
        return await self._changes("DELETE", f"/ports/{port_id}/ana/{group}")

    # -- subsystems, hosts, namespaces ---------------------------------------------------------

    async def subsystem_add(
        self,
        nqn: str,
        *,
        namespaces: Sequence[Mapping[str, Any]] = (),
        ports: Sequence[int] = (),
        **attributes: Any,
    ) -> list[str]:
        """Create a subsystem with ``namespaces`` (``[[subsystem.namespace]]`` tables) and
        expose it on ``ports``; ``attributes``: serial, model, allow_any_host, allowed_hosts,
        max_io_queues, queue_size, cntlid_min, cntlid_max, max_namespaces."""
        body = {"nqn": nqn, "namespace": [dict(ns) for ns in namespaces], "ports": list(ports),
                **attributes}  # fmt: skip
        return await self._changes("POST", "/subsystems", body)

    async def subsystem_remove(self, nqn: str) -> list[str]:
        return await self._changes("DELETE", f"/subsystems/{segment(nqn)}")

    async def subsystem_update(self, nqn: str, **attributes: Any) -> list[str]:
        return await self._changes("PATCH", f"/subsystems/{segment(nqn)}", attributes)

    async def host_allow(self, nqn: str, host: str) -> list[str]:
        return await self._changes("POST", f"/subsystems/{segment(nqn)}/hosts", {"host": host})

    async def host_disallow(self, nqn: str, host: str) -> list[str]:
        path = f"/subsystems/{segment(nqn)}/hosts/{segment(host)}"
        return await self._changes("DELETE", path)

    async def host_add(self, host: str, *, dhchap_key: str | None = None,
                       dhchap_ctrl_key: str | None = None, dhchap_hash: str | None = None,
                       dhchap_dhgroup: str | None = None, tls_key: str | None = None,
                       tls_psk_derivation: str | None = None) -> list[str]:  # fmt: skip
        """Add a host to the target's host list, with its DH-HMAC-CHAP settings and TLS PSK
        (``NVMeTLSkey-1:..``) if any."""
        body = compact(nqn=host, dhchap_key=dhchap_key, dhchap_ctrl_key=dhchap_ctrl_key,
                       dhchap_hash=dhchap_hash, dhchap_dhgroup=dhchap_dhgroup, tls_key=tls_key,
                       tls_psk_derivation=tls_psk_derivation)  # fmt: skip
        return await self._changes("POST", "/hosts", body)

    async def host_set_key(self, host: str, *, dhchap_key: str | None = None,
                           dhchap_ctrl_key: str | None = None, dhchap_hash: str | None = None,
                           dhchap_dhgroup: str | None = None, tls_key: str | None = None,
                           tls_psk_derivation: str | None = None) -> list[str]:  # fmt: skip
        """Rotate a host's DH-HMAC-CHAP settings or TLS PSK (those given; "" removes a key):
        new connections use them, live ones keep theirs until they re-authenticate."""
        body = compact(dhchap_key=dhchap_key, dhchap_ctrl_key=dhchap_ctrl_key,
                       dhchap_hash=dhchap_hash, dhchap_dhgroup=dhchap_dhgroup, tls_key=tls_key,
                       tls_psk_derivation=tls_psk_derivation)  # fmt: skip
        return await self._changes("PATCH", f"/hosts/{segment(host)}", body)

    async def host_remove(self, host: str) -> list[str]:
        return await self._changes("DELETE", f"/hosts/{segment(host)}")

    async def ns_add(self, nqn: str, nsid: int, **fields: Any) -> list[str]:
        """Add a namespace; ``fields``: size (bytes or "64M"), block_size, backend, path, sync
        (file backend: flush, always, none), uuid, nguid, eui64, ana_group, enabled,
        reservations."""
        body = {"nsid": nsid, **fields}
        return await self._changes("POST", f"/subsystems/{segment(nqn)}/namespaces", body)

    async def ns_remove(self, nqn: str, nsid: int) -> list[str]:
        return await self._changes("DELETE", f"/subsystems/{segment(nqn)}/namespaces/{nsid}")

    async def ns_update(self, nqn: str, nsid: int, **fields: Any) -> list[str]:
        """Change a namespace: size, enabled, ana_group and sync in place; other fields replace
        it."""
        path = f"/subsystems/{segment(nqn)}/namespaces/{nsid}"
        return await self._changes("PATCH", path, fields)

    async def ns_resize(self, nqn: str, nsid: int, size: int | str) -> list[str]:
        return await self.ns_update(nqn, nsid, size=size)

    # -- reservations --------------------------------------------------------------------------

    async def reservations(self, nqn: str, nsid: int) -> ReservationInfo:
        """A namespace's registrants, holder, type, generation, PTPL and conflicts."""
        path = f"/subsystems/{segment(nqn)}/namespaces/{nsid}/reservations"
        return cast(ReservationInfo, await self.request("GET", path))

    async def reservations_clear(self, nqn: str, nsid: int) -> ReservationsCleared:
        """Drop a namespace's registrations and reservation (registrants are notified)."""
        path = f"/subsystems/{segment(nqn)}/namespaces/{nsid}/reservations"
        return cast(ReservationsCleared, await self.request("DELETE", path))

    # -- the whole configuration ---------------------------------------------------------------

    async def config(self) -> dict[str, Any]:
        """The live configuration as the native document (what ``config_export`` writes)."""
        return cast(dict[str, Any], await self.request("GET", "/config", params={"format": "json"}))

    async def config_export(self, fmt: str = "toml", *, show_secrets: bool = False) -> str:
        """The live configuration as text: ``toml`` (native) or ``nvmetcli`` (JSON);
        DH-HMAC-CHAP secrets as ``(hidden)`` unless ``show_secrets``."""
        params = {"format": fmt, **({"show_secrets": "1"} if show_secrets else {})}
        return str(await self.request("GET", "/config", params=params, text=True))

    async def config_apply(
        self, text: str, *, fmt: str | None = None, source: str | None = None
    ) -> list[str]:
        """Bring the target to a configuration (native TOML or nvmetcli JSON text)."""
        body = compact(text=text, format=fmt, source=source)
        return await self._changes("PUT", "/config", body)

    async def config_apply_file(self, path: str | os.PathLike[str]) -> list[str]:
        """:meth:`config_apply` with a file's text (``.json``: nvmetcli, else native TOML)."""
        text, fmt, source = read_config_file(path)  # a small local file: read at once
        return await self.config_apply(text, fmt=fmt, source=source)

    # -- capture -------------------------------------------------------------------------------

    async def capture(self, directory: str | os.PathLike[str] | None) -> str | None:
        """Capture connections accepted from now on into ``directory`` (one pcapng file per
        connection; None stops); the directory the target writes to."""
        where = None if directory is None else os.fspath(directory)
        return cast("str | None", (await self.request("PUT", "/capture", {"dir": where}))["dir"])

    async def capture_dir(self) -> str | None:
        return cast("str | None", (await self.request("GET", "/capture"))["dir"])

    # -- faults, metrics, description ----------------------------------------------------------

    async def faults(self) -> list[dict[str, Any]]:
        return cast(list[dict[str, Any]], await self.request("GET", "/faults"))

    async def fault_add(self, action: str, **fields: Any) -> dict[str, Any]:
        """Add a fault rule (``fields``: port, subsystem, nsid, opcode, fctype, host, queue,
        probability, every, count, delay_ms, status, dnr, after, direction, duration_ms);
        the rule as the target describes it, with its ``id``."""
        answer = await self.request("POST", "/faults", {"action": action, **fields})
        return cast(dict[str, Any], answer)

    async def fault_remove(self, rule_id: int) -> int:
        return int((await self.request("DELETE", f"/faults/{rule_id}"))["removed"])

    async def fault_clear(self) -> int:
        return int((await self.request("DELETE", "/faults"))["removed"])

    # -- the target as a whole, scenario markers -----------------------------------------------

    async def restart(self) -> dict[str, Any]:
        """Soft restart: connections closed, controllers dropped, listeners bound again on the
        same ports, every port up; configuration and data kept. What was dropped."""
        return cast(dict[str, Any], await self.request("POST", "/restart"))

    async def event(
        self, what: str, scenario: str | None = None, action: str | None = None
    ) -> None:
        """Record a marker line in the target's audit trail, counted by scenario and action."""
        await self.request("POST", "/events", compact(what=what, scenario=scenario, action=action))

    async def metrics_text(self) -> str:
        return str(await self.request("GET", "/metrics"))

    async def metrics(self) -> Metrics:
        """The target's metrics, parsed by prometheus_client's parser."""
        return Metrics(await self.metrics_text())

    async def openapi(self) -> dict[str, Any]:
        return cast(dict[str, Any], await self.request("GET", "/openapi.json"))

    async def _changes(
        self, method: str, path: str, body: Mapping[str, Any] | None = None
    ) -> list[str]:
        answer = await self.request(method, path, body)
        return list(answer["changes"])
