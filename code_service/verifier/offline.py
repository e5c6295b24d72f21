"""Verifying codes at a gate with no network: cached platform keys (JWKS), the deny list, a local replay cache."""

from __future__ import annotations

import base64
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, NamedTuple

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec

from code_service.verifier.denylist import DenyList
from code_service.verifier.format import (
    ES256,
    FLAGS,
    SERVER_CODE_LEN,
    TYPE_DEVICE,
    TYPE_ENTERPRISE,
    Flags,
    FormatError,
    decode_fields,
    der_signature,
    kid_for,
    load_point,
)

DEVICE_CODE_WINDOW = 30
SCENES = ("transit", "health", "medical", "enterprise")


class Verdict(NamedTuple):
    """Immutable. A named tuple rather than a frozen dataclass: made once per scan, and a frozen dataclass's
    __init__ (object.__setattr__ per field) costs 0.7 us, more than a tenth of the verifier's whole overhead."""

    valid: bool
    reason: str
    scene: str
    code_type: int = 0
    subject: bytes = b""
    credential_id: bytes = b""
    code_id: bytes = b""
    flags: Flags = FLAGS[0]  # immutable, so one shared instance

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
        self._oldest_until = 0.0  # the `until` of the oldest entry (the first to be looked at for eviction)

    def first_use(self, code_id: bytes, until: float, now: float) -> bool:
        seen = self._seen
        if seen and (self._oldest_until < now or len(seen) >= self._capacity):
            while seen:
                oldest, expiry = next(iter(seen.items()))
                if expiry >= now and len(seen) < self._capacity:
                    self._oldest_until = expiry
                    break
                del seen[oldest]
        if code_id in seen:
            return False
        if not seen:
            self._oldest_until = until
        seen[code_id] = until
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
        scene = scene or ""
        now = self.clock()
        try:
            payload, fields = decode_fields(text)
        except FormatError:
            return Verdict(False, "malformed", scene)
        skew = self.skew
        if len(payload) == SERVER_CODE_LEN:
            header, kid, subject, code_id, issued_at, lifetime, flags, r, s = fields
            code_type = header & 0x0F
            key = self.keys.get(kid)
            if key is None:
                return Verdict(False, "unknown-key", scene, code_type)
            try:
                key.verify(der_signature(r, s), payload[:28], ES256)
            except InvalidSignature:
                return Verdict(False, "bad-signature", scene, code_type)
            if now < issued_at - skew:
                return Verdict(False, "not-yet-valid", scene, code_type)
            until = issued_at + lifetime
            if now >= until + skew:
                return Verdict(False, "expired", scene, code_type)
            credential_id = b""
        else:
            _, kid, credential_id, subject, not_before, not_after, flags, device_key = fields[:8]
            cred_r, cred_s, shown_at, _, device_r, device_s = fields[8:]
            code_type = TYPE_DEVICE
            try:
                device_public = load_point(device_key)  # step 1.5: a device key that is no point is malformed
            except FormatError:
                return Verdict(False, "malformed", scene)
            key = self.keys.get(kid)
            if key is None:
                return Verdict(False, "unknown-key", scene, TYPE_DEVICE)
            try:
                key.verify(der_signature(cred_r, cred_s), payload[:63], ES256)
            except InvalidSignature:
                return Verdict(False, "bad-signature", scene, TYPE_DEVICE)
            try:
                device_public.verify(der_signature(device_r, device_s), payload[:133], ES256)
            except InvalidSignature:
                return Verdict(False, "bad-device-signature", scene, TYPE_DEVICE)
            if now < not_before - skew or shown_at > now + skew:
                return Verdict(False, "not-yet-valid", scene, TYPE_DEVICE)
            if now > not_after + skew or shown_at < now - DEVICE_CODE_WINDOW - skew:
                return Verdict(False, "expired", scene, TYPE_DEVICE)
            code_id = credential_id + payload[127:133]  # shown_at ‖ counter
            until = shown_at + DEVICE_CODE_WINDOW

        # Genuine and in date: steps 6-8 (deny list, scene, replay) decide whether the gate opens.
        reason = "ok"
        deny = self.deny_list.sets
        if credential_id and int.from_bytes(credential_id, "big") in deny["credential"]:
            reason = "denied-credential"
        else:
            subject_id = int.from_bytes(subject, "big")
            if subject_id in deny["account"]:
                reason = "denied-account"
            elif scene == "transit" and subject_id in deny["debtor"]:
                reason = "denied-debt"
        if reason == "ok" and scene:
            rule = _SCENE_RULES.get(scene)
            if rule is None or (code_type == TYPE_ENTERPRISE) != rule[1] or not flags & rule[0]:
                reason = "no-entitlement"
            elif consume and scene in _ONCE and not self.replay.first_use(code_id, until + 2 * skew, now):
                reason = "replayed"
        return Verdict(True, reason, scene, code_type, subject, credential_id, code_id, FLAGS[flags])


# scene: (flag bits of which one must be set, whether the scene takes enterprise codes and only those)
_SCENE_RULES = {
    "transit": (0x04, False),  # may ride
    "health": (0x03, False),  # a known health colour
    "medical": (0x08, False),  # insured
    "enterprise": (0x30, True),  # a known enterprise standing
}
_ONCE = frozenset({"transit", "medical"})
