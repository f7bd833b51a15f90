"""Loopback tests of the target's admin side over real TCP: Identify, ANA and its AENs,
namespace changes, features, properties and log pages (docs/PROTOCOL.md §4.4, §5, §8)."""

from __future__ import annotations

import pytest
import trio

from nvmeof.constants import (
    DISCOVERY_NQN,
    AdminOpcode,
    AnaState,
    Cns,
    FabricsType,
    FeatureId,
    LogPage,
)
from nvmeof.errors import CommandError
from nvmeof.wire.fabrics import PROPERTY_GET_COMMAND
from nvmeof.wire.identify import (
    parse_active_ns_list,
    parse_identify_ctrl,
    parse_identify_ns,
    parse_ns_desc_list,
)
from nvmeof.wire.logpages import (
    EFFECTS_CSUPP,
    EFFECTS_LBCC,
    parse_changed_ns_list,
    parse_effects_log,
    parse_error_log,
    parse_fw_slot_log,
    parse_smart_log,
)
from nvmeof.wire.sqe import (
    FEATURES_COMMAND,
    GET_LOG_PAGE_COMMAND,
    IDENTIFY_COMMAND,
    NO_FIELDS_COMMAND,
)
from target.config import NamespaceConfig

MIB = 1 << 20
INVALID_FIELD_DNR = 0x8004
INVALID_NS_DNR = 0x8016
INVALID_LOG_PAGE_DNR = 0x8212  # SCT 1, SC 0x09
ANA_INACCESSIBLE = 0x0604  # SCT 3, SC 0x02, no DNR
MORE = 0x4000  # nvmet sets More on every error it logs with a location (nvmet_set_error)
# I/O beyond the namespace: nvmet's block device backend answers Internal Error, DNR, More
# (the block layer fails the bio); strict ports answer LBA Out of Range.
OUT_OF_RANGE = 0x8000 | MORE | (0x006 << 1)
AEN_ANA_CHANGE = 0x000C0302
AEN_NS_CHANGED = 0x00040002


async def admin_word(ctrl, sqe: bytes, read: int = 0) -> int:
    """Status word of one admin command (no exception on failure)."""
    done = await ctrl.admin.submit(sqe, read=bytearray(read) if read else None, timeout=5)
    return done.status_word


def get_features(fid: int) -> bytes:
    return FEATURES_COMMAND.build(dict(opcode=AdminOpcode.GET_FEATURES, fid=fid))


def target_controller(lb, ctrl):
    return lb.target.state.subsystems[lb.nqn].controllers[ctrl.cntlid]


# -- Identify (docs/PROTOCOL.md §5.1) --------------------------------------------------------------


async def test_identify_controller(lb):
    with trio.fail_after(10):
        ctrls = [(1, await lb.connect(1)), (1, await lb.connect(1)), (2, await lb.connect(2))]
        idents = []
        for port_id, ctrl in ctrls:
            ident = parse_identify_ctrl(await ctrl.identify_raw(Cns.CONTROLLER))
            idents.append(ident)
            assert ident.cntlid == ctrl.cntlid
            assert ident.subnqn == lb.nqn and ident.cntrltype == 1
            assert ident.cmic & 0b1010 == 0b1010  # multi-controller, ANA reporting
            assert ident.ctratt == 0x41  # as nvmet: 128-bit Host IDs, traffic-based keep-alive
            assert ident.kas != 0 and ident.sgls & 0x3 != 0 and ident.icdoff == 0
            assert ident.ioccsz >= 4 and ident.ioccsz == (64 + lb.inline(port_id)) // 16
            assert ident.iorcsz >= 1
            assert 1 <= ident.mnan <= ident.nn
            assert ident.anagrpmax >= 2 and ident.nanagrpid >= 1  # group 2 is in use
            assert ident.maxcmd >= lb.queue_size
            assert ident.mdts == 8 and ident.ver == 0x00010400
            assert ident.oaes & (1 << 8) and ident.oaes & (1 << 11)
        assert len({c.cntlid for _, c in ctrls}) == 3
        assert idents[0].sn and idents[0].sn == idents[2].sn
        other = await lb.connect(1, lb.restricted_nqn, hostnqn=lb.allowed_host)
        assert other.identify.sn != idents[0].sn  # SN identifies the subsystem

        disc = await lb.discovery()
        ident = parse_identify_ctrl(await disc.identify_raw(Cns.CONTROLLER))
        assert (ident.cntrltype, ident.subnqn, ident.cntlid) == (2, DISCOVERY_NQN, disc.cntlid)
        assert ident.sgls & 0x3 and ident.icdoff == 0
        assert not ident.lpa & 0x2  # no effects log on discovery controllers


