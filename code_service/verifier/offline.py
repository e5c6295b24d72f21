"""Verifying codes at a gate with no network: cached platform keys (JWKS), the deny list, a local replay cache."""

from __future__ import annotations

import base64
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from code_service.verifier.denylist import DenyList
from code_service.verifier.format import (
    MAX_CREDENTIAL_LIFETIME,
    MAX_SERVER_LIFETIME,
    TYPE_DEVICE,
    TYPE_ENTERPRISE,
    DeviceCode,
    Flags,
    FormatError,
    Health,
    ServerCode,
    Standing,
    decode,
    kid_for,
    load_point,
    verify_raw,
)

DEVICE_CODE_WINDOW = 30
SCENES = ("transit", "health", "medical", "enterprise")


@dataclass(frozen=True, slots=True)
class Verdict:
    valid: bool
    reason: str
    scene: str
    code_type: int = 0
    subject: bytes = b""
    credential_id: bytes = b""
    code_id: bytes = b""
    flags: Flags = field(default_factory=Flags)

    @property
    def allowed(self) -> bool:
        return self.valid and self.reason == "ok"


def _b64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def keys_from_jwks(jwks: dict[str, Any]) -> dict[bytes, ec.EllipticCurvePublicKey]:
    """P-256 keys by kid; entries that are malformed or whose kid does not match their point are ignored."""
    keys: dict[bytes, ec.EllipticCurvePublicKey] = {}
    for jwk in jwks.get("keys", []):
        try:
            if jwk.get("kty") != "EC" or jwk.get("crv") != "P-256":
                continue
            numbers = ec.EllipticCurvePublicNumbers(
                int.from_bytes(_b64url(jwk["x"]), "big"),
                int.from_bytes(_b64url(jwk["y"]), "big"),
                ec.SECP256R1(),
            )
            key = numbers.public_key()
            if kid_for(key).hex() != jwk["kid"]:
                continue
        except (KeyError, TypeError, ValueError):
            continue
        keys[kid_for(key)] = key
    return keys


class ReplayCache:
    """Code ids seen recently; an entry lives as long as its code could still be valid."""

    def __init__(self, capacity: int = 200_000) -> None:
        self._seen: OrderedDict[bytes, float] = OrderedDict()
        self._capacity = capacity

    def first_use(self, code_id: bytes, until: float, now: float) -> bool:
        while self._seen:
            oldest, expiry = next(iter(self._seen.items()))
            if expiry >= now and len(self._seen) < self._capacity:
                break
            del self._seen[oldest]
        if code_id in self._seen:
            return False
        self._seen[code_id] = until
        return True


