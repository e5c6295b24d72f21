"""Verifying codes at a gate with no network: cached platform keys (JWKS), scene keys, the deny list, a local
replay cache, and, at a venue's gate, the attendee list of its occasion (the `event` scene)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, NamedTuple

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec

from code_service.verifier.attendees import AttendeeList
from code_service.verifier.denylist import DenyList
from code_service.verifier.format import (
    ES256,
    EVENT_SCENE,
    FLAGS,
    SCENE_BITS,
    SCENE_KEY_LEN,
    SCENES,
    SERVER_CODE_LEN,
    TICKET_CODE_LEN,
    TYPE_DEVICE,
    TYPE_ENTERPRISE,
    TYPE_PERSONAL,
    TYPE_TICKET,
    Flags,
    FormatError,
    UnsupportedVersion,
    decode_fields,
    der_signature,
    kid_for,
    load_point,
)

DEVICE_CODE_WINDOW = 30
__all__ = [
    "DEVICE_CODE_WINDOW",
    "EVENT_SCENE",
    "SCENES",
    "AttendeeList",
    "OfflineVerifier",
    "ReplayCache",
    "SceneKeys",
    "Verdict",
]


class Verdict(NamedTuple):
    """Immutable. A named tuple rather than a frozen dataclass: made once per scan, and a frozen dataclass's
    __init__ (object.__setattr__ per field) costs 0.7 us, more than a tenth of the verifier's whole overhead.

    `flags` holds the scene's own field in the clear and nothing else (the other bits stay masked, and unknown to
    this verifier); `holder` is the sealed holder reference, opaque to everyone but the platform. In the `event`
    scene, an admitted (or refused) ticket's id (16 bytes), section and seat: what the gate may show."""

    valid: bool
    reason: str
    scene: str
    code_type: int = 0
    credential_id: bytes = b""
    code_id: bytes = b""
    flags: Flags = FLAGS[0]  # immutable, so one shared instance
    epoch: bytes = b""
    holder: bytes = b""
    ticket: bytes = b""
    section: str = ""
    seat: str = ""

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


