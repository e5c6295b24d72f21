"""Part `offline`: code_service.verifier.OfflineVerifier.verify against the cryptographic minimum with `cryptography`
for the same codes, one core, medians over many short alternating rounds. The verifier's side includes everything a
gate does for a version-2 code: parsing, the deny list, and the HMAC that unmasks the scene's flag bits; the raw
side is the ECDSA verifications alone. docs/code-format.md promises at least 90 % of the raw speed."""

from __future__ import annotations

import base64
import secrets
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass
class OfflineCase:
    name: str
    verifier: float  # calls/s, median over the rounds
    raw: float
    raw_label: str
    ratio: float  # median over the rounds of verifier/raw, the two measured one after the other in each round
    overhead_us: float  # median over the rounds of the verifier's time per code minus raw's
    bare: float = 0.0
    bare_label: str = ""
    bare_ratio: float = 0.0

    @classmethod
    def paired(
        cls, name: str, rates: dict[str, list[float]], verifier: str, raw: str, raw_label: str, bare: str = ""
    ) -> OfflineCase:
        def ratio(other: str) -> float:
            return statistics.median(v / r for v, r in zip(rates[verifier], rates[other], strict=True))

        return cls(
            name,
            statistics.median(rates[verifier]),
            statistics.median(rates[raw]),
            raw_label,
            ratio(raw),
            statistics.median(1e6 / v - 1e6 / r for v, r in zip(rates[verifier], rates[raw], strict=True)),
            statistics.median(rates[bare]) if bare else 0.0,
            "2 verifies only" if bare else "",
            ratio(bare) if bare else 0.0,
        )


def _rate(fn: Callable[[], int]) -> float:
    """Calls per second of this thread's CPU time; fn returns how many calls it made. CPU time, not wall time:
    on this 2-core machine other work preempts the loop now and then, and the time it spends descheduled would
    count against whichever function happened to be running."""
    started = time.thread_time()
    calls = fn()
    return calls / (time.thread_time() - started)


def _alternating(fns: dict[str, Callable[[], int]], rounds: int) -> dict[str, list[float]]:
    """Calls per second of every function in every round. Rounds are short (tens of milliseconds per function)
    and interleave the functions, so a clock or load change on the machine affects neighbours alike."""
    rates: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            rates[name].append(_rate(fn))
    return rates