async def test_identify_namespaces(lb):
    with trio.fail_after(10):
        one, two = await lb.connect(1), await lb.connect(2)
        expect = {1: (32768, 9, 1), 2: (4096, 12, 1), 4: (2048, 9, 2)}
        descs = {}
        for nsid, (nlbas, ds, group) in expect.items():
            ns = parse_identify_ns(await one.identify_raw(Cns.NAMESPACE, nsid))
            assert (ns.nsze, ns.ncap) == (nlbas, nlbas)
            assert ns.lbaf[ns.flbas & 0xF].ds == ds and ns.lbaf[ns.flbas & 0xF].ms == 0
            assert ns.nmic & 1 and ns.anagrpid == group
            raw_via_two = await two.identify_raw(Cns.NAMESPACE, nsid)
            assert parse_identify_ns(raw_via_two).nsze == nlbas
            ids = parse_ns_desc_list(await one.identify_raw(Cns.NS_DESC_LIST, nsid))
            assert ids == parse_ns_desc_list(await two.identify_raw(Cns.NS_DESC_LIST, nsid))
            assert ids["csi"] == 0 and {"nguid", "eui64", "uuid"} <= set(ids)
            assert ids["nguid"] == bytes(ns.nguid) and ids["eui64"] == bytes(ns.eui64)
            descs[nsid] = ids
        for key in ("nguid", "eui64", "uuid"):
            assert len({d[key] for d in descs.values()}) == 3, key

        assert parse_active_ns_list(await one.identify_raw(Cns.ACTIVE_NS_LIST, 0)) == [1, 2, 4]
        assert parse_active_ns_list(await one.identify_raw(Cns.ACTIVE_NS_LIST, 1)) == [2, 4]
        assert parse_active_ns_list(await one.identify_raw(Cns.ACTIVE_NS_LIST, 4)) == []
        assert await one.identify_raw(Cns.NAMESPACE, 3) == bytes(4096)  # inactive: zeros
        for cns, nsid in ((Cns.NS_DESC_LIST, 3), (Cns.NAMESPACE, 0xFFFFFFFF)):
            sqe = IDENTIFY_COMMAND.build(dict(opcode=AdminOpcode.IDENTIFY, nsid=nsid, cns=cns))
            assert await admin_word(one, sqe, 4096) == INVALID_NS_DNR | MORE, (cns, nsid)


# -- ANA (docs/PROTOCOL.md §5.6, §8) ---------------------------------------------------------------


def ana_view(log):
    return {g.grpid: (g.state, g.nsids) for g in log.groups}


async def test_ana_log_state_and_io(lb):
    with trio.fail_after(10):
        one, two = await lb.connect(1), await lb.connect(2)
        log1, log2 = await one.ana_log(), await two.ana_log()
        assert ana_view(log1) == {1: (1, (1, 2)), 2: (2, (4,))}
        assert ana_view(log2) == {1: (2, (1, 2)), 2: (1, (4,))}
        before = log1.chgcnt

        notified = lb.target.state.set_ana_state(1, 1, AnaState.INACCESSIBLE)
        assert [c.cntlid for c in notified] == [one.cntlid]
        log1, log2 = await one.ana_log(), await two.ana_log()
        assert log1.chgcnt == before + 1 and log2.chgcnt == before + 1
        assert ana_view(log1) == {1: (3, (1, 2)), 2: (2, (4,))}
        assert next(g for g in log1.groups if g.grpid == 1).chgcnt == before + 1
        assert ana_view(log2) == {1: (2, (1, 2)), 2: (1, (4,))}

        for nsid, bs in ((1, 512), (2, 4096)):
            done, _ = await one.read(nsid, 0, 1, bs)
            assert done.status_word == ANA_INACCESSIBLE | MORE
            assert done.status.is_ana_error and not done.status.dnr
            done = await one.write(nsid, 0, bytes(65536), bs)  # refused before any R2T
            assert done.status_word == ANA_INACCESSIBLE | MORE
            assert (await two.write(nsid, 0, bytes(4096), bs)).ok
            assert (await two.read(nsid, 0, 1, bs))[0].ok
        assert (await one.read(4, 0, 1, 512))[0].ok  # group 2 on port 1 is unaffected

        rgo = await one.get_log_page(LogPage.ANA, 16 + 2 * 32, lsp=1)  # Return Groups Only
        assert bytes(rgo[:8]) == (before + 1).to_bytes(8, "little") and rgo[8] == 2
        assert [(rgo[16 + i * 32], rgo[20 + i * 32], rgo[32 + i * 32]) for i in (0, 1)] == [
            (1, 0, 3), (2, 0, 2)]  # (grpid, NNSIDS, state)  # fmt: skip

        lb.target.state.set_ana_state(1, 1, AnaState.CHANGE)
        assert (await one.read(1, 0, 1, 512))[0].status_word == 0x4606  # ANA Transition, More
        lb.target.state.set_ana_state(1, 1, AnaState.OPTIMIZED)
        assert (await one.read(1, 0, 1, 512))[0].ok
        assert (await one.ana_log()).chgcnt == before + 3


