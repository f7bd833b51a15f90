"""Identifiers of NVMe in-band authentication (DH-HMAC-CHAP), as ``include/linux/nvme.h`` names them.

NVMe Base Specification 2.0, "Authentication" (TP 8006). The values are the kernel's
``NVME_AUTH_*`` enums; the Python names drop the prefix.
"""

from __future__ import annotations

from enum import IntEnum

#: SECP of AUTH_Send / AUTH_Receive: the DH-HMAC-CHAP security protocol
#: (``NVME_AUTH_DHCHAP_PROTOCOL_IDENTIFIER``).
SECP_DHCHAP = 0xE9
#: SPSP0 and SPSP1 the host sets and nvmet insists on (``nvme_auth_submit``,
#: ``nvmet_execute_auth_send``).
SPSP0_DHCHAP = 0x01
SPSP1_DHCHAP = 0x01

#: The AUTH_Receive AL the Linux host always uses: its whole exchange buffer
#: (``CHAP_BUF_SIZE`` in drivers/nvme/host/auth.c, "4k is enough to ffdhe8192").
HOST_RECEIVE_LENGTH = 4096

#: Connect response DW0 bits (``NVME_CONNECT_AUTHREQ_*``): ATR = authentication required,
#: ASCR = authentication and secure channel (TLS) required.
CONNECT_AUTHREQ_ATR = 1 << 17
CONNECT_AUTHREQ_ASCR = 1 << 18

#: The protocol descriptor's AUTHID for DH-HMAC-CHAP (``NVME_AUTH_DHCHAP_AUTH_ID``).
DHCHAP_AUTH_ID = 0x01
#: Negotiate's id list holds up to 30 hash ids, then up to 30 DH group ids
#: (``NVME_AUTH_DHCHAP_MAX_HASH_IDS`` / ``_MAX_DH_IDS``).
MAX_HASH_IDS = 30
MAX_DH_IDS = 30

#: The failure messages' REASON CODE (``NVME_AUTH_DHCHAP_FAILURE_REASON_FAILED``).
RESCODE_AUTHENTICATION_FAILED = 0x01


class AuthType(IntEnum):
    """Byte 0 of every message (``NVME_AUTH_COMMON_MESSAGES`` / ``_DHCHAP_MESSAGES``)."""

    COMMON = 0x00  # negotiate, failure1, failure2
    DHCHAP = 0x01  # challenge, reply, success1, success2


class MessageId(IntEnum):
    """Byte 1 of every message (``NVME_AUTH_DHCHAP_MESSAGE_*``)."""

    NEGOTIATE = 0x00
    CHALLENGE = 0x01
    REPLY = 0x02
    SUCCESS1 = 0x03
    SUCCESS2 = 0x04
    FAILURE2 = 0xF0
    FAILURE1 = 0xF1


class HashId(IntEnum):
    """HMAC hash functions (``NVME_AUTH_HASH_*``); also the DHHC-1 secret's transform id."""

    SHA256 = 0x01
    SHA384 = 0x02
    SHA512 = 0x03


class DhGroup(IntEnum):
    """Diffie-Hellman groups (``NVME_AUTH_DHGROUP_*``): the RFC 7919 ffdhe groups."""

    NULL = 0x00
    FFDHE2048 = 0x01
    FFDHE3072 = 0x02
    FFDHE4096 = 0x03
    FFDHE6144 = 0x04
    FFDHE8192 = 0x05


class FailureReason(IntEnum):
    """REASON CODE EXPLANATION of failure1/failure2 (``NVME_AUTH_DHCHAP_FAILURE_*``)."""

    FAILED = 0x01
    NOT_USABLE = 0x02
    CONCAT_MISMATCH = 0x03
    HASH_UNUSABLE = 0x04
    DHGROUP_UNUSABLE = 0x05
    INCORRECT_PAYLOAD = 0x06
    INCORRECT_MESSAGE = 0x07


class SecureChannel(IntEnum):
    """Negotiate's SC_C (``NVME_AUTH_SECP_*``): secure channel concatenation (TLS)."""

    NONE = 0x00
    SC = 0x01
    NEW_TLS_PSK = 0x02
    REPLACE_TLS_PSK = 0x03


#: Hash names the kernel and nvmet's configfs use (``nvme_auth_hmac_name``).
HASH_NAMES = {
    HashId.SHA256: "hmac(sha256)",
    HashId.SHA384: "hmac(sha384)",
    HashId.SHA512: "hmac(sha512)",
}
#: DH group names (``nvme_auth_dhgroup_name``).
DHGROUP_NAMES = {
    DhGroup.NULL: "null",
    DhGroup.FFDHE2048: "ffdhe2048",
    DhGroup.FFDHE3072: "ffdhe3072",
    DhGroup.FFDHE4096: "ffdhe4096",
    DhGroup.FFDHE6144: "ffdhe6144",
    DhGroup.FFDHE8192: "ffdhe8192",
}


def connect_result(cntlid: int, *, authentication_required: bool) -> int:
    """Connect response DW0 as nvmet builds it (``nvmet_connect_result``, fabrics-cmd.c).

    The controller ID in bits 15:0 and ATR when the host has a DH-HMAC-CHAP key configured
    (``nvmet_has_auth``: ``ctrl->host_key`` set and the queue not on a TLS PSK). nvmet uses the
    same function for the admin and the I/O queue Connect, so every queue authenticates.
    """
    return (cntlid & 0xFFFF) | (CONNECT_AUTHREQ_ATR if authentication_required else 0)