def offline_benchmarks(rounds: int) -> tuple[list[OfflineCase], dict[str, float]]:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

    from code_service.holder import DeviceWallet
    from code_service.verifier import DenyList, OfflineVerifier, ReplayCache, SceneKeys
    from code_service.verifier.format import (
        SCENES,
        TYPE_PERSONAL,
        DeviceCode,
        Flags,
        Health,
        ServerCode,
        compressed_point,
        decode,
        decode_fields,
        encode_credential,
        encode_server_code,
        kid_for,
    )

    ecdsa = ec.ECDSA(hashes.SHA256())
    curve = ec.SECP256R1()

    def der(raw: bytes) -> bytes:
        return encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))

    def b64url(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    platform_key = ec.generate_private_key(curve)
    public = platform_key.public_key()
    kid = kid_for(public)
    numbers = public.public_numbers()
    jwks = {
        "keys": [
            {
                "kty": "EC",
                "crv": "P-256",
                "alg": "ES256",
                "kid": kid.hex(),
                "x": b64url(numbers.x.to_bytes(32, "big")),
                "y": b64url(numbers.y.to_bytes(32, "big")),
            }
        ]
    }
    epoch = secrets.token_bytes(4)
    scene_keys = {scene: secrets.token_bytes(32) for scene in SCENES}
    gate_keys = SceneKeys()
    gate_keys.add("transit", epoch, scene_keys["transit"])  # a gate holds the transit key only
    gate = OfflineVerifier(jwks, DenyList(), scene_keys=gate_keys)
    platform_public = gate.keys[kid]  # the gate's own key object, as loaded from the JWKS
    flags = Flags(Health.GREEN, may_ride=True, insured=True)
    now = int(time.time())

    def server_code() -> str:
        return encode_server_code(
            platform_key,
            kid,
            TYPE_PERSONAL,
            secrets.token_bytes(8),
            secrets.token_bytes(8),
            now,
            60,
            flags,
            epoch,
            scene_keys,
        )

    wallets = []
    for _ in range(64):
        wallet = DeviceWallet.create()
        credential = encode_credential(
            platform_key,
            kid,
            secrets.token_bytes(8),
            secrets.token_bytes(8),
            now - 60,
            now - 60 + 24 * 3600,
            flags,
            compressed_point(wallet.pending_key.public_key()),
            epoch,
            scene_keys,
        )
        wallet.load_credential(base64.b64encode(credential).decode())
        wallets.append(wallet)
    n_device, n_server = 300, 600  # per round: about 40 ms per device-code row, 30 ms per server-code row
    device_same = [wallets[0].code()] * n_device
    device_fresh = [wallets[i % len(wallets)].code() for i in range(n_device)]
    server_same = [server_code()] * n_server
    server_fresh = [server_code() for _ in range(n_server)]
    for text in (device_same[0], device_fresh[0], server_same[0], server_fresh[0]):
        verdict = gate.verify(text, "transit", consume=False)
        assert verdict.allowed, verdict

    def device_items(texts: list[str]) -> list[tuple[bytes, bytes, bytes, bytes, bytes, Any]]:
        items = []
        for text in texts:
            code = decode(text)
            assert isinstance(code, DeviceCode)
            items.append(
                (
                    code.credential,
                    der(code.credential_signature),
                    code.device_key,
                    code.signed,
                    der(code.device_signature),
                    ec.EllipticCurvePublicKey.from_encoded_point(curve, code.device_key),
                )
            )
        return items

    def server_items(texts: list[str]) -> list[tuple[bytes, bytes]]:
        items = []
        for text in texts:
            code = decode(text)
            assert isinstance(code, ServerCode)
            items.append((code.signed, der(code.signature)))
        return items

    def verifier_loop(texts: list[str], consume: bool) -> Callable[[], int]:
        def run() -> int:
            if consume:
                gate.replay = ReplayCache()  # each round meets the codes for the first time
            verify = gate.verify
            for text in texts:
                verify(text, "transit", consume=consume)
            return len(texts)

        return run

    def raw_device(items: list[tuple[bytes, bytes, bytes, bytes, bytes, Any]]) -> Callable[[], int]:
        def run() -> int:
            key = platform_public
            load = ec.EllipticCurvePublicKey.from_encoded_point
            for credential, credential_sig, point, signed, device_sig, _ in items:
                key.verify(credential_sig, credential, ecdsa)
                load(curve, point).verify(device_sig, signed, ecdsa)
            return len(items)

        return run

    def bare_device(items: list[tuple[bytes, bytes, bytes, bytes, bytes, Any]]) -> Callable[[], int]:
        def run() -> int:
            key = platform_public
            for credential, credential_sig, _, signed, device_sig, device_key in items:
                key.verify(credential_sig, credential, ecdsa)
                device_key.verify(device_sig, signed, ecdsa)
            return len(items)

        return run

    def raw_server(items: list[tuple[bytes, bytes]]) -> Callable[[], int]:
        def run() -> int:
            key = platform_public
            for signed, signature in items:
                key.verify(signature, signed, ecdsa)
            return len(items)

        return run

    def decode_only(texts: list[str], parse: Callable[[str], Any]) -> Callable[[], int]:
        def run() -> int:
            for text in texts:
                parse(text)
            return len(texts)

        return run

    d_same, d_fresh = device_items(device_same), device_items(device_fresh)
    s_same, s_fresh = server_items(server_same), server_items(server_fresh)
    rates = _alternating(
        {
            "v_device_same": verifier_loop(device_same, False),
            "raw_device_same": raw_device(d_same),
            "bare_device_same": bare_device(d_same),
            "v_device_fresh": verifier_loop(device_fresh, True),
            "raw_device_fresh": raw_device(d_fresh),
            "bare_device_fresh": bare_device(d_fresh),
            "v_server_same": verifier_loop(server_same, False),
            "raw_server_same": raw_server(s_same),
            "v_server_fresh": verifier_loop(server_fresh, True),
            "raw_server_fresh": raw_server(s_fresh),
            "fields_device": decode_only(device_fresh, decode_fields),
            "fields_server": decode_only(server_fresh, decode_fields),
            "decode_device": decode_only(device_fresh, decode),
            "decode_server": decode_only(server_fresh, decode),
        },
        rounds,
    )
    device_raw, server_raw = "load point + 2 verifies", "1 verify"
    cases = [
        OfflineCase.paired(
            "device code, same code, consume=False",
            rates,
            "v_device_same",
            "raw_device_same",
            device_raw,
            "bare_device_same",
        ),
        OfflineCase.paired(
            "device code, fresh code each call, consume=True",
            rates,
            "v_device_fresh",
            "raw_device_fresh",
            device_raw,
            "bare_device_fresh",
        ),
        OfflineCase.paired(
            "server code, same code, consume=False", rates, "v_server_same", "raw_server_same", server_raw
        ),
        OfflineCase.paired(
            "server code, fresh code each call, consume=True",
            rates,
            "v_server_fresh",
            "raw_server_fresh",
            server_raw,
        ),
    ]
    decode_us = {
        "device": 1e6 / statistics.median(rates["fields_device"]),
        "server": 1e6 / statistics.median(rates["fields_server"]),
        "device_objects": 1e6 / statistics.median(rates["decode_device"]),
        "server_objects": 1e6 / statistics.median(rates["decode_server"]),
    }
    return cases, decode_us
