"""Hand-made cases: sequences (issue 15, source c) and the opcode sweep."""

from __future__ import annotations

from tests.differential import pdus as P
from tests.differential.cases import Case, Session


def _case(name: str, session: Session, note: str = "", settle: float = 0.0) -> Case:
    return Case(name, session.steps, "sequence", note, settle)


def sequence_cases() -> list[Case]:
    out: list[Case] = []
    add = out.append

    # Commands before Connect: an admin command, a Property Get, a second PDU.
    s = Session("seq-cmd-before-connect")
    s.add(0, P.icreq(), "icreq")
    s.add(0, P.identify(1, 1), "identify-before-connect")
    s.add(0, P.property_get(2, P.PROP_CSTS), "property-get-before-connect")
    add(_case("command before Connect", s))

    s = Session("seq-propget-before-connect")
    s.add(0, P.icreq(), "icreq")
    s.add(0, P.property_get(1, P.PROP_CAP), "property-get-before-connect")
    s.add(0, P.connect(2, qid=0, sqsize=31, hostnqn=s.hostnqn, subnqn=s.subnqn,
                       hostid=s.hostid), "admin-connect")  # fmt: skip
    add(_case("Property Get before Connect, then Connect", s))

    s = Session("seq-capsule-before-icreq")
    s.add(0, P.property_get(1, P.PROP_CAP), "capsule-before-icreq", expect=0)
    add(_case("CapsuleCmd before ICReq", s))

    s = Session("seq-second-icreq").admin()
    s.add(0, P.icreq(), "second-icreq", expect=0)
    add(_case("second ICReq on a live queue", s))

    s = Session("seq-second-connect").admin()
    s.add(0, P.connect(s.cid(), qid=0, sqsize=31, hostnqn=s.hostnqn, subnqn=s.subnqn,
                       hostid=s.hostid), "second-admin-connect")  # fmt: skip
    s.probe_admin()
    add(_case("second Connect on the admin queue", s))

    s = Session("seq-admin-before-en").admin(enable=False)
    s.add(0, P.identify(s.cid(), 1), "identify-before-en", expect=1)
    s.add(0, P.get_features(s.cid(), 0x07), "get-features-before-en")
    s.add(0, P.property_get(s.cid(), P.PROP_CAP, size8=True), "cap")
    add(_case("admin commands before CC.EN", s))

    s = Session("seq-io-connect-before-en").admin(enable=False).io()
    s.add(1, P.read(s.cid(), 0, 1), "read-before-en", expect=2)
    add(_case("I/O queue Connect and Read before CC.EN", s))

    s = Session("seq-disconnect-io").full()
    s.add(1, P.disconnect(s.cid()), "disconnect-io")
    s.add(1, P.read(s.cid(), 0, 1), "read-after-disconnect", expect=2)
    s.probe_admin()
    add(_case("Disconnect on an I/O queue, then more I/O", s))

    s = Session("seq-disconnect-admin").admin()
    s.add(0, P.disconnect(s.cid()), "disconnect-admin")
    s.probe_admin()
    add(_case("Disconnect on the admin queue, then more commands", s))

    s = Session("seq-shutdown").full()
    s.add(0, P.property_set(s.cid(), P.PROP_CC, P.CC_ENABLE | (1 << 14)), "cc-shutdown")
    s.add(0, P.property_get(s.cid(), P.PROP_CSTS), "csts-after-shutdown")
    s.add(1, P.read(s.cid(), 0, 1), "read-after-shutdown", expect=2)
    add(_case("CC.SHN then I/O", s))

    s = Session("seq-disable").full()
    s.add(0, P.property_set(s.cid(), P.PROP_CC, 0), "cc-disable")
    s.add(1, P.read(s.cid(), 0, 1), "read-after-disable", expect=2)
    s.add(0, P.identify(s.cid(), 1), "identify-after-disable", expect=2)
    add(_case("CC.EN cleared then I/O", s))

    s = Session("seq-kato-expiry").admin(kato=1000)
    s.add(0, P.get_features(s.cid(), 0x0F), "get-kato")
    add(_case("KATO 1 s and no keep-alive for 4 s", s, settle=4.0))

    s = Session("seq-kato-keepalive").admin(kato=1000)
    s.add(0, P.keep_alive(s.cid()), "keep-alive")
    add(_case("Keep Alive with KATO 1 s", s))

    s = Session("seq-keepalive-kato0").admin(kato=0)
    s.add(0, P.keep_alive(s.cid()), "keep-alive-kato0")
    add(_case("Keep Alive with KATO 0", s))

    # Two hosts with the same Host ID, different NQNs.
    a = Session("seq-same-hostid-a").admin()
    b = Session("seq-same-hostid-b")
    b.hostid = a.hostid
    b.add(1, P.icreq(), "icreq-b")
    b.add(1, P.connect(1, qid=0, sqsize=31, hostnqn=b.hostnqn, subnqn=b.subnqn, hostid=b.hostid),
          "admin-connect-b")  # fmt: skip
    add(Case("two hosts with the same Host ID", a.steps + b.steps, "sequence"))

    # Host ID changes between the admin and the I/O Connect (a fresh random Host ID each time).
    s = Session("seq-hostid-changes").admin().identify_and_queues()
    s.hostid = bytes(reversed(s.hostid))
    s.io().io_commands()
    add(_case("Host ID changes between admin and I/O Connect", s))

    s = Session("seq-hostnqn-changes").admin().identify_and_queues()
    s.hostnqn = s.hostnqn[:-1] + ("0" if s.hostnqn[-1] != "0" else "1")
    s.io()
    add(_case("host NQN changes between admin and I/O Connect", s))

    # ICReq options.
    for maxr2t in (1, 15, 0xFFFFFFFF):
        s = Session(f"seq-maxr2t-{maxr2t}")
        s.add(0, P.icreq(maxr2t=maxr2t), "icreq")
        s.add(0, P.connect(1, qid=0, sqsize=31, hostnqn=s.hostnqn, subnqn=s.subnqn,
                           hostid=s.hostid), "admin-connect")  # fmt: skip
        add(_case(f"ICReq MAXR2T {maxr2t}", s))
    for hpda in (1, 7, 31, 32):
        s = Session(f"seq-hpda-{hpda}")
        s.add(0, P.icreq(hpda=hpda), "icreq")
        s.add(0, P.connect(1, qid=0, sqsize=31, hostnqn=s.hostnqn, subnqn=s.subnqn,
                           hostid=s.hostid), "admin-connect")  # fmt: skip
        add(_case(f"ICReq HPDA {hpda}", s))

    # SQSIZE at its edges, admin and I/O.
    for sqsize in (0, 1, 30, 31, 32, 127, 1023, 1024, 0xFFFF):
        s = Session(f"seq-admin-sqsize-{sqsize}").admin(sqsize=sqsize)
        add(_case(f"admin Connect SQSIZE {sqsize}", s))
        s = Session(f"seq-io-sqsize-{sqsize}").admin().identify_and_queues().io(sqsize=sqsize)
        s.add(1, P.read(s.cid(), 0, 1), "read", expect=2)
        add(_case(f"I/O Connect SQSIZE {sqsize}", s))
    for qid in (2, 8, 0xFFFF):
        s = Session(f"seq-io-qid-{qid}").admin().identify_and_queues().io(qid=qid)
        add(_case(f"I/O Connect QID {qid}", s))
    s = Session("seq-io-qid-twice").admin().identify_and_queues().io().io(conn=2)
    add(_case("two I/O queues with the same QID", s))

    # CID reuse while a command waits for its data.
    s = Session("seq-cid-reuse").admin().identify_and_queues().io()
    cid = s.cid()
    s.add(1, P.write_r2t(cid, s.lba, 32768), "write-r2t")
    s.add(1, P.read(cid, s.lba, 1), "read-same-cid", expect=2)
    s.add(1, P.h2c_data(cid, 0, 0, P.pattern(32768, 3)), "h2c-data", ttag_from_r2t=True)
    add(_case("CID reused while the first command waits for H2CData", s))

    # H2CData in pieces, and wrong pieces.
    s = Session("seq-h2c-split").admin().identify_and_queues().io()
    cid = s.cid()
    s.add(1, P.write_r2t(cid, s.lba, 32768), "write-r2t")
    s.add(1, P.h2c_data(cid, 0, 0, P.pattern(16384, 4), last=False), "h2c-1", expect=0,
          ttag_from_r2t=True)  # fmt: skip
    s.add(1, P.h2c_data(cid, 0, 16384, P.pattern(16384, 5)), "h2c-2", ttag_from_r2t=True)
    add(_case("H2CData in two PDUs", s))

    s = Session("seq-h2c-unsolicited").admin().identify_and_queues().io()
    s.add(1, P.h2c_data(7, 0, 0, P.pattern(512, 6)), "h2c-unsolicited", expect=0)
    s.add(1, P.read(s.cid(), 0, 1), "read", expect=2)
    add(_case("H2CData nobody asked for", s))

    s = Session("seq-h2c-termreq").admin()
    s.add(0, P.h2c_term_req(), "h2c-termreq", expect=0)
    s.probe_admin()
    add(_case("H2CTermReq from the host", s))

    # Discovery controller.
    s = Session("seq-discovery", subnqn=P.DISCOVERY_NQN).admin()
    s.add(0, P.identify(s.cid(), 1), "identify", expect=2)
    s.add(0, P.get_log_page(s.cid(), 0x70, 1024, nsid=0), "discovery-log", expect=2)
    s.add(0, P.get_log_page(s.cid(), 0x02, 512), "smart-on-discovery", expect=1)
    s.add(0, P.keep_alive(s.cid()), "keep-alive")
    add(_case("discovery controller", s))

    # Transfer lengths far beyond anything sensible, on a command without data.
    for size in (1 << 20, (1 << 22) - 512, 1 << 22, (1 << 22) + 512, 1 << 23, 1 << 24, 1 << 31):
        s = Session(f"seq-huge-sgl-{size}").admin()
        entry = P.sqe(P.FABRICS, s.cid(), sgl_length=size)
        entry[4] = P.FCTYPE_PROPERTY_GET
        entry[44] = P.PROP_CSTS
        s.add(0, P.capsule(entry), "property-get-huge-sgl")
        s.probe_admin()
        add(_case(f"Property Get with an SGL of {size} bytes", s))
        if size <= 1 << 25:
            s = Session(f"seq-huge-read-{size}").admin().identify_and_queues().io()
            s.add(1, P.read(s.cid(), 0, size // 512), "read-huge", expect=2)
            s.add(1, P.read(s.cid(), 0, 1), "probe-io", expect=2)
            add(_case(f"Read of {size} bytes", s))
    for sqsize in (1535, 2047, 4095, 8191, 16383, 32767, 49151):
        s = Session(f"seq-admin-sqsize-big-{sqsize}").admin(sqsize=sqsize)
        add(_case(f"admin Connect SQSIZE {sqsize}", s))
    # Reads and writes at and beyond the end of the namespace.
    from tests.differential.cases import NS_BLOCKS

    for slba, nlb in ((NS_BLOCKS - 1, 1), (NS_BLOCKS - 1, 2), (NS_BLOCKS, 1), (1 << 40, 1)):
        s = Session(f"seq-range-{slba}-{nlb}").admin().identify_and_queues().io()
        s.add(1, P.read(s.cid(), slba, nlb), "read-edge", expect=0)
        s.add(1, P.write_in_capsule(s.cid(), slba, P.pattern(512 * nlb, 7)), "write-edge")
        s.add(1, P.read(s.cid(), 0, 1), "probe-io", expect=2)
        add(_case(f"Read/Write at LBA {slba:#x}, {nlb} blocks", s))
    # Identify Namespace for NSID 0, 0xFFFFFFFF and an inactive one.
    for nsid in (0, 0xFFFFFFFF, 7):
        s = Session(f"seq-id-ns-{nsid}").admin()
        s.add(0, P.identify(s.cid(), 0, nsid=nsid), "identify-ns", expect=0)
        s.probe_admin()
        add(_case(f"Identify Namespace NSID {nsid:#x}", s))
    # Admin queue lost; the controller's I/O queue Connect afterwards.
    s = Session("seq-admin-closed-then-io").admin().identify_and_queues()
    s.add(0, P.h2c_term_req(), "h2c-termreq", expect=0)
    s.io()
    add(_case("I/O Connect after the admin queue ended", s))

    s = Session("seq-unknown-subsystem", subnqn="nqn.2014-08.org.nvmexpress:nothing").admin()
    add(_case("Connect to an unknown subsystem", s))
    s = Session("seq-unknown-subsystem-idle", subnqn="nqn.2014-08.org.nvmexpress:nothing")
    s.admin(enable=False)
    add(_case("Connect to an unknown subsystem, then nothing", s))
    return out


def feature_cases() -> list[Case]:
    """What a host gets without asking: Get Features of every FID right after Connect (DW0
    compared), and Set Features of the common ones with typical and odd values."""
    out = []
    for fid in range(256):
        s = Session(f"feat-get-{fid}").admin()
        step = s.add(0, P.get_features(s.cid(), fid), f"get-features-{fid:#04x}")
        step.keep_dw0 = True
        out.append(Case(f"Get Features FID {fid:#04x} after Connect", s.steps, "features"))
    for fid in (0x01, 0x02, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0A, 0x0B, 0x0F, 0x81, 0x84):
        for value in (0, 1, 0x1F, 0x900, 0x80000000, 0xFFFFFFFF):
            s = Session(f"feat-set-{fid}-{value}").admin()
            step = s.add(0, P.set_features(s.cid(), fid, value), f"set-features-{fid:#04x}")
            step.keep_dw0 = True
            back = s.add(0, P.get_features(s.cid(), fid), f"get-features-{fid:#04x}")
            back.keep_dw0 = True
            name = f"Set Features FID {fid:#04x} to {value:#x}, then Get"
            out.append(Case(name, s.steps, "features"))
    return out


def opcode_cases(queues: tuple[str, ...] = ("admin", "io")) -> list[Case]:
    """Every opcode 0x00-0xFF on the admin and an I/O queue: without data, with 512 bytes of
    in-capsule data, and with 512 bytes announced for an R2T; then a probe on the same queue."""
    out = []
    for queue in queues:
        for opcode in range(256):
            for mode in ("none", "in-capsule", "r2t"):
                s = Session(f"op-{queue}-{opcode}-{mode}").admin()
                conn, nsid = 0, 0
                if queue == "io":
                    s.identify_and_queues().io()
                    conn, nsid = 1, 1
                cid = s.cid()
                if mode == "none":
                    entry = P.sqe(opcode, cid, nsid=nsid)
                    pdu = P.capsule(entry)
                elif mode == "in-capsule":
                    entry = P.sqe(opcode, cid, nsid=nsid, sgl_type=P.SGL_OFFSET, sgl_length=512)
                    pdu = P.capsule(entry, P.pattern(512, opcode))
                else:
                    entry = P.sqe(opcode, cid, nsid=nsid, sgl_length=512)
                    pdu = P.capsule(entry)
                step = s.add(conn, pdu, f"opcode-{opcode:#04x}", expect=1)
                if opcode == 0x0C and queue == "admin":  # an AER waits: nothing comes back
                    step.expect = 0
                if queue == "io":
                    s.add(1, P.read(s.cid(), 0, 1), "probe-io", expect=2)
                else:
                    s.probe_admin()
                name = f"{queue} opcode {opcode:#04x}, data {mode}"
                out.append(Case(name, s.steps, "opcodes"))
    return out