class AerTask:
    """An AER submitted as a concurrent task, as the Linux host keeps one outstanding."""

    def __init__(self, lb, ctrl) -> None:
        self.lb, self.ctrl, self.done = lb, ctrl, []
        self.target_ctrl = target_controller(lb, ctrl)

    async def submit(self) -> None:
        """Start one AER and wait until the target holds it."""
        outstanding = self.target_ctrl.aen.outstanding
        self.start()
        await self.lb.wait_until(lambda: self.target_ctrl.aen.outstanding == outstanding + 1)

    def start(self) -> None:
        self.lb.nursery.start_soon(self._run)

    async def _run(self) -> None:
        sqe = NO_FIELDS_COMMAND.build(dict(opcode=AdminOpcode.ASYNC_EVENT_REQUEST))
        self.done.append(await self.ctrl.admin.submit(sqe, timeout=30))

    async def completion(self, count: int):
        await self.lb.wait_until(lambda: len(self.done) >= count)
        done = self.done[count - 1]
        assert done.ok, done.status
        return done.dw0

    async def assert_quiet(self, count: int) -> None:
        await trio.sleep(0.2)
        assert len(self.done) == count


async def test_ana_change_aer_and_masking(lb):
    with trio.fail_after(10):
        ctrl = await lb.connect(1)
        ana_size = 16 + 32 * ctrl.identify.nanagrpid + 4 * ctrl.identify.mnan
        assert await ctrl.set_features(FeatureId.ASYNC_EVENT, 1 << 11) == 1 << 11  # nvmet echoes
        aer = AerTask(lb, ctrl)
        await aer.submit()
        lb.target.state.set_ana_state(1, 1, AnaState.CHANGE)
        assert await aer.completion(1) == AEN_ANA_CHANGE

        await aer.submit()
        lb.target.state.set_ana_state(1, 1, AnaState.INACCESSIBLE)  # masked: log not read
        await aer.assert_quiet(1)
        await ctrl.get_log_page(LogPage.ANA, ana_size, rae=True)  # RAE=1 keeps it masked
        lb.target.state.set_ana_state(1, 1, AnaState.NON_OPTIMIZED)
        await aer.assert_quiet(1)
        assert ana_view(await ctrl.ana_log())[1][0] == AnaState.NON_OPTIMIZED  # RAE=0 read
        lb.target.state.set_ana_state(1, 1, AnaState.OPTIMIZED)
        assert await aer.completion(2) == AEN_ANA_CHANGE
        # A change on the other port is not reported to this controller.
        await aer.submit()
        await ctrl.ana_log()
        lb.target.state.set_ana_state(2, 1, AnaState.INACCESSIBLE)
        await aer.assert_quiet(2)


