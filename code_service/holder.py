"""The holder's side of a device code: what the phone app does. Pure Python and `cryptography`.

    wallet = DeviceWallet.create()                       # once per phone; keep the private key in the keystore
    POST /api/v1/codes/device-credentials {"public_key": wallet.public_key_b64}
    wallet.load_credential(response["credential"])       # base64 of 127 bytes, refresh daily
    text = wallet.code()                                  # offline, a fresh code every few seconds

Real apps keep the key in the Secure Enclave / Android Keystore (both do P-256 natively) and sign there."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric import ec

from code_service.verifier.format import CREDENTIAL_LEN, compressed_point, encode_device_code


@dataclass
class DeviceWallet:
    private_key: ec.EllipticCurvePrivateKey
    credential: bytes = b""
    counter: int = 0
    clock: Callable[[], float] = field(default=time.time)

    @classmethod
    def create(cls, clock: Callable[[], float] = time.time) -> DeviceWallet:
        return cls(ec.generate_private_key(ec.SECP256R1()), clock=clock)

    @property
    def public_key_b64(self) -> str:
        return base64.b64encode(compressed_point(self.private_key.public_key())).decode()

    def load_credential(self, credential_b64: str) -> None:
        raw = base64.b64decode(credential_b64)
        if len(raw) != CREDENTIAL_LEN:
            raise ValueError("a credential is 127 bytes")
        self.credential = raw
        self.counter = 0

    def code(self) -> str:
        if not self.credential:
            raise RuntimeError("no credential loaded")
        self.counter = (self.counter + 1) & 0xFFFF
        return encode_device_code(self.private_key, self.credential, int(self.clock()), self.counter)