class OfflineVerifier:
    """Verdicts for one gate. `clock` returns unix seconds; `skew` tolerates gate and phone clocks being off."""

    def __init__(
        self,
        jwks: dict[str, Any],
        deny_list: DenyList | None = None,
        *,
        skew: int = 30,
        clock: Callable[[], float] = time.time,
        replay: ReplayCache | None = None,
    ) -> None:
        self.keys = keys_from_jwks(jwks)
        self.deny_list = deny_list or DenyList()
        self.skew = skew
        self.clock = clock
        self.replay = replay or ReplayCache()

    def key_for_kid(self, kid_hex: str) -> ec.EllipticCurvePublicKey | None:
        try:
            return self.keys.get(bytes.fromhex(kid_hex))
        except ValueError:
            return None

    def update_keys(self, jwks: dict[str, Any]) -> None:
        self.keys = keys_from_jwks(jwks)

    def verify(self, text: str, scene: str | None = "transit", *, consume: bool = True) -> Verdict:
        """`scene=None` checks only that the code is genuine, in date and not denied (docs/code-format.md)."""
        return self._verify(text, scene or "", consume)

    def _verify(self, text: str, scene: str, consume: bool) -> Verdict:
        now = self.clock()
        try:
            code = decode(text)
        except FormatError:
            return Verdict(False, "malformed", scene)
        if isinstance(code, DeviceCode):
            verdict = self._check_device(code, scene, now)
        else:
            verdict = self._check_server(code, scene, now)
        if verdict.reason != "ok":
            return verdict
        denied = self._denied(code, scene)
        if denied:
            return Verdict(
                True,
                denied,
                scene,
                code.type,
                code.subject,
                verdict.credential_id,
                verdict.code_id,
                code.flags,
            )
        if not scene:
            return verdict
        if not _entitled(code, scene):
            return Verdict(
                True,
                "no-entitlement",
                scene,
                code.type,
                code.subject,
                verdict.credential_id,
                verdict.code_id,
                code.flags,
            )
        if consume and scene in ("transit", "medical"):
            until = code.expires_at if isinstance(code, ServerCode) else code.shown_at + DEVICE_CODE_WINDOW
            if not self.replay.first_use(verdict.code_id, until + 2 * self.skew, now):
                return Verdict(
                    True,
                    "replayed",
                    scene,
                    code.type,
                    code.subject,
                    verdict.credential_id,
                    verdict.code_id,
                    code.flags,
                )
        return verdict

    def _check_server(self, code: ServerCode, scene: str, now: float) -> Verdict:
        key = self.keys.get(code.kid)
        if key is None:
            return Verdict(False, "unknown-key", scene, code.type)
        if not 1 <= code.lifetime <= MAX_SERVER_LIFETIME or not verify_raw(key, code.signature, code.signed):
            return Verdict(False, "bad-signature", scene, code.type)
        if now < code.issued_at - self.skew:
            return Verdict(False, "not-yet-valid", scene, code.type)
        if now >= code.expires_at + self.skew:
            return Verdict(False, "expired", scene, code.type)
        return Verdict(True, "ok", scene, code.type, code.subject, b"", code.code_id, code.flags)

    def _check_device(self, code: DeviceCode, scene: str, now: float) -> Verdict:
        key = self.keys.get(code.kid)
        if key is None:
            return Verdict(False, "unknown-key", scene, TYPE_DEVICE)
        if not 0 < code.not_after - code.not_before <= MAX_CREDENTIAL_LIFETIME or not verify_raw(
            key, code.credential_signature, code.credential
        ):
            return Verdict(False, "bad-signature", scene, TYPE_DEVICE)
        try:
            device_key = load_point(code.device_key)
        except FormatError:
            return Verdict(False, "malformed", scene, TYPE_DEVICE)
        if not verify_raw(device_key, code.device_signature, code.signed):
            return Verdict(False, "bad-device-signature", scene, TYPE_DEVICE)
        if now < code.not_before - self.skew or code.shown_at > now + self.skew:
            return Verdict(False, "not-yet-valid", scene, TYPE_DEVICE)
        if now > code.not_after + self.skew or code.shown_at < now - DEVICE_CODE_WINDOW - self.skew:
            return Verdict(False, "expired", scene, TYPE_DEVICE)
        return Verdict(
            True, "ok", scene, TYPE_DEVICE, code.subject, code.credential_id, code.code_id, code.flags
        )

    def _denied(self, code: ServerCode | DeviceCode, scene: str) -> str:
        deny = self.deny_list
        if isinstance(code, DeviceCode) and deny.denies("credential", code.credential_id):
            return "denied-credential"
        if deny.denies("account", code.subject):
            return "denied-account"
        if scene == "transit" and deny.denies("debtor", code.subject):
            return "denied-debt"
        return ""


def _entitled(code: ServerCode | DeviceCode, scene: str) -> bool:
    flags = code.flags
    if scene == "transit":
        return code.type != TYPE_ENTERPRISE and flags.may_ride
    if scene == "health":
        return code.type != TYPE_ENTERPRISE and flags.health != Health.UNKNOWN
    if scene == "medical":
        return code.type != TYPE_ENTERPRISE and flags.insured
    if scene == "enterprise":
        return code.type == TYPE_ENTERPRISE and flags.standing != Standing.UNKNOWN
    return False