async def test_event_before_aer_is_kept_and_discovery_aen(lb):
    with trio.fail_after(10):
        ctrl = await lb.connect(2)
        await ctrl.set_features(FeatureId.ASYNC_EVENT, 1 << 11)
        lb.target.state.set_ana_state(2, 2, AnaState.INACCESSIBLE)  # no AER outstanding yet
        aer = AerTask(lb, ctrl)
        aer.start()
        assert await aer.completion(1) == AEN_ANA_CHANGE  # delivered when the AER arrives

        disc = await lb.discovery()
        assert await disc.set_features(FeatureId.ASYNC_EVENT, 1 << 31) == 1 << 31
        before = await disc.get_log_page(LogPage.DISCOVERY, 20, nsid=0)
        aer = AerTask(lb, disc)
        aer.target_ctrl = lb.target.state.discovery_controllers[disc.cntlid]
        await aer.submit()
        lb.target.state.discovery_changed()
        assert await aer.completion(1) == 0x0070F002
        after = await disc.get_log_page(LogPage.DISCOVERY, 20, nsid=0)
        assert int.from_bytes(after[:8], "little") == int.from_bytes(before[:8], "little") + 1


async def test_aer_not_enabled_and_limit(lb):
    with trio.fail_after(10):
        ctrl = await lb.connect(1)
        # Enabled from the start like nvmet (namespace and ANA notices): the host turns them off.
        assert await ctrl.set_features(FeatureId.ASYNC_EVENT, 0) == 0
        aer = AerTask(lb, ctrl)
        await aer.submit()  # AEC is 0: ANA changes are not reported
        lb.target.state.set_ana_state(1, 2, AnaState.INACCESSIBLE)
        lb.target.state.add_namespace(lb.nqn, NamespaceConfig(nsid=9, size=MIB))
        await aer.assert_quiet(0)
        for _ in range(3):  # AERL 3: four outstanding
            await aer.submit()
        sqe = NO_FIELDS_COMMAND.build(dict(opcode=AdminOpcode.ASYNC_EVENT_REQUEST))
        assert await admin_word(ctrl, sqe) == 0x820A  # AER Limit Exceeded (SCT 1, SC 0x05)


# -- namespace changes (docs/PROTOCOL.md §5.4, §8.4) -----------------------------------------------


async def test_namespace_add_remove_resize(lb):
    state = lb.target.state
    with trio.fail_after(10):
        ctrl = await lb.connect(1)
        await ctrl.set_features(FeatureId.ASYNC_EVENT, 1 << 8)
        aer = AerTask(lb, ctrl)
        await aer.submit()
        state.add_namespace(lb.nqn, NamespaceConfig(nsid=3, size=MIB))
        assert await aer.completion(1) == AEN_NS_CHANGED
        changed = await ctrl.get_log_page(LogPage.CHANGED_NS, 4096, rae=True)
        assert parse_changed_ns_list(changed) == [3]
        assert parse_changed_ns_list(await ctrl.get_log_page(LogPage.CHANGED_NS, 4096)) == [3]
        assert parse_changed_ns_list(await ctrl.get_log_page(LogPage.CHANGED_NS, 4096)) == []
        assert await ctrl.active_namespaces() == [1, 2, 3, 4]
        assert (await ctrl.namespace(3)).nlbas == MIB // 512
        assert (await ctrl.write(3, 0, b"\x5a" * 4096, 512)).ok

        await aer.submit()  # re-enabled by the RAE=0 read
        state.remove_namespace(lb.nqn, 3)
        assert await aer.completion(2) == AEN_NS_CHANGED
        assert (await ctrl.read(3, 0, 1, 512))[0].status_word == INVALID_NS_DNR | MORE
        assert (await ctrl.write(3, 0, bytes(512), 512)).status_word == INVALID_NS_DNR | MORE
        assert await ctrl.active_namespaces() == [1, 2, 4]
        assert parse_changed_ns_list(await ctrl.get_log_page(LogPage.CHANGED_NS, 4096)) == [3]

        assert (await ctrl.write(1, 32767, b"\xa5" * 512, 512)).ok
        state.resize_namespace(lb.nqn, 1, 32 * MIB)
        ns = parse_identify_ns(await ctrl.identify_raw(Cns.NAMESPACE, 1))
        assert (ns.nsze, ns.ncap) == (65536, 65536)
        assert (await ctrl.write(1, 65535, b"\x11" * 512, 512)).ok
        done, back = await ctrl.read(1, 32767, 1, 512)
        assert done.ok and back == b"\xa5" * 512  # data kept across the resize
        assert (await ctrl.read(1, 65535, 2, 512))[0].status_word == OUT_OF_RANGE


