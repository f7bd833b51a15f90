"""What a host gets without asking: the state a controller starts in (issue 15, item 5)."""

from __future__ import annotations

import trio

from nvmeof.constants import AdminOpcode, AnaState, FabricsType
from nvmeof.wire.fabrics import PROPERTY_SET_COMMAND
from nvmeof.wire.sqe import NO_FIELDS_COMMAND
from target.config import NamespaceConfig

MIB = 1 << 20
AEN_ANA_CHANGE = 0x000C0302
AEN_NS_CHANGED = 0x00040002


async def test_host_that_never_sets_features_still_hears_of_changes(lb):
    # nvmet_alloc_ctrl enables the namespace-attribute and ANA-change notices at Connect
    # (NVMET_AEN_CFG_OPTIONAL): a host that only keeps an AER outstanding gets both.
    with trio.fail_after(10):
        queue = await lb.queue(1)
        connected = await lb.raw_connect(queue, hostnqn="nqn.2014-08.org.nvmexpress:quiet-host")
        assert connected.ok
        enable = PROPERTY_SET_COMMAND.build(
            dict(fctype=FabricsType.PROPERTY_SET, offset=0x14, value=0x00460001)
        )
        assert (await queue.submit(enable, timeout=5)).ok
        ctrl = lb.target.state.subsystems[lb.nqn].controllers[connected.dw0 & 0xFFFF]
        results: list = []

        async def aer() -> None:
            sqe = NO_FIELDS_COMMAND.build(dict(opcode=AdminOpcode.ASYNC_EVENT_REQUEST))
            results.append(await queue.submit(sqe, timeout=8))

        for expected, change in (
            (AEN_NS_CHANGED, lambda: lb.target.state.add_namespace(
                lb.nqn, NamespaceConfig(nsid=9, size=MIB))),
            (AEN_ANA_CHANGE, lambda: lb.target.state.set_ana_state(1, 2, AnaState.INACCESSIBLE)),
        ):  # fmt: skip
            outstanding = ctrl.aen.outstanding
            lb.nursery.start_soon(aer)
            await lb.wait_until(lambda o=outstanding: ctrl.aen.outstanding == o + 1)
            change()
            await lb.wait_until(lambda e=expected: bool(results) and results[-1].dw0 == e)
