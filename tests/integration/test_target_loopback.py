"""Loopback tests of the target over real TCP: discovery log, data path, backends, Connect rules
and shutdown (docs/PROTOCOL.md §4, §5.7, §6, §7). Hosts are this project's initiator."""

from __future__ import annotations

import hashlib
import os

import pytest
import trio

from nvmeof.constants import DISCOVERY_NQN, NSID_ALL, Cns, IoOpcode, LogPage
from nvmeof.wire.logpages import parse_discovery_entries, parse_discovery_header
from nvmeof.wire.sqe import DSM_COMMAND, DSM_RANGE, GET_LOG_PAGE_COMMAND
from target.config import NamespaceConfig, PortConfig, SubsystemConfig, TargetConfig
from target.daemon import Target

MIB = 1 << 20
INVALID_FIELD_DNR = 0x8004
INVALID_NS_DNR = 0x8016
LBA_RANGE_DNR = 0x8100
DATA_SGL_LENGTH_INVALID_DNR = 0x8000 | (0x0F << 1)
MORE = 0x4000  # nvmet sets More on every error it logs with a location (nvmet_set_error)
# I/O beyond the namespace: nvmet's block device backend answers Internal Error, DNR, More
# (the block layer fails the bio); strict ports answer LBA Out of Range.
OUT_OF_RANGE = 0x8000 | MORE | (0x006 << 1)
COMPARE_FAILURE_DNR = 0x850A  # SCT 2, SC 0x85
CONNECT_INVALID_PARAM_DNR = 0x8304  # SCT 1, SC 0x82
CONNECT_INVALID_HOST_DNR = 0x8308  # SCT 1, SC 0x84
IATTR_DATA = 1 << 16


def pattern(seed: str, size: int) -> bytes:
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"{seed}/{counter}".encode()).digest()
        counter += 1
    return bytes(out[:size])


# -- discovery (docs/PROTOCOL.md §5.7) -------------------------------------------------------------


async def libnvme_discovery_log(ctrl):
    """Read the discovery log exactly like libnvme ``nvme_discovery_log``."""
    header = parse_discovery_header(await ctrl.get_log_page(LogPage.DISCOVERY, 20, nsid=0))
    end = 1024 + 1024 * header.numrec
    chunks, offset, lengths = [], 1024, []
    while offset < end:
        length = min(4096, end - offset)
        last = offset + length >= end
        chunks.append(await ctrl.get_log_page(LogPage.DISCOVERY, length, nsid=0, offset=offset,
                                              rae=not last))  # fmt: skip
        lengths.append(length)
        offset += length
    again = parse_discovery_header(await ctrl.get_log_page(LogPage.DISCOVERY, 20, nsid=0))
    assert (again.genctr, again.numrec, again.recfmt) == (header.genctr, header.numrec, 0)
    current, *entries = parse_discovery_entries(b"".join(chunks), header.numrec)
    # TP 8013, as nvmet 6.x: first the discovery subsystem itself, on the port used.
    assert (current.subtype, current.subnqn) == (3, DISCOVERY_NQN)
    return header, entries, lengths


def check_entries(entries, lb, traddr: str = "127.0.0.1") -> None:
    for e in entries:
        assert (e.trtype, e.adrfam, e.subtype, e.cntlid, e.asqsz) == (3, 1, 2, 0xFFFF, 32)
        assert e.traddr == traddr
        assert e.trsvcid == str(lb.ports[e.portid])


async def test_discovery_log_libnvme_pattern(lb):
    with trio.fail_after(10):
        ctrl = await lb.discovery()
        header, entries, lengths = await libnvme_discovery_log(ctrl)
        assert header.numrec == 3 and lengths == [3072]
        # The restricted subsystem is not listed to a host that may not use it.
        assert [(e.portid, e.subnqn) for e in entries] == [(1, lb.nqn), (2, lb.nqn)]
        check_entries(entries, lb)
        again, _, _ = await libnvme_discovery_log(ctrl)
        assert again.genctr == header.genctr
        _, via_io_port, _ = await libnvme_discovery_log(await lb.discovery(1))
        assert via_io_port == entries  # every port also serves the discovery NQN

        allowed = await lb.connect(3, DISCOVERY_NQN, kato_ms=0, io_queues=0,
                                   hostnqn=lb.allowed_host)  # fmt: skip
        _, entries, _ = await libnvme_discovery_log(allowed)
        assert sorted((e.portid, e.subnqn) for e in entries) == [
            (1, lb.nqn), (1, lb.restricted_nqn), (2, lb.nqn)]  # fmt: skip