async def test_namespace_lists_full_at_nn(lb):
    state = lb.target.state
    with trio.fail_after(10):
        ctrl = await lb.connect(1)
        nn = ctrl.identify.nn
        for nsid in (3, *range(5, nn + 1)):
            state.add_namespace(lb.nqn, NamespaceConfig(nsid=nsid, size=4096))
        for nsid, size in ((1, 16 * MIB), (2, 16 * MIB), (4, MIB)):
            state.resize_namespace(lb.nqn, nsid, size)  # same size: still reported as changed
        assert await ctrl.active_namespaces() == list(range(1, nn + 1))  # 1024: no zero end
        assert parse_active_ns_list(await ctrl.identify_raw(Cns.ACTIVE_NS_LIST, nn)) == []
        changed = parse_changed_ns_list(await ctrl.get_log_page(LogPage.CHANGED_NS, 4096))
        assert changed == list(range(1, nn + 1))  # exactly full, not the 0xFFFFFFFF marker
        ana = await ctrl.ana_log()
        assert sorted(n for g in ana.groups for n in g.nsids) == list(range(1, nn + 1))


async def test_resize_while_reads_in_flight(lb):
    data = bytes(range(256)) * 4096  # 1 MiB = all of nsid 4
    with trio.fail_after(10):
        ctrl = await lb.connect(1, queue_size=64)
        assert (await ctrl.write(4, 0, data, 512)).ok
        results: list[bool] = []

        async def read() -> None:
            done, back = await ctrl.read(4, 0, 2048, 512)
            results.append(done.ok and back == data)

        async with trio.open_nursery() as readers:
            for _ in range(32):
                readers.start_soon(read)
            for step in range(10_000):  # resize (1 <-> 2 MiB) while the reads are being sent
                if len(results) == 32:
                    break
                lb.target.state.resize_namespace(lb.nqn, 4, MIB << (step % 2))
                await trio.lowlevel.checkpoint()
        assert results == [True] * 32
        done, back = await ctrl.read(4, 0, 2048, 512)
        assert done.ok and back == data


# -- features, properties (docs/PROTOCOL.md §4.4, §5.2, §5.3) --------------------------------------


async def test_features(lb):
    with trio.fail_after(10):
        ctrl = await lb.connect(1)
        granted = lb.max_io_queues - 1
        assert await ctrl.set_features(FeatureId.NUM_QUEUES, 3 | 3 << 16) == granted | granted << 16
        done = await ctrl.admin.submit(get_features(FeatureId.NUM_QUEUES), timeout=5)
        assert done.ok and done.dw0 == granted | granted << 16
        # nvmet grants (and reports) its maximum whatever the host asks for.
        assert await ctrl.set_features(FeatureId.NUM_QUEUES, 1 | 1 << 16) == granted | granted << 16
        for value in (0xFFFF, 0xFFFF << 16, 0xFFFFFFFF):
            sqe = FEATURES_COMMAND.build(dict(opcode=AdminOpcode.SET_FEATURES,
                                              fid=FeatureId.NUM_QUEUES, dword11=value))  # fmt: skip
            assert await admin_word(ctrl, sqe) == INVALID_FIELD_DNR, hex(value)

        assert (await ctrl.admin.submit(get_features(FeatureId.KATO), timeout=5)).dw0 == 5000
        assert await ctrl.set_features(FeatureId.KATO, 12500) == 13  # seconds, rounded up
        # nvmet keeps KATO in whole seconds (nvmet_set_feat_kato)
        assert (await ctrl.admin.submit(get_features(FeatureId.KATO), timeout=5)).dw0 == 13000
        await ctrl.keep_alive()

        for bad in (1 << 9, 1 << 31):
            sqe = FEATURES_COMMAND.build(dict(opcode=AdminOpcode.SET_FEATURES,
                                              fid=FeatureId.ASYNC_EVENT, dword11=bad))  # fmt: skip
            assert await admin_word(ctrl, sqe) == INVALID_FIELD_DNR | MORE, hex(bad)
        # nvmet takes the SMART critical-warning bits (NVMET_AEN_CFG_ALL), never reports them
        assert await ctrl.set_features(FeatureId.ASYNC_EVENT, 0x1F) == 0x1F
        assert await ctrl.set_features(FeatureId.ASYNC_EVENT, 0x900) == 0x900
        assert (
            await ctrl.admin.submit(get_features(FeatureId.ASYNC_EVENT), timeout=5)
        ).dw0 == 0x900

        for fid in (0x7E, 0x03, 0xC0):
            assert await admin_word(ctrl, get_features(fid)) == INVALID_FIELD_DNR | MORE, hex(fid)


