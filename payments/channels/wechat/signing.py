"""WeChat Pay v2 signatures and XML, written out here rather than taken from wechatpy, whose notification
check (`parse_payment_result`) knows MD5 only and whose responses are never checked at all.

The string to sign is `k1=v1&k2=v2...&key=API_KEY` over every non-empty parameter but `sign`, keys in ASCII
order; MD5 or HMAC-SHA256 (keyed with the API key) of it, upper-case hex."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Any
from xml.parsers.expat import ExpatError

import xmltodict


class XmlError(ValueError):
    """The body is not a flat WeChat Pay XML document."""


def string_to_sign(params: Mapping[str, Any], api_key: str) -> bytes:
    parts = [f"{k}={params[k]}" for k in sorted(params) if k != "sign" and params[k] not in (None, "")]
    parts.append(f"key={api_key}")
    return "&".join(parts).encode("utf-8")


def sign(params: Mapping[str, Any], api_key: str, sign_type: str) -> str:
    message = string_to_sign(params, api_key)
    if sign_type == "HMAC-SHA256":
        return hmac.new(api_key.encode("utf-8"), message, hashlib.sha256).hexdigest().upper()
    if sign_type == "MD5":
        return hashlib.md5(message).hexdigest().upper()  # noqa: S324 - the protocol's own MD5 signature
    raise ValueError(f"unknown sign type {sign_type!r}")


def verify(params: Mapping[str, Any], api_key: str, sign_type: str) -> bool:
    given = params.get("sign")
    if not isinstance(given, str) or not given:
        return False
    return hmac.compare_digest(given.encode("utf-8"), sign(params, api_key, sign_type).encode("utf-8"))


def parse_xml(body: bytes | str, root: str = "xml") -> dict[str, str]:
    """A flat `<xml>` document as a dict of strings (empty elements become ""). Nested elements are refused."""
    try:
        doc = xmltodict.parse(body, disable_entities=True)
    except (ExpatError, ValueError, TypeError) as exc:
        raise XmlError(f"not XML: {exc}") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get(root), dict):
        raise XmlError(f"no <{root}> document")
    out: dict[str, str] = {}
    for key, value in doc[root].items():
        if value is None:
            out[key] = ""
        elif isinstance(value, str):
            out[key] = value
        else:
            raise XmlError(f"element <{key}> is not a plain value")
    return out


def to_xml(params: Mapping[str, Any]) -> bytes:
    """A flat `<xml>` document, every value in CDATA."""
    parts = ["<xml>"]
    for key in sorted(params):
        value = "" if params[key] is None else str(params[key])
        if "]]>" in value or not key.isidentifier():
            raise ValueError(f"cannot put {key!r} into WeChat Pay XML")
        parts.append(f"<{key}><![CDATA[{value}]]></{key}>")
    parts.append("</xml>")
    return "".join(parts).encode("utf-8")