async def test_discovery_log_many_entries_in_4k_chunks(start_target):
    big = await start_target(extra_subsystems=4)
    with trio.fail_after(10):
        ctrl = await big.discovery()
        header, entries, lengths = await libnvme_discovery_log(ctrl)
        assert header.numrec == 11 and lengths == [4096, 4096, 3072]
        assert sum(e.portid == 1 for e in entries) == 5 and len({e.subnqn for e in entries}) == 5
        check_entries(entries, big)
        assert {e.trsvcid for e in entries} == {str(big.ports[1]), str(big.ports[2])}


async def test_discovery_advertised_address(start_target):
    lb = await start_target(advertise="10.0.2.2")
    with trio.fail_after(10):
        assert all(p.addr == "127.0.0.1" for p in lb.target.ports.values())
        ctrl = await lb.discovery()  # reached through 127.0.0.1
        _, entries, _ = await libnvme_discovery_log(ctrl)
        assert len(entries) == 2
        check_entries(entries, lb, traddr="10.0.2.2")


async def test_discovery_wildcard_port_lists_local_address(start_target):
    cfg = TargetConfig(
        subsystems=(SubsystemConfig(nqn="nqn.2026-11.io.nvmeof-emu:wild"),),
        ports=(PortConfig(id=1, addr="0.0.0.0", port=0, subsystems=("nqn.2026-11.io.nvmeof-emu:wild",)),
               PortConfig(id=3, port=0)),
    )  # fmt: skip
    lb = await start_target(cfg)
    with trio.fail_after(10):
        _, entries, _ = await libnvme_discovery_log(await lb.discovery())
        assert [(e.portid, e.traddr) for e in entries] == [(1, "127.0.0.1")]  # never 0.0.0.0
        check_entries(entries, lb)


async def test_discovery_log_offsets_and_lengths(lb):
    with trio.fail_after(10):
        ctrl = await lb.discovery()
        full = bytes(await ctrl.get_log_page(LogPage.DISCOVERY, 4096, nsid=0))
        header = parse_discovery_header(full)
        assert header.numrec == 3 and header.recfmt == 0
        for offset, length in ((0, 8), (8, 12), (1028, 100), (1024 + 508, 1032), (2048, 1024),
                               (3068, 4), (2000, 1000)):  # fmt: skip
            chunk = await ctrl.get_log_page(LogPage.DISCOVERY, length, nsid=0, offset=offset)
            assert bytes(chunk) == full[offset : offset + length], (offset, length)
        tail = await ctrl.get_log_page(LogPage.DISCOVERY, 64, nsid=0, offset=4096)
        assert bytes(tail) == bytes(64)  # beyond the end: zero fill
        misaligned = await ctrl.admin.submit(_log_sqe(LogPage.DISCOVERY, 16, offset=2),
                                             read=bytearray(16), timeout=5)  # fmt: skip
        assert misaligned.status_word == INVALID_FIELD_DNR | MORE
        assert parse_discovery_header(full).genctr == header.genctr


def _log_sqe(lid: int, length: int, *, offset: int = 0, nsid: int = 0) -> bytes:
    numd = length // 4 - 1
    return GET_LOG_PAGE_COMMAND.build(dict(opcode=0x02, nsid=nsid, lid=lid, numdl=numd & 0xFFFF,
                                           numdu=numd >> 16, lpol=offset))  # fmt: skip


# -- data path (docs/PROTOCOL.md §2.3, §2.4, §6) ---------------------------------------------------

SIZES = {
    1: (512, [512, 4096, 8192, 8704, 16384, 65536, 135168, 524288, MIB]),
    2: (4096, [4096, 8192, 12288, 16384, 65536, 139264, MIB]),
}