async def test_keep_alive_timer(lb):
    with trio.fail_after(10):
        queue = await lb.queue(1)
        assert (await lb.raw_connect(queue, kato=300)).ok  # and then silence
        started = trio.current_time()
        await lb.wait_until(lambda: queue.closed)
        assert 0.25 <= trio.current_time() - started < 2.5
        assert "closed by the target" in str(queue.error)

        alive = await lb.connect(1, kato_ms=600)  # the host sends Keep Alive every 300 ms
        started = trio.current_time()
        armed = await lb.connect(1, kato_ms=0)  # no timer ...
        assert await armed.set_features(FeatureId.KATO, 300) == 1  # ... until Set Features
        await lb.wait_until(lambda: armed.admin.closed, limit=3)
        await trio.sleep_until(started + 1.5)  # alive for 2.5 x its KATO
        assert not alive.admin.closed
        assert alive.cntlid in lb.target.state.subsystems[lb.nqn].controllers


async def test_any_command_keeps_the_controller_alive(lb):
    """Traffic-based keep-alive, as nvmet's: commands other than Keep Alive re-arm the timer
    (a Linux host sends none until its I/O queues are up); silence then ends the association."""
    get_cap = PROPERTY_GET_COMMAND.build(dict(fctype=FabricsType.PROPERTY_GET, attrib=1,
                                              offset=0))  # fmt: skip
    with trio.fail_after(10):
        queue = await lb.queue(1)
        assert (await lb.raw_connect(queue, kato=1000)).ok
        for _ in range(10):  # 2 s of Property Gets, 0.2 s apart: twice the KATO
            await trio.sleep(0.2)
            assert (await queue.submit(bytes(get_cap), timeout=5)).ok
        assert not queue.closed
        started = trio.current_time()
        await lb.wait_until(lambda: queue.closed, limit=4)
        assert 0.9 <= trio.current_time() - started < 3  # KATO, up to twice with the last command


async def test_a_shorter_kato_takes_effect_at_once(lb):
    """The target's watcher sleeps until the keep-alive deadline; Set Features moving the
    deadline earlier wakes it (the host keeps its 30 s Keep Alive period: silence for 1 s)."""
    with trio.fail_after(10):
        ctrl = await lb.connect(1, kato_ms=30000)
        started = trio.current_time()
        assert await ctrl.set_features(FeatureId.KATO, 1000) == 1
        await lb.wait_until(lambda: ctrl.admin.closed, limit=4)
        assert 0.9 <= trio.current_time() - started < 4


async def test_set_kato_zero_disables_keep_alive(lb):
    with trio.fail_after(10):
        ctrl = await lb.connect(1, kato_ms=400)
        assert await ctrl.set_features(FeatureId.KATO, 0) == 0
        await trio.sleep(1.0)  # 2.5 x the old KATO; the spec says the timer is now disabled
        assert not ctrl.admin.closed


async def test_properties(lb):
    with trio.fail_after(10):
        ctrl = await lb.connect(1)
        with pytest.raises(CommandError) as err:
            await ctrl.property_get(0x00, size8=False)  # CAP needs ATTRIB 1
        assert err.value.status.word == INVALID_FIELD_DNR | MORE
        cap = await ctrl.property_get(0x00, size8=True)
        assert (cap & 0xFFFF) == lb.queue_size - 1 and (cap >> 24) & 0xFF != 0
        assert (cap >> 48) & 0xF == 0 and cap & (1 << 37)  # MPSMIN 4 KiB, NVM command set
        assert await ctrl.property_get(0x08) == 0x00010400 == ctrl.vs
        assert await ctrl.property_get(0x1C) & 1  # CSTS.RDY
        assert await ctrl.property_get(0x14) == 0x00460001  # CC as the host wrote it
        with pytest.raises(CommandError) as err:
            await ctrl.property_set(0x00, 0)  # only CC is writable
        assert err.value.status.word == INVALID_FIELD_DNR | MORE
        await ctrl.property_set(0x14, 0x00464001)  # normal shutdown, EN kept
        # nvmet_update_cc: a shutdown clears CC and CSTS.RDY; SHST = 10b (complete)
        assert await ctrl.property_get(0x1C) & 0xD == 0x8