class SceneKeys:
    """The scene keys this verifier was given, by (scene, epoch), from GET /api/v1/gates/scene-keys
    (docs/code-format.md 5.4). An epoch is dropped after its not_after; a refresh replaces the whole set."""

    def __init__(self, document: dict[str, Any] | None = None) -> None:
        # (scene, epoch) -> (key, not_after, an HMAC already keyed with it: copying it costs about half of keying
        # a new one, on a path that is otherwise two ECDSA verifications)
        self._keys: dict[tuple[str, bytes], tuple[bytes, int, hmac.HMAC]] = {}
        if document is not None:
            self.load(document)

    def load(self, document: dict[str, Any]) -> None:
        keys: dict[tuple[str, bytes], tuple[bytes, int, hmac.HMAC]] = {}
        for epoch in document.get("epochs", []):
            try:
                epoch_id = bytes.fromhex(epoch["epoch"])
                not_after = int(epoch["not_after"])
                for scene, key_b64 in epoch["keys"].items():
                    key = _b64url(key_b64)
                    if scene in SCENE_BITS and len(epoch_id) == 4 and len(key) == SCENE_KEY_LEN:
                        keys[(scene, epoch_id)] = (key, not_after, hmac.new(key, digestmod=hashlib.sha256))
            except (KeyError, TypeError, ValueError, AttributeError):
                continue
        self._keys = keys

    def add(self, scene: str, epoch: bytes, key: bytes, not_after: int = 2**62) -> None:
        self._keys[(scene, epoch)] = (key, not_after, hmac.new(key, digestmod=hashlib.sha256))

    def get(self, scene: str, epoch: bytes, now: float) -> bytes | None:
        found = self._keys.get((scene, epoch))
        if found is None or now > found[1]:
            return None
        return found[0]

    def mask_byte(self, scene: str, epoch: bytes, nonce: bytes, now: float) -> int | None:
        """HMAC-SHA256(the scene's key of `epoch`, nonce)[0], or None without that key (docs/code-format.md 4.3)."""
        found = self._keys.get((scene, epoch))
        if found is None or now > found[1]:
            return None
        mac = found[2].copy()
        mac.update(nonce)
        return mac.digest()[0]


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
        scene_keys: SceneKeys | None = None,
    ) -> None:
        self.keys = keys_from_jwks(jwks)
        self.deny_list = deny_list or DenyList()
        self.skew = skew
        self.clock = clock
        self.replay = replay or ReplayCache()
        self.scene_keys = scene_keys or SceneKeys()
        self.attendees = AttendeeList()

    def key_for_kid(self, kid_hex: str) -> ec.EllipticCurvePublicKey | None:
        try:
            return self.keys.get(bytes.fromhex(kid_hex))
        except ValueError:
            return None

    def update_keys(self, jwks: dict[str, Any]) -> None:
        self.keys = keys_from_jwks(jwks)

    def update_scene_keys(self, document: dict[str, Any]) -> None:
        self.scene_keys.load(document)

    def update_attendees(self, jws: str) -> None:
        """The signed attendee list of this gate's occasion (GET /api/v1/gates/attendees), for the event scene."""
        self.attendees.apply_document(jws, self.key_for_kid)

    def verify(
        self, text: str, scene: str | None = "transit", *, consume: bool = True, entrance: str = ""
    ) -> Verdict:
        """`scene=None` checks only that the code is genuine, in date and not denied (docs/code-format.md). In the
        `event` scene the gate names its `entrance`, and the ticket comes from its attendee list (7.1)."""
        scene = scene or ""
        now = self.clock()
        try:
            payload, fields = decode_fields(text)
        except UnsupportedVersion:
            return Verdict(False, "unsupported-version", scene)
        except FormatError:
            return Verdict(False, "malformed", scene)
        skew = self.skew
        if len(payload) == TICKET_CODE_LEN:
            return self._ticket(payload, fields, scene, now, entrance, consume)
        if len(payload) == SERVER_CODE_LEN:
            header, kid, epoch, code_id, holder, issued_at, lifetime, masked, r, s = fields
            code_type = header & 0x0F
            key = self.keys.get(kid)
            if key is None:
                return Verdict(False, "unknown-key", scene, code_type)
            try:
                key.verify(der_signature(r, s), payload[:32], ES256)
            except InvalidSignature:
                return Verdict(False, "bad-signature", scene, code_type)
            if now < issued_at - skew:
                return Verdict(False, "not-yet-valid", scene, code_type)
            until = issued_at + lifetime
            if now >= until + skew:
                return Verdict(False, "expired", scene, code_type)
            credential_id = b""
            nonce = code_id
        else:
            _, kid, epoch, credential_id, holder, not_before, not_after, masked, device_key = fields[:9]
            cred_r, cred_s, shown_at, _, device_r, device_s = fields[9:]
            code_type = TYPE_DEVICE
            try:
                device_public = load_point(device_key)  # step 1.5: a device key that is no point is malformed
            except FormatError:
                return Verdict(False, "malformed", scene)
            key = self.keys.get(kid)
            if key is None:
                return Verdict(False, "unknown-key", scene, TYPE_DEVICE)
            try:
                key.verify(der_signature(cred_r, cred_s), payload[:67], ES256)
            except InvalidSignature:
                return Verdict(False, "bad-signature", scene, TYPE_DEVICE)
            try:
                device_public.verify(der_signature(device_r, device_s), payload[:137], ES256)
            except InvalidSignature:
                return Verdict(False, "bad-device-signature", scene, TYPE_DEVICE)
            if now < not_before - skew or shown_at > now + skew:
                return Verdict(False, "not-yet-valid", scene, TYPE_DEVICE)
            if now > not_after + skew or shown_at < now - DEVICE_CODE_WINDOW - skew:
                return Verdict(False, "expired", scene, TYPE_DEVICE)
            code_id = credential_id + payload[131:137]  # shown_at ‖ counter
            until = shown_at + DEVICE_CODE_WINDOW
            nonce = credential_id

        # Genuine and in date: steps 6-8 (deny list, scene, replay) decide whether the gate opens.
        reason = "ok"
        clear = 0
        if credential_id:  # server codes are never on the deny list: they are issued with the live status
            deny = self.deny_list.sets
            cred = int.from_bytes(credential_id, "big")
            if cred in deny["credential"]:
                reason = "denied-credential"
            elif cred in deny["account"]:
                reason = "denied-account"
            elif scene == "transit" and cred in deny["debtor"]:
                reason = "denied-debt"
        if reason == "ok" and scene == EVENT_SCENE:
            return self._event(code_type, credential_id, code_id, epoch, holder, entrance, consume)
        if reason == "ok" and scene:
            bits = SCENE_BITS.get(scene)
            if bits is None or (code_type == TYPE_ENTERPRISE) != (scene == "enterprise"):
                reason = "no-entitlement"
            else:
                mask = self.scene_keys.mask_byte(scene, epoch, nonce, now)
                if mask is None:
                    reason = "no-scene-key"
                else:
                    clear = (masked ^ mask) & bits
                    if not clear:
                        reason = "no-entitlement"
                    elif (
                        consume
                        and scene in _ONCE
                        and not self.replay.first_use(code_id, until + 2 * skew, now)
                    ):
                        reason = "replayed"
        return Verdict(True, reason, scene, code_type, credential_id, code_id, FLAGS[clear], epoch, holder)

    def _event(
        self,
        code_type: int,
        credential_id: bytes,
        code_id: bytes,
        epoch: bytes,
        holder: bytes,
        entrance: str,
        consume: bool,
    ) -> Verdict:
        """Step 7 of the event scene for a personal or device code that passed steps 1-6: no flag bit is read. A
        device code admits by its credential id in the attendee list; a server code names nothing the list can
        hold (its holder is sealed), so it is `online-only`; an enterprise code is no person's ticket."""
        scene = EVENT_SCENE
        if code_type == TYPE_ENTERPRISE:
            return Verdict(True, "no-entitlement", scene, code_type, credential_id, code_id, epoch=epoch)
        if code_type == TYPE_PERSONAL:
            return Verdict(True, "online-only", scene, code_type, b"", code_id, epoch=epoch, holder=holder)
        reason, ticket = self.attendees.admit(entrance, credential_id=credential_id, consume=consume)
        return Verdict(
            True,
            reason,
            scene,
            code_type,
            credential_id,
            code_id,
            epoch=epoch,
            holder=holder,
            ticket=ticket.ticket_id if ticket else b"",
            section=ticket.section if ticket else "",
            seat=ticket.seat if ticket else "",
        )

    def _ticket(
        self, payload: bytes, fields: tuple[Any, ...], scene: str, now: float, entrance: str, consume: bool
    ) -> Verdict:
        """A printed ticket (type 4): the platform's signature, its window, then (event scene) the attendee list
        of the gate's occasion, once per ticket. Any other scene does not accept it (`no-entitlement`)."""
        _, kid, occasion_id, ticket_id, not_before, not_after, r, s = fields
        key = self.keys.get(kid)
        if key is None:
            return Verdict(False, "unknown-key", scene, TYPE_TICKET)
        try:
            key.verify(der_signature(r, s), payload[:45], ES256)
        except InvalidSignature:
            return Verdict(False, "bad-signature", scene, TYPE_TICKET)
        skew = self.skew
        if now < not_before - skew:
            return Verdict(False, "not-yet-valid", scene, TYPE_TICKET)
        if now > not_after + skew:
            return Verdict(False, "expired", scene, TYPE_TICKET)
        if not scene:
            return Verdict(True, "ok", scene, TYPE_TICKET, code_id=ticket_id, ticket=ticket_id)
        if scene != EVENT_SCENE:
            return Verdict(True, "no-entitlement", scene, TYPE_TICKET, code_id=ticket_id, ticket=ticket_id)
        if occasion_id != self.attendees.occasion_id:
            return Verdict(True, "no-ticket", scene, TYPE_TICKET, code_id=ticket_id, ticket=ticket_id)
        reason, ticket = self.attendees.admit(entrance, ticket_id=ticket_id, consume=consume)
        return Verdict(
            True,
            reason,
            scene,
            TYPE_TICKET,
            code_id=ticket_id,
            ticket=ticket_id,
            section=ticket.section if ticket else "",
            seat=ticket.seat if ticket else "",
        )


_ONCE = frozenset({"transit", "medical"})
