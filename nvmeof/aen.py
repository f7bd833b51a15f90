"""Asynchronous event bookkeeping: outstanding AERs, pending events and nvmet's masking rule.

An event is completed into an outstanding AER at once or kept until the host sends one. After an
event of a kind was reported, further events of that kind are masked until the host reads the
matching log page with RAE = 0 (docs/PROTOCOL.md §5.4, nvmet ``nvmet_aen_bit_disabled``).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from nvmeof.constants import AenNotice, AenType, LogPage


@dataclass(frozen=True, slots=True)
class AsyncEvent:
    """One asynchronous event: DW0 = type | info << 8 | log page << 16."""

    type: int
    info: int
    log_page: int

    @property
    def dw0(self) -> int:
        return self.type | (self.info << 8) | (self.log_page << 16)


ANA_CHANGE = AsyncEvent(AenType.NOTICE, AenNotice.ANA_CHANGE, LogPage.ANA)
NS_CHANGED = AsyncEvent(AenType.NOTICE, AenNotice.NS_ATTR_CHANGED, LogPage.CHANGED_NS)
DISCOVERY_CHANGE = AsyncEvent(AenType.NOTICE, AenNotice.DISCOVERY_CHANGE, LogPage.DISCOVERY)
#: "Reservation log page available" (type 6, I/O command specific; info 0; log page 0x80).
RESERVATION_LOG = AsyncEvent(AenType.COMMAND_SET, 0, LogPage.RESERVATION)
#: Events nvmet queues one per occurrence and never masks (nvmet_add_async_event is called
#: without nvmet_aen_bit_disabled): each reservation notification gets its own AEN.
UNMASKED_LOG_PAGES = frozenset({LogPage.RESERVATION})
MAX_PENDING = 64


class AsyncEventQueue:
    """AER slots and pending events of one controller.

    Args:
        limit: how many AERs the host may have outstanding (AERL + 1).
    """

    def __init__(self, limit: int = 4) -> None:
        self.limit = limit
        self._aer_cids: deque[int] = deque()
        self._pending: deque[AsyncEvent] = deque()
        self._masked: set[int] = set()  # log pages whose event is reported but not yet read

    @property
    def outstanding(self) -> int:
        return len(self._aer_cids)

    def add_request(self, cid: int) -> list[tuple[int, AsyncEvent]]:
        """Record an AER. Returns completions due now (a pending event, if any).

        Raises:
            OverflowError: more than ``limit`` AERs outstanding.
        """
        if len(self._aer_cids) >= self.limit:
            raise OverflowError("AER limit exceeded")
        self._aer_cids.append(cid)
        return self._match()

    def post(self, event: AsyncEvent) -> list[tuple[int, AsyncEvent]]:
        """Record an event; returns (AER CID, event) completions due now.

        A masked kind, or one already pending, is dropped (the host will read the log anyway),
        except the kinds of :data:`UNMASKED_LOG_PAGES`.
        """
        unmasked = event.log_page in UNMASKED_LOG_PAGES
        if not unmasked and (event.log_page in self._masked or event in self._pending):
            return []
        if unmasked and len(self._pending) >= MAX_PENDING:  # the log keeps 64 as well
            return []
        self._pending.append(event)
        return self._match()

    def log_read(self, log_page: int, rae: bool) -> None:
        """The host read ``log_page``; with RAE = 0 that re-enables events of its kind."""
        if not rae:
            self._masked.discard(log_page)

    def _match(self) -> list[tuple[int, AsyncEvent]]:
        done = []
        while self._aer_cids and self._pending:
            event = self._pending.popleft()
            if event.log_page not in UNMASKED_LOG_PAGES:
                self._masked.add(event.log_page)
            done.append((self._aer_cids.popleft(), event))
        return done

    def drain(self) -> list[int]:
        """Forget all outstanding AERs (the admin queue is going away)."""
        cids = list(self._aer_cids)
        self._aer_cids.clear()
        return cids
