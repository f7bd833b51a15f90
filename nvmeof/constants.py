"""Numeric constants of NVMe and NVMe/TCP (PDU types, opcodes, CNS, log pages, features, ...).

Values and names follow ``include/linux/nvme.h`` and ``include/linux/nvme-tcp.h``;
see docs/PROTOCOL.md §1-8 for where each is used.
"""

from __future__ import annotations

from enum import IntEnum, IntFlag

DISCOVERY_NQN = "nqn.2014-08.org.nvmexpress.discovery"
NQN_FIELD_SIZE = 256
NQN_MAX_LEN = 223

SQE_SIZE = 64
CQE_SIZE = 16
CH_SIZE = 8
CONNECT_DATA_SIZE = 1024
IDENTIFY_SIZE = 4096
DISCOVERY_ENTRY_SIZE = 1024

IO_PORT = 4420
DISCOVERY_PORT = 8009

#: CNTLID sent in the admin Connect to ask for a dynamic controller.
CNTLID_DYNAMIC = 0xFFFF
#: Highest CNTLID a controller may be given (0xFFF0.. are reserved).
CNTLID_MAX = 0xFFEF
NSID_ALL = 0xFFFFFFFF

#: MAXH2CDATA floor the Linux host enforces (NVME_TCP_MIN_MAXH2CDATA).
MIN_MAXH2CDATA = 4096
TERMREQ_HLEN = 24
TERMREQ_MAX_DATA = 128


class PduType(IntEnum):
    """NVMe/TCP PDU type (common header byte 0)."""

    ICREQ = 0x00
    ICRESP = 0x01
    H2C_TERM_REQ = 0x02
    C2H_TERM_REQ = 0x03
    CAPSULE_CMD = 0x04
    CAPSULE_RESP = 0x05
    H2C_DATA = 0x06
    C2H_DATA = 0x07
    R2T = 0x09


class PduFlags(IntFlag):
    """Common header flags byte."""

    HDGSTF = 0x01
    DDGSTF = 0x02
    LAST_PDU = 0x04
    SUCCESS = 0x08


class DigestFlags(IntFlag):
    """ICReq/ICResp digest byte."""

    HEADER = 0x01
    DATA = 0x02


class FatalErrorStatus(IntEnum):
    """TermReq FES values (``enum nvme_tcp_fatal_error_status``)."""

    INVALID_PDU_HEADER_FIELD = 0x01
    PDU_SEQUENCE_ERROR = 0x02
    HEADER_DIGEST_ERROR = 0x03
    DATA_TRANSFER_OUT_OF_RANGE = 0x04
    DATA_TRANSFER_LIMIT_EXCEEDED = 0x05
    UNSUPPORTED_PARAMETER = 0x06


# Plain-int twins of the enums above, for the per-PDU code: IntFlag arithmetic and enum member
# lookups cost microseconds per PDU (measured), plain ints cost nothing.
PDU_ICREQ, PDU_ICRESP, PDU_H2C_TERM_REQ, PDU_C2H_TERM_REQ = 0x00, 0x01, 0x02, 0x03
PDU_CAPSULE_CMD, PDU_CAPSULE_RESP, PDU_H2C_DATA, PDU_C2H_DATA, PDU_R2T = (
    0x04,
    0x05,
    0x06,
    0x07,
    0x09,
)
FLAG_HDGSTF, FLAG_DDGSTF, FLAG_LAST_PDU, FLAG_SUCCESS = 0x01, 0x02, 0x04, 0x08
SGL_IN_CAPSULE, SGL_TRANSPORT = 0x01, 0x5A


class AdminOpcode(IntEnum):
    DELETE_SQ = 0x00
    CREATE_SQ = 0x01
    GET_LOG_PAGE = 0x02
    DELETE_CQ = 0x04
    CREATE_CQ = 0x05
    IDENTIFY = 0x06
    ABORT = 0x08
    SET_FEATURES = 0x09
    GET_FEATURES = 0x0A
    ASYNC_EVENT_REQUEST = 0x0C
    KEEP_ALIVE = 0x18
    FABRICS = 0x7F


class IoOpcode(IntEnum):
    FLUSH = 0x00
    WRITE = 0x01
    READ = 0x02
    WRITE_UNCORRECTABLE = 0x04
    COMPARE = 0x05
    WRITE_ZEROES = 0x08
    DATASET_MANAGEMENT = 0x09
    VERIFY = 0x0C
    RESERVATION_REGISTER = 0x0D
    RESERVATION_REPORT = 0x0E
    RESERVATION_ACQUIRE = 0x11
    RESERVATION_RELEASE = 0x15
    FABRICS = 0x7F


class FabricsType(IntEnum):
    PROPERTY_SET = 0x00
    CONNECT = 0x01
    PROPERTY_GET = 0x04
    AUTH_SEND = 0x05
    AUTH_RECEIVE = 0x06
    DISCONNECT = 0x08


class SglType(IntEnum):
    """SQE byte 39: (descriptor type << 4) | subtype."""

    DATA_BLOCK_OFFSET = 0x01  # in-capsule data
    TRANSPORT_DATA_BLOCK = 0x5A  # data moved by R2T/H2CData or C2HData


