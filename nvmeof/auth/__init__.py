"""NVMe in-band authentication (DH-HMAC-CHAP, NVMe Base 2.0 "Authentication", TP 8006), sans-IO.

* :mod:`nvmeof.auth.constants` - identifiers, reason codes, SECP/SPSP, Connect AUTHREQ bits.
* :mod:`nvmeof.auth.secret` - ``DHHC-1:`` secrets and the key transformation.
* :mod:`nvmeof.auth.messages` - the AUTH_Send / AUTH_Receive payloads and commands.
* :mod:`nvmeof.auth.crypto` - responses, augmented challenge, FFDHE key pairs.
* :mod:`nvmeof.auth.host` - the host's per-queue state machine (drivers/nvme/host/auth.c).
* :mod:`nvmeof.auth.controller` - the controller's state machines (drivers/nvme/target).

docs/AUTH.md has the message flow and the API the target and initiator call.
"""