# -- log pages (docs/PROTOCOL.md §5.5) -------------------------------------------------------------


async def test_smart_log_counts_io(lb):
    with trio.fail_after(10):
        ctrl = await lb.connect(1)
        before = parse_smart_log(await ctrl.get_log_page(LogPage.SMART, 512))
        for slba in (0, 16, 32):
            assert (await ctrl.write(1, slba, bytes(8192), 512)).ok
        assert (await ctrl.read(2, 0, 64, 4096))[0].ok
        assert (await ctrl.read(1, 0, 16, 512))[0].ok
        after = parse_smart_log(await ctrl.get_log_page(LogPage.SMART, 512))
        assert after.host_writes == before.host_writes + 3
        assert after.host_reads == before.host_reads + 2
        assert after.data_units_written == before.data_units_written + 1  # 24 KiB: one unit
        assert after.data_units_read == before.data_units_read + 1  # 264 KiB
        assert after.temperature > 273 and after.avail_spare >= after.spare_thresh


async def test_error_log_records_failures(lb, monkeypatch):
    with trio.fail_after(10):
        ctrl = await lb.connect(1)
        queue = ctrl.io_queues[0]
        sent: list[int] = []
        real_send = queue.conn.send_command

        def spy(sqe, **kw):
            sent.append(int.from_bytes(sqe[2:4], "little"))
            return real_send(sqe, **kw)

        monkeypatch.setattr(queue.conn, "send_command", spy)
        done, _ = await ctrl.read(1, 40000, 1, 512)
        assert done.status_word == OUT_OF_RANGE
        entries = parse_error_log(await ctrl.get_log_page(LogPage.ERROR, 64 * 64))
        assert len(entries) == 64
        newest = entries[0]
        assert done.status_word == OUT_OF_RANGE
        assert newest.status_field == OUT_OF_RANGE & ~MORE  # the log keeps it without More
        assert (newest.cmdid, newest.sqid, newest.nsid) == (sent[-1], queue.qid, 1)
        assert newest.error_count >= 1
        smart = parse_smart_log(await ctrl.get_log_page(LogPage.SMART, 512))
        assert smart.num_err_log_entries == newest.error_count

        assert await admin_word(ctrl, get_features(0x7E)) == INVALID_FIELD_DNR | MORE
        entries = parse_error_log(await ctrl.get_log_page(LogPage.ERROR, 128))
        assert entries[0].error_count == newest.error_count + 1
        assert (entries[0].sqid, entries[0].status_field) == (0, INVALID_FIELD_DNR)
        assert entries[1].cmdid == newest.cmdid


async def test_fw_slot_effects_and_unsupported_logs(lb):
    with trio.fail_after(10):
        ctrl = await lb.connect(1)
        fw = parse_fw_slot_log(await ctrl.get_log_page(LogPage.FW_SLOT, 512))
        assert fw.afi & 0x7 == 1 and fw.frs[0] == ctrl.identify.fr
        effects = parse_effects_log(await ctrl.get_log_page(LogPage.CMD_EFFECTS, 4096, nsid=0))
        for opcode in (0x01, 0x02):  # Write, Read
            assert effects.iocs[opcode] & EFFECTS_CSUPP, opcode
        assert effects.iocs[0x01] & EFFECTS_LBCC and not effects.iocs[0x02] & EFFECTS_LBCC
        assert effects.acs[AdminOpcode.IDENTIFY] & EFFECTS_CSUPP
        assert ctrl.identify.lpa & 0x2  # effects log advertised
        for lid in (0x06, 0x7F, LogPage.DISCOVERY):
            sqe = GET_LOG_PAGE_COMMAND.build(dict(opcode=AdminOpcode.GET_LOG_PAGE, lid=lid,
                                                  nsid=0xFFFFFFFF, numdl=127))  # fmt: skip
            word = await admin_word(ctrl, sqe, 512)
            assert word == INVALID_FIELD_DNR | MORE, hex(lid)  # nvmet: Invalid Field
        disc = await lb.discovery()
        sqe = GET_LOG_PAGE_COMMAND.build(dict(opcode=AdminOpcode.GET_LOG_PAGE, lid=LogPage.SMART,
                                              nsid=0xFFFFFFFF, numdl=127))  # fmt: skip
        assert await admin_word(disc, sqe, 512) == INVALID_FIELD_DNR | MORE  # as nvmet