@pytest.mark.parametrize(("port_id", "digests"), [(1, False), (1, True), (2, False), (2, True)])
async def test_write_read_all_sizes(lb, port_id, digests):
    with trio.fail_after(15):
        ctrl = await lb.connect(port_id, header_digest=digests, data_digest=digests,
                                io_queues=2)  # fmt: skip
        assert len(ctrl.io_queues) == 2
        assert ctrl.io_queues[0].in_capsule_limit == lb.inline(port_id)
        for nsid, (bs, sizes) in SIZES.items():
            slba = 0
            for i, size in enumerate(sizes):
                data = pattern(f"{port_id}/{digests}/{nsid}/{size}", size)
                done = await ctrl.write(nsid, slba, data, bs, queue=i)
                assert done.ok, (nsid, size, done.status)
                done, back = await ctrl.read(nsid, slba, size // bs, bs, queue=i + 1)
                assert done.ok and back == data, (nsid, size)
                slba += size // bs


async def test_cross_path_and_transfer_limits(lb):
    with trio.fail_after(10):
        one, two = await lb.connect(1), await lb.connect(2)
        data = pattern("cross", 64 * 1024)
        assert (await one.write(1, 1000, data, 512)).ok
        done, back = await two.read(1, 1000, len(data) // 512, 512)
        assert done.ok and back == data
        # Above nvmet-tcp's 4 MiB: Data SGL Length Invalid, nothing logged, for reads and
        # (before any R2T) writes. Up to it, more than MDTS is served, as nvmet does.
        sgl_too_long = 0x8000 | (0x00F << 1)
        done, _ = await one.read(1, 0, 4 * MIB // 512 + 1, 512)
        assert done.status_word == sgl_too_long
        done = await one.write(2, 0, bytes(4 * MIB + 4096), 4096)
        assert done.status_word == sgl_too_long
        done, _ = await one.read(1, 0, 2 * MIB // 512, 512)
        assert done.ok
        # Beyond capacity (32768 LBAs of 512 B): out of range.
        done, _ = await one.read(1, 32767, 2, 512)
        assert done.status_word == OUT_OF_RANGE
        done = await one.write(2, 4095, bytes(8192), 4096)
        assert done.status_word == OUT_OF_RANGE
        done, back = await one.read(1, 32767, 1, 512)  # the last LBA itself is fine
        assert done.ok and len(back) == 512
        # The connection is still healthy after the failures.
        done, back = await one.read(1, 1000, len(data) // 512, 512)
        assert done.ok and back == data


async def test_compare(lb):
    with trio.fail_after(10):
        ctrl = await lb.connect(1)
        for size in (4096, 65536):  # in-capsule and R2T
            data = pattern(f"cmp/{size}", size)
            assert (await ctrl.write(1, 2000, data, 512)).ok
            done = await ctrl.io(IoOpcode.COMPARE, 1, 2000, size // 512, write=data)
            assert done.ok
            other = data[:-1] + bytes([data[-1] ^ 0xFF])
            done = await ctrl.io(IoOpcode.COMPARE, 1, 2000, size // 512, write=other)
            assert done.status_word == COMPARE_FAILURE_DNR
            assert (done.status.sct, done.status.sc, done.status.dnr) == (2, 0x85, True)


async def test_write_zeroes_dsm_flush(lb):
    with trio.fail_after(10):
        ctrl = await lb.connect(1)
        data = pattern("wz", 16 * 512)
        assert (await ctrl.write(1, 300, data, 512)).ok
        assert (await ctrl.io(IoOpcode.WRITE_ZEROES, 1, 304, 8)).ok
        done, back = await ctrl.read(1, 300, 16, 512)
        assert done.ok
        assert back == data[:2048] + bytes(4096) + data[6144:]

        data = pattern("dsm", 64 * 4096)
        assert (await ctrl.write(2, 0, data, 4096)).ok
        ranges = [(2, 3), (10, 1), (40, 8)]  # (SLBA, NLB) - NLB is a count, not 0's based
        buf = bytearray(4096)  # Linux sends room for 256 ranges whatever NR says
        for i, (slba, nlb) in enumerate(ranges):
            buf[i * 16 : i * 16 + 16] = DSM_RANGE.build(dict(nlb=nlb, slba=slba))
        sqe = DSM_COMMAND.build(dict(opcode=IoOpcode.DATASET_MANAGEMENT, nsid=2,
                                     nr=len(ranges) - 1, attributes=1 << 2))  # fmt: skip
        done = await ctrl.io_queues[0].submit(sqe, write=buf, timeout=5)
        assert done.ok, done.status
        done, back = await ctrl.read(2, 0, 64, 4096)
        expected = bytearray(data)
        for slba, nlb in ranges:
            expected[slba * 4096 : (slba + nlb) * 4096] = bytes(nlb * 4096)
        assert done.ok and back == expected

        hint = DSM_COMMAND.build(dict(opcode=IoOpcode.DATASET_MANAGEMENT, nsid=2, nr=0,
                                      attributes=0b11))  # IDR/IDW hints only: no change  # fmt: skip
        assert (await ctrl.io_queues[0].submit(hint, write=bytes(buf), timeout=5)).ok
        assert (await ctrl.read(2, 0, 64, 4096))[1] == expected
        beyond = bytearray(4096)
        beyond[:16] = DSM_RANGE.build(dict(nlb=2, slba=4095))
        done = await ctrl.io_queues[0].submit(sqe, write=beyond, timeout=5)
        assert done.status_word == LBA_RANGE_DNR
        # nvmet_dsm_len() reads all of CDW10 as NR: bits above 7:0 ask for more ranges than
        # 4 KiB holds, and nvmet answers Data SGL Length Invalid (found by the differential run)
        wide = DSM_COMMAND.build(dict(opcode=IoOpcode.DATASET_MANAGEMENT, nsid=2,
                                      nr=0x100, attributes=1 << 2))  # fmt: skip
        done = await ctrl.io_queues[0].submit(wide, write=bytes(buf), timeout=5)
        assert done.status_word == DATA_SGL_LENGTH_INVALID_DNR | MORE
        assert (await ctrl.io(IoOpcode.WRITE_ZEROES, 1, 32760, 9)).status_word == OUT_OF_RANGE

        assert (await ctrl.io(IoOpcode.FLUSH, 1, 0, 1)).ok
        # nvmet looks NSID 0xFFFFFFFF up like any other (nvmet_req_find_ns): Invalid Namespace
        flush_all = await ctrl.io(IoOpcode.FLUSH, NSID_ALL, 0, 1)
        assert flush_all.status_word == INVALID_NS_DNR | MORE
        assert (await ctrl.io(IoOpcode.FLUSH, 9, 0, 1)).status_word == INVALID_NS_DNR | MORE


# -- backends ---------------------------------------------------------------------------------------


def _single(nqn: str, ns: NamespaceConfig) -> TargetConfig:
    return TargetConfig(subsystems=(SubsystemConfig(nqn=nqn, namespaces=(ns,)),),
                        ports=(PortConfig(id=1, port=0, subsystems=(nqn,)),))  # fmt: skip


async def test_file_backend_survives_restart(start_target, nursery, tmp_path):
    path = tmp_path / "ns.img"
    nqn = "nqn.2026-11.io.nvmeof-emu:file"
    cfg = _single(nqn, NamespaceConfig(nsid=1, size=8 * MIB, block_size=4096, backend="file",
                                       path=str(path)))  # fmt: skip
    data = pattern("file", 256 * 1024)
    with trio.fail_after(10):
        async with trio.open_nursery() as serve:
            lb = await start_target(cfg, serve_in=serve)
            ctrl = await lb.connect(1, nqn)
            assert (await ctrl.write(1, 100, data, 4096)).ok
            assert (await ctrl.write(1, 2047, data[:4096], 4096)).ok  # the last block
            assert (await ctrl.io(IoOpcode.FLUSH, 1, 0, 1)).ok
            await ctrl.shutdown()
            lb.target.stop()
        st = os.stat(path)
        assert st.st_size == 8 * MIB
        assert st.st_blocks * 512 < 8 * MIB  # sparse: only what was written is allocated
        lb = await start_target(cfg)  # a new Target, same configuration
        ctrl = await lb.connect(1, nqn)
        done, back = await ctrl.read(1, 100, len(data) // 4096, 4096)
        assert done.ok and back == data
        done, back = await ctrl.read(1, 2047, 1, 4096)
        assert done.ok and back == data[:4096]
        done, back = await ctrl.read(1, 0, 100, 4096)
        assert done.ok and back == bytes(100 * 4096)


async def test_null_backend_reads_zeros(start_target):
    nqn = "nqn.2026-11.io.nvmeof-emu:null"
    lb = await start_target(_single(nqn, NamespaceConfig(nsid=1, size=64 * MIB, backend="null")))
    with trio.fail_after(10):
        ctrl = await lb.connect(1, nqn)
        assert (await ctrl.namespace(1)).nlbas == 64 * MIB // 512
        for size in (4096, 131072):
            assert (await ctrl.write(1, 8, pattern("null", size), 512)).ok
            done, back = await ctrl.read(1, 8, size // 512, 512)
            assert done.ok and back == bytes(size)


# -- Connect rules (docs/PROTOCOL.md §4.1-4.3) -----------------------------------------------------


async def test_connect_unknown_or_unexposed_subsystem(lb):
    with trio.fail_after(10):
        for nqn in ("nqn.2026-11.io.nvmeof-emu:nope", lb.hidden_nqn):
            done = await lb.raw_connect(await lb.queue(1), subnqn=nqn)
            assert done.status_word == CONNECT_INVALID_PARAM_DNR, nqn
            assert done.dw0 == 256 | IATTR_DATA  # IPO = SUBNQN in the Connect data
        # The restricted subsystem is on port 1 only.
        done = await lb.raw_connect(await lb.queue(2), subnqn=lb.restricted_nqn)
        assert (done.status_word, done.dw0) == (CONNECT_INVALID_PARAM_DNR, 256 | IATTR_DATA)
        done = await lb.raw_connect(await lb.queue(1), sqsize=0)
        assert (done.status_word, done.dw0) == (CONNECT_INVALID_PARAM_DNR, 44)  # SQSIZE in SQE
        done = await lb.raw_connect(await lb.queue(1), cntlid=1)  # admin Connect needs 0xFFFF
        assert (done.status_word, done.dw0) == (CONNECT_INVALID_PARAM_DNR, 16 | IATTR_DATA)
        done = await lb.raw_connect(await lb.queue(1), hostnqn="")  # nvmet: any host, even ""
        assert done.status_word == 0
        done = await lb.raw_connect(await lb.queue(1), recfmt=1)
        assert done.status_word == 0x8300  # Connect Incompatible Format (SCT 1, SC 0x80)
        queue = await lb.queue(1)
        assert (await lb.raw_connect(queue)).ok
        again = await lb.raw_connect(queue)  # a queue connects once: nvmet has no Connect
        assert again.status.code == 0x001 and again.status.dnr  # on a connected queue


async def test_connect_host_access_list(lb):
    with trio.fail_after(10):
        other = "nqn.2014-08.org.nvmexpress:uuid:00000000-0000-4000-8000-0000000000bd"
        done = await lb.raw_connect(await lb.queue(1), subnqn=lb.restricted_nqn, hostnqn=other)
        assert done.status_word == CONNECT_INVALID_HOST_DNR
        ctrl = await lb.connect(1, lb.restricted_nqn, hostnqn=lb.allowed_host)
        assert ctrl.cntlid >= 1 and (await ctrl.write(1, 0, bytes(512), 512)).ok


async def test_io_connect_rules(lb):
    host = "nqn.2014-08.org.nvmexpress:uuid:00000000-0000-4000-8000-00000000010c"
    with trio.fail_after(10):
        ctrl = await lb.connect(1, hostnqn=host, io_queues=1)  # granted: 1 I/O queue
        cases = [
            (dict(qid=1, cntlid=ctrl.cntlid + 100), 16 | IATTR_DATA),  # no such controller
            (dict(qid=1, cntlid=ctrl.cntlid, hostnqn=lb.allowed_host), 16 | IATTR_DATA),
            (dict(qid=lb.max_io_queues + 1, cntlid=ctrl.cntlid), 42),  # QID above the maximum
            (dict(qid=1, cntlid=ctrl.cntlid, sqsize=0), 44),
        ]
        for kwargs, ipo in cases:
            kwargs.setdefault("hostnqn", host)
            done = await lb.raw_connect(await lb.queue(1, qid=kwargs["qid"]), **kwargs)
            assert (done.status_word, done.dw0) == (CONNECT_INVALID_PARAM_DNR, ipo), kwargs
        # QID 1 is already connected by connect_controller: Command Sequence Error.
        done = await lb.raw_connect(await lb.queue(1, qid=1), qid=1, cntlid=ctrl.cntlid,
                                    hostnqn=host)  # fmt: skip
        assert done.status.code == 0x00C and done.status.dnr

        bare = await lb.connect(1, hostnqn=host, io_queues=0)  # no Set Features: max granted
        for qid, sqsize, expect in ((1, lb.queue_size, 44), (lb.max_io_queues + 1, 31, 42)):
            done = await lb.raw_connect(await lb.queue(1, qid=qid), qid=qid, sqsize=sqsize,
                                        cntlid=bare.cntlid, hostnqn=host)  # fmt: skip
            assert (done.status_word, done.dw0) == (CONNECT_INVALID_PARAM_DNR, expect)
        for qid in range(1, lb.max_io_queues + 1):  # SQSIZE = MQES is fine
            queue = await lb.queue(1, qid=qid, depth=lb.queue_size)
            done = await lb.raw_connect(queue, qid=qid, sqsize=lb.queue_size - 1,
                                        cntlid=bare.cntlid, hostnqn=host)  # fmt: skip
            assert done.ok and done.dw0 == bare.cntlid


async def test_two_hosts_coexist(lb):
    with trio.fail_after(10):
        a = await lb.connect(
            1, hostnqn="nqn.2014-08.org.nvmexpress:uuid:aaaaaaaa-0000-4000-8000-000000000001"
        )
        b = await lb.connect(
            1, hostnqn="nqn.2014-08.org.nvmexpress:uuid:bbbbbbbb-0000-4000-8000-000000000002"
        )
        assert a.cntlid != b.cntlid
        assert set(lb.target.state.subsystems[lb.nqn].controllers) == {a.cntlid, b.cntlid}
        assert (await a.write(1, 10, pattern("a", 4096), 512)).ok
        done, back = await b.read(1, 10, 8, 512)
        assert done.ok and back == pattern("a", 4096)


async def test_admin_close_closes_io_queues(lb):
    with trio.fail_after(10):
        ctrl = await lb.connect(2, io_queues=3)
        assert len(ctrl.io_queues) == lb.max_io_queues
        assert lb.target.state.subsystems[lb.nqn].controllers
        await ctrl.admin.aclose()
        await lb.wait_until(lambda: all(q.closed for q in ctrl.io_queues))
        assert all("closed by the target" in str(q.error) for q in ctrl.io_queues)
        assert lb.target.state.subsystems[lb.nqn].controllers == {}
        await lb.wait_until(lambda: not lb.target.connections)


# -- clean shutdown -------------------------------------------------------------------------------


async def test_stop_closes_every_connection(start_target):
    with trio.fail_after(10):
        async with trio.open_nursery() as serve:
            lb = await start_target(serve_in=serve)
            ctrls = [await lb.connect(1, io_queues=2), await lb.connect(2), await lb.discovery()]
            queues = [q for c in ctrls for q in (c.admin, *c.io_queues)]
            queues.append(await lb.queue(2))  # ICReq done, no Connect: no controller
            await lb.wait_until(lambda: len(lb.target.connections) == 7)
            assert len(queues) == 7
            lb.target.stop()
        # serve() returned (the nursery exited); every host queue sees the connection close.
        await lb.wait_until(lambda: all(q.closed for q in queues))
        assert not lb.target.connections
        assert lb.target.state.controllers() == []
        with pytest.raises(OSError, match="attempts to connect"):
            await trio.open_tcp_stream("127.0.0.1", lb.ports[1])


async def test_target_class_direct(nursery):
    """The bare API the brief names: nursery.start(Target(cfg).serve) then stop()."""
    cfg = _single("nqn.2026-11.io.nvmeof-emu:direct", NamespaceConfig(nsid=1, size=MIB))
    with trio.fail_after(5):
        async with trio.open_nursery() as serve:
            target = await serve.start(Target(cfg).serve)
            assert target.ports[1].bound_port != 0
            target.stop()


async def test_unique_discovery_nqn(start_target):
    # TP 8013: a configured unique discovery NQN is served beside the well-known one and names
    # the discovery subsystem (Identify SUBNQN, the log's "current discovery subsystem" entry).
    from dataclasses import replace

    from nvmeof.wire.identify import parse_identify_ctrl
    from tests.integration.conftest import itest_config

    unique = "nqn.2014-08.org.nvmexpress.discovery:uuid:7d1f1c0a-7d0c-4d6e-9c55-2c2b8e1f0a11"
    lb = await start_target(replace(itest_config(), discovery_nqn=unique))
    with trio.fail_after(10):
        for nqn in (unique, DISCOVERY_NQN):
            ctrl = await lb.connect(3, nqn, kato_ms=0, io_queues=0)
            ident = parse_identify_ctrl(await ctrl.identify_raw(Cns.CONTROLLER, 0))
            assert ident.subnqn == unique
            full = bytes(await ctrl.get_log_page(LogPage.DISCOVERY, 4096, nsid=0))
            current, *rest = parse_discovery_entries(
                full[1024:], parse_discovery_header(full).numrec
            )
            assert (current.subtype, current.subnqn, current.portid) == (3, unique, 3)
            assert current.trsvcid == str(lb.ports[3])
            assert [(e.portid, e.subnqn) for e in rest] == [(1, lb.nqn), (2, lb.nqn)]
        # An I/O queue on a discovery NQN is refused like any unknown controller.
        done = await lb.raw_connect(await lb.queue(3, qid=1), qid=1, cntlid=1, subnqn=unique)
        assert done.status.code == 0x182
