"""Part `taps`: a gate's upload of taps, each proven by the real code it scanned (POST /api/v1/gates/taps), against
the raw signature checks of the same codes with `cryptography`.

A tap is a proof (issue 13): the platform verifies every uploaded code at its tap's time (signatures, window, the
transit entitlement it carried) and reads the riders of a batch in one statement before it stores the taps. Each
round uploads one batch of `--tap-batch` taps of fresh codes (half server codes shown by real-named residents with
agreements, half device codes of their phones), each tapped when it was shown, one request at a time, to the same
one-worker server the HTTP part uses; then it checks the same codes the cheapest way a verifier could (server code:
1 ECDSA verify; device code: load the device point + 2 verifies; platform key loaded, signatures in DER), in this
process, by the thread's CPU time. The ratio is raw's time per tap over the Granian worker's CPU time per tap
during the upload (both CPU time: the rest of the machine does not count against either); the upload's wall time
and PostgreSQL's CPU are shown beside it. Medians over the rounds. No goal: a row to watch, as every hot path has."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import statistics
import time
from dataclasses import dataclass
from typing import Any

from loadtests.bench.endpoints import METRO
from loadtests.bench.load import wait_for_quiet
from loadtests.bench.residents import (
    create_residents,
    device_wallets,
    give_agreements,
    issue_codes,
    real_name,
)
from loadtests.bench.server import running_server
from loadtests.processes import cpu_seconds

TAPS_PATH = "/api/v1/gates/taps"


@dataclass
class TapsResult:
    batch: int
    rounds: int
    taps_per_s: float  # wall, median over the rounds
    worker_us: float  # Granian worker CPU per tap
    postgres_us: float  # PostgreSQL CPU per tap
    raw_us: float  # raw signature checks per tap, this process's thread CPU
    ratio: float  # median over the rounds of raw_us / worker_us
    outcomes: dict[str, int]


def taps_benchmark(args: argparse.Namespace) -> TapsResult:
    from cryptography.hazmat.primitives.serialization import load_der_private_key

    from code_service.holder import DeviceWallet

    with running_server() as server:
        creds = json.loads((server.data_dir / "demo-credentials.json").read_text())
        metro = {k: creds[METRO][k] for k in ("key_id", "secret")}
        residents = asyncio.run(create_residents(server.base, 50))
        asyncio.run(real_name(server.base, residents))
        asyncio.run(give_agreements(server.base, residents))
        wallets = []
        for key_der, credential in asyncio.run(device_wallets(server.base, residents)):
            wallet = DeviceWallet(pending_key=load_der_private_key(key_der, None))  # type: ignore[arg-type]
            wallet.load_credential(credential)
            wallets.append(wallet)
        raw = _RawChecks(_jwks(server.base))
        half = args.tap_batch // 2
        rates, worker, postgres, raws, ratios = [], [], [], [], []
        outcomes: dict[str, int] = {}
        for number in range(-1, args.tap_rounds):  # round -1 warms the server up, uncounted
            shown: list[tuple[str, str]] = []
            while len(shown) < half:
                at = dt.datetime.now(dt.UTC).isoformat()
                shown += [(code, at) for code in asyncio.run(issue_codes(server.base, residents))]
            shown = shown[:half]
            at = dt.datetime.now(dt.UTC).isoformat()
            shown += [(wallets[i % len(wallets)].code(), at) for i in range(args.tap_batch - half)]
            body = json.dumps(
                {"taps": [_tap(f"bench-{number}-{i}", code, at) for i, (code, at) in enumerate(shown)]}
            ).encode()
            codes = [code for code, _ in shown]
            wait_for_quiet([server.worker], f"taps round {number + 1}")
            raw_us = raw.us_per_code(codes)
            p0 = server.cpu().get("postgres", 0.0)
            w0, t0 = cpu_seconds([server.worker]), time.perf_counter()
            answer = _upload(server.base, metro, body)
            wall = time.perf_counter() - t0
            w_us = 1e6 * (cpu_seconds([server.worker]) - w0) / len(codes)
            p_us = 1e6 * (server.cpu().get("postgres", 0.0) - p0) / len(codes)
            if number < 0:
                continue
            for tap in answer["taps"]:
                said = tap["status"] + (f" {tap['reason']}" if "reason" in tap else "")
                outcomes[said] = outcomes.get(said, 0) + 1
            rates.append(len(codes) / wall)
            worker.append(w_us)
            postgres.append(p_us)
            raws.append(raw_us)
            ratios.append(raw_us / w_us if w_us else 0.0)
            print(
                f"  taps round {number + 1}/{args.tap_rounds}: {len(codes) / wall:,.0f} taps/s,"
                f" worker {w_us:.0f} us/tap, PostgreSQL {p_us:.0f} us/tap, raw {raw_us:.0f} us/tap",
                flush=True,
            )
    return TapsResult(
        args.tap_batch,
        args.tap_rounds,
        statistics.median(rates),
        statistics.median(worker),
        statistics.median(postgres),
        statistics.median(raws),
        statistics.median(ratios),
        outcomes,
    )


def _tap(tap_id: str, code: str, at: str) -> dict[str, str]:
    return {
        "tap_id": tap_id,
        "gate_id": "bench-gate",
        "line": "1",
        "station": "泰州站",
        "direction": "in",
        "tapped_at": at,
        "code": code,
    }


def _jwks(base: str) -> dict[str, Any]:
    import httpx

    answer: dict[str, Any] = httpx.get(base + "/.well-known/jwks.json", timeout=10).json()
    return answer


def _upload(base: str, creds: dict[str, str], body: bytes) -> dict[str, Any]:
    import httpx

    from app_backend.organisations.signing import sign_request

    headers = sign_request(creds["key_id"], creds["secret"], "POST", TAPS_PATH, body)
    answer = httpx.post(
        base + TAPS_PATH, content=body, headers={**headers, "Content-Type": "application/json"}, timeout=120
    )
    if answer.status_code != 200:
        raise RuntimeError(f"tap upload: {answer.status_code} {answer.text[:300]}")
    result: dict[str, Any] = answer.json()
    return result


class _RawChecks:
    """The cheapest signature checks of a batch's codes, as any verifier of this format must make them."""

    def __init__(self, jwks: dict[str, Any]) -> None:
        from code_service.verifier import OfflineVerifier

        self._keys = OfflineVerifier(jwks).keys

    def us_per_code(self, codes: list[str]) -> float:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

        from code_service.verifier.format import DeviceCode, decode

        def der(raw: bytes) -> bytes:
            return encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))

        ecdsa, curve = ec.ECDSA(hashes.SHA256()), ec.SECP256R1()
        server: list[tuple[Any, bytes, bytes]] = []
        device: list[tuple[Any, bytes, bytes, bytes, bytes, bytes]] = []
        for text in codes:
            code = decode(text)
            key = self._keys[code.kid]
            if isinstance(code, DeviceCode):
                device.append(
                    (
                        key,
                        der(code.credential_signature),
                        code.credential,
                        code.device_key,
                        der(code.device_signature),
                        code.signed,
                    )
                )
            else:
                server.append((key, der(code.signature), code.signed))
        load = ec.EllipticCurvePublicKey.from_encoded_point
        started = time.thread_time()
        for key, signature, signed in server:
            key.verify(signature, signed, ecdsa)
        for key, credential_sig, credential, point, device_sig, signed in device:
            key.verify(credential_sig, credential, ecdsa)
            load(curve, point).verify(device_sig, signed, ecdsa)
        return 1e6 * (time.thread_time() - started) / len(codes)