class Cns(IntEnum):
    NAMESPACE = 0x00
    CONTROLLER = 0x01
    ACTIVE_NS_LIST = 0x02
    NS_DESC_LIST = 0x03
    CS_NAMESPACE = 0x05
    CS_CONTROLLER = 0x06
    CS_INDEP_NAMESPACE = 0x08


class LogPage(IntEnum):
    ERROR = 0x01
    SMART = 0x02
    FW_SLOT = 0x03
    CHANGED_NS = 0x04
    CMD_EFFECTS = 0x05
    ANA = 0x0C
    DISCOVERY = 0x70
    RESERVATION = 0x80


class FeatureId(IntEnum):
    ARBITRATION = 0x01
    POWER_MGMT = 0x02
    TEMP_THRESHOLD = 0x04
    ERROR_RECOVERY = 0x05
    VOLATILE_WC = 0x06
    NUM_QUEUES = 0x07
    IRQ_COALESCE = 0x08
    WRITE_ATOMIC = 0x0A
    ASYNC_EVENT = 0x0B
    KATO = 0x0F
    HOST_ID = 0x81
    RESERVATION_MASK = 0x82
    RESERVATION_PERSIST = 0x83


class Property(IntEnum):
    """Controller property offsets (Property Get/Set OFST)."""

    CAP = 0x00
    VS = 0x08
    CC = 0x14
    CSTS = 0x1C
    NSSR = 0x20
    CRTO = 0x68


class AnaState(IntEnum):
    """Asymmetric Namespace Access state of a (port, group)."""

    OPTIMIZED = 0x01
    NON_OPTIMIZED = 0x02
    INACCESSIBLE = 0x03
    PERSISTENT_LOSS = 0x04
    CHANGE = 0x0F

    @property
    def usable(self) -> bool:
        """Whether a host may send I/O on a path in this state."""
        return self in (AnaState.OPTIMIZED, AnaState.NON_OPTIMIZED)

    @property
    def label(self) -> str:
        """nvme-cli / nvmetcli spelling of the state."""
        return _ANA_LABELS[self]

    @classmethod
    def from_label(cls, text: str) -> AnaState:
        """Parse ``optimized``, ``non-optimized``, ``inaccessible``, ``persistent-loss``, ``change``."""
        key = text.strip().lower().replace("_", "-")
        for state, label in _ANA_LABELS.items():
            if label == key:
                return state
        raise ValueError(
            f"unknown ANA state {text!r} (expected one of {', '.join(_ANA_LABELS.values())})"
        )


_ANA_LABELS = {
    AnaState.OPTIMIZED: "optimized",
    AnaState.NON_OPTIMIZED: "non-optimized",
    AnaState.INACCESSIBLE: "inaccessible",
    AnaState.PERSISTENT_LOSS: "persistent-loss",
    AnaState.CHANGE: "change",
}


class ControllerType(IntEnum):
    IO = 1
    DISCOVERY = 2
    ADMIN = 3


class TransportType(IntEnum):
    RDMA = 1
    FC = 2
    TCP = 3
    LOOP = 254


class AddressFamily(IntEnum):
    IPV4 = 1
    IPV6 = 2
    IB = 3
    FC = 4


class DiscoverySubtype(IntEnum):
    REFERRAL = 1
    NVME = 2
    CURRENT_DISCOVERY = 3


class SecureChannel(IntEnum):
    """Discovery log entry TREQ bits 1:0 (NVMe over Fabrics spec, Discovery Log Page Entry;
    nvmet's ``addr_treq``)."""

    NOT_SPECIFIED = 0
    REQUIRED = 1
    NOT_REQUIRED = 2


class TcpSecurityType(IntEnum):
    """TSAS byte 0 (SECTYPE) of a TCP discovery log entry (include/linux/nvme.h
    NVMF_TCP_SECTYPE_*; TP 8011)."""

    NONE = 0
    TLS12 = 1  # obsolete
    TLS13 = 2


class AenType(IntEnum):
    ERROR = 0
    SMART = 1
    NOTICE = 2
    COMMAND_SET = 6
    VENDOR = 7


class AenNotice(IntEnum):
    NS_ATTR_CHANGED = 0x00
    FW_ACTIVATION = 0x01
    ANA_CHANGE = 0x03
    DISCOVERY_CHANGE = 0xF0


#: OAES / AEC bits (Identify Controller OAES, Set Features 0x0B CDW11).
OAES_NS_ATTR = 1 << 8
OAES_FW_ACTIVATION = 1 << 9
OAES_ANA_CHANGE = 1 << 11
OAES_DISCOVERY_CHANGE = 1 << 31


def is_host_to_controller(opcode: int, fctype: int = 0) -> bool:
    """Data direction of a command: bit 0 of the opcode (of FCTYPE for fabrics commands)."""
    if opcode == AdminOpcode.FABRICS:
        return bool(fctype & 1)
    return bool(opcode & 1)
