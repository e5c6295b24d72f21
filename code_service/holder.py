"""The holder's side of a device code: what the phone app does. Pure Python and `cryptography`.

    wallet = DeviceWallet.create()
    POST /api/v1/codes/device-credentials {"public_key": wallet.public_key_b64}   # a key made for this request
    wallet.load_credential(response["credential"])       # base64 of 131 bytes, refresh daily
    text = wallet.code()                                  # offline, a fresh code every few seconds

Every credential binds a key pair made for it alone (docs/code-format.md 5.2): the platform refuses a key it bound
before, so `public_key_b64` names a fresh pending key after each credential is loaded, and the key of the previous
credential is forgotten with it. A device key therefore links the codes of one credential (at most 24 h), no more.

Real apps keep the key in the Secure Enclave / Android Keystore (both do P-256 natively) and sign there."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric import ec

from code_service.verifier.format import CREDENTIAL_LEN, compressed_point, encode_device_code

_DEVICE_KEY = slice(34, 67)  # where a credential carries the device key it binds


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@dataclass
class DeviceWallet:
    pending_key: ec.EllipticCurvePrivateKey = field(default_factory=_new_key)
    private_key: ec.EllipticCurvePrivateKey | None = None  # the key of the loaded credential
    credential: bytes = b""
    counter: int = 0
    clock: Callable[[], float] = field(default=time.time)

    @classmethod
    def create(cls, clock: Callable[[], float] = time.time) -> DeviceWallet:
        return cls(clock=clock)

    @property
    def public_key_b64(self) -> str:
        """The fresh key to send with the next credential request."""
        return base64.b64encode(compressed_point(self.pending_key.public_key())).decode()

    def load_credential(self, credential_b64: str) -> None:
        raw = base64.b64decode(credential_b64)
        if len(raw) != CREDENTIAL_LEN:
            raise ValueError(f"a credential is {CREDENTIAL_LEN} bytes")
        if raw[_DEVICE_KEY] != compressed_point(self.pending_key.public_key()):
            raise ValueError("the credential binds another key than the one this wallet asked with")
        self.private_key, self.pending_key = self.pending_key, _new_key()
        self.credential = raw
        self.counter = 0

    def code(self) -> str:
        if not self.credential or self.private_key is None:
            raise RuntimeError("no credential loaded")
        self.counter = (self.counter + 1) & 0xFFFF
        return encode_device_code(self.private_key, self.credential, int(self.clock()), self.counter)
