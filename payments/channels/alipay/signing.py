"""Verifying what comes from Alipay: response signatures over the exact bytes of the `<method>_response` object,
and notification signatures over the sorted `k=v` string.

This is alipay-sdk-python's own check (`SignatureUtils.verify_with_rsa`, i.e. `rsa.verify` with Alipay's public key)
with two differences: the key is parsed once, and the hash the signature was made with must be SHA-256. The SDK's
function detects the hash from the signature and accepts RSA-SHA1 as well, so a notification claiming
sign_type=RSA2 but carrying an RSA (SHA-1) signature would pass it."""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any

import rsa
from alipay.aop.api.util.SignatureUtils import get_sign_content

from payments.channels.alipay.errors import AlipayInvalidResponse


class SignatureError(Exception):
    """The signature does not verify, or was not made with SHA256withRSA."""


def load_public_key(pem: str) -> rsa.PublicKey:
    return rsa.PublicKey.load_pkcs1_openssl_pem(pem.encode("ascii"))


def verify_rsa2(public_key: rsa.PublicKey, message: bytes, signature_b64: str) -> None:
    """Raises SignatureError unless `signature_b64` is a SHA256withRSA signature of `message`."""
    try:
        signature = base64.b64decode(signature_b64.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        raise SignatureError("signature is not base64") from None
    try:
        hash_name = rsa.verify(message, signature, public_key)
    except rsa.VerificationError:
        raise SignatureError("signature does not verify") from None
    if hash_name != "SHA-256":
        raise SignatureError(f"signature made with {hash_name}, not SHA-256 (RSA2)")


def notification_sign_content(params: dict[str, str]) -> str:
    """What Alipay signs in a notification: every parameter but `sign` and `sign_type`, sorted, `k=v` joined by
    `&` (the SDK's get_sign_content, as for requests)."""
    return str(get_sign_content({k: v for k, v in params.items() if k not in ("sign", "sign_type")}))


def response_key(method: str) -> str:
    return method.replace(".", "_") + "_response"


def verified_response(
    raw: bytes, method: str, public_key: rsa.PublicKey, charset: str = "utf-8"
) -> dict[str, Any]:
    """The `<method>_response` object (or `error_response`) of a gateway answer, after checking the signature over
    the exact bytes of that object as sent. What is returned is decoded from the signed bytes themselves, so nothing
    outside the signature (a duplicate key, a second object) can change what the caller acts on."""
    try:
        text = raw.decode(charset)
        document = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise AlipayInvalidResponse(f"{method}: the gateway's answer is not JSON") from None
    if not isinstance(document, dict):
        raise AlipayInvalidResponse(f"{method}: the gateway's answer is not a JSON object")
    key = response_key(method)
    if key not in document:
        key = "error_response"
        if key not in document:
            raise AlipayInvalidResponse(f"{method}: no {response_key(method)} in the gateway's answer")
    sign = document.get("sign")
    if not isinstance(sign, str) or not sign:
        body = document.get(key)
        detail = ""
        if isinstance(body, dict):  # untrusted, shown only to help whoever reads the log
            detail = f" (unsigned answer says {body.get('code')} {body.get('sub_code', '')})"
        raise AlipayInvalidResponse(f"{method}: the gateway's answer is not signed{detail}")
    # Locate the object's bytes: the first `"<key>":` followed by a JSON value that equals the parsed member.
    match = re.search(r'"' + re.escape(key) + r'"\s*:\s*', text)
    if match is None:
        raise AlipayInvalidResponse(f"{method}: cannot locate {key}")
    try:
        signed_object, end = json.JSONDecoder().raw_decode(text, match.end())
    except json.JSONDecodeError:
        raise AlipayInvalidResponse(f"{method}: cannot locate {key}") from None
    if not isinstance(signed_object, dict) or signed_object != document[key]:
        raise AlipayInvalidResponse(f"{method}: ambiguous {key} in the gateway's answer")
    content = text[match.end() : end].encode(charset)
    try:
        verify_rsa2(public_key, content, sign)
    except SignatureError as exc:
        raise AlipayInvalidResponse(f"{method}: response signature refused: {exc}") from None
    return signed_object
