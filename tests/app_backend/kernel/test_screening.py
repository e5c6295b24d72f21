"""No input reaches a 500: text with control characters, deep JSON and integers beyond 64 bits are refused with a
400 naming the field, before any handler, transaction or signature check (app_backend/kernel/screening.py)."""

from __future__ import annotations

import uuid
from typing import Any

import msgspec
import pytest

from app_backend.kernel.screening import MAX_JSON_DEPTH, body_faults, json_too_deep
from app_backend.organisations.signing import sign_request
from tests.helpers import bearer, login, machine_credential, random_uscc, signed, staff


def _deep(levels: int) -> bytes:
    return b'{"taps":' + b"[" * levels + b"]" * levels + b"}"


def test_depth_is_counted_on_the_raw_bytes_with_brackets_inside_strings_not_counted():
    assert not json_too_deep(b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH)
    assert json_too_deep(b"[" * (MAX_JSON_DEPTH + 1) + b"]" * (MAX_JSON_DEPTH + 1))
    assert json_too_deep(b'{"a":' * 1000)  # truncated on purpose: refused before any decoder sees it
    text = b'"' + b"[{" * 500 + b'\\"[[[" '
    assert not json_too_deep(b'{"note": ' + text + b'"}')
    wide = b"[" + b",".join([b'{"a": [1, {"b": "[["}]}'] * 5000) + b"]"
    assert not json_too_deep(wide)


def test_body_faults_name_each_field_by_its_path():
    faults = body_faults(
        b'{"taps": [{"line": "1"}, {"line": "2"}, {"line": "3"}, {"line": "\\u0000"}],'
        b' "n": {"m": 18446744073709551616}, "ok": "\\t\\n\\r\xe6\xb3\xb0\xe5\xb7\x9e \\ud83d\\ude00"}'
    )
    assert [(fault.field, fault.source) for fault in faults] == [("taps[3].line", "body"), ("n.m", "body")]
    assert "U+0000" in faults[0].message
    assert [fault.field for fault in body_faults(b'["a", "b\x7f"]')] == ["[1]"]
    assert [fault.field for fault in body_faults(b'"\\u001b[31m"')] == ["body"]
    assert [fault.field for fault in body_faults(b'{"x": "\xc2\x85"}')] == ["x"]  # C1 control: NEL
    assert body_faults(b'{"quoted": "\\\\u0000 is how JSON writes NUL", "id": "12345678901234567890"}') == []
    assert body_faults(b'{"max": 9223372036854775807, "min": -9223372036854775808}') == []
    assert body_faults(b'{"broken": "\\u0000') == []  # malformed: the handler's decoding answers it


async def _callers(client: Any, services: Any) -> dict[str, Any]:
    machine = await machine_credential(
        client, services, ["feeds:insurance", "payments:refund", "settlements:read"], kind="department"
    )
    return {"resident": await login(client), "admin": await staff(client, services), "machine": machine}


NUL_PLACES = [
    # (who, method, path, body, field): the nine places a NUL reached PostgreSQL.
    (
        "resident",
        "POST",
        "/api/v1/payments/orders",
        {
            "purpose": "bill",
            "amount_fen": 100,
            "subject": "水费\x00",
            "payee_id": str(uuid.uuid4()),
            "channel": "wechat",
            "method": "app",
        },
        "subject",
    ),
    (
        "machine",
        "POST",
        "/api/v1/payments/orders/{id}/refunds",
        {"amount_fen": 1, "reason": "重\x00复"},
        "reason",
    ),
    (
        "resident",
        "POST",
        "/api/v1/payments/transit/agreements",
        {"channel": "alipay", "payer_channel_id": "2088\x00"},
        "payer_channel_id",
    ),
    ("admin", "POST", "/api/v1/admin/organisations", {"name": "泰州\x00公交", "kind": "merchant"}, "name"),
    (
        "admin",
        "POST",
        "/api/v1/admin/organisations/{id}/credentials",
        {"scopes": ["verify:health"], "label": "闸机\x00"},
        "label",
    ),
    ("admin", "POST", "/api/v1/admin/uscc-overrides", {"uscc": random_uscc(), "reason": "\x00"}, "reason"),
    (
        "machine",
        "PUT",
        "/api/v1/feeds/insurance",
        {"id_number": "321202199001011234", "insured": True, "scheme": "城\x00镇职工"},
        "scheme",
    ),
    ("machine", "PUT", "/api/v1/payments/webhook", {"url": "https://example.com/\x00hook"}, "url"),
]


async def _send(client: Any, caller: Any, who: str, method: str, path: str, body: Any) -> Any:
    if who == "machine":
        return await signed(client, caller, method, path, body)
    return await client.request(method, path, json=body, headers=bearer(caller))


def _named(response: Any, field: str, source: str = "body") -> None:
    assert response.status_code == 400, response.text
    problem = response.json()
    assert response.headers["content-type"].startswith("application/problem+json")
    assert problem["type"].endswith("/validation")
    assert {"field": field, "message": problem["errors"][0]["message"], "source": source} in problem["errors"]
    assert problem["detail"].startswith(f"{field}: ")


@pytest.mark.parametrize(
    ("who", "method", "path", "body", "field"), NUL_PLACES, ids=[p[-1] for p in NUL_PLACES]
)
async def test_a_nul_in_a_stored_string_is_refused_naming_the_field(
    client, services, who, method, path, body, field
):
    callers = await _callers(client, services)
    response = await _send(client, callers[who], who, method, path.replace("{id}", str(uuid.uuid4())), body)
    _named(response, field)
    assert "U+0000" in response.json()["errors"][0]["message"]


@pytest.mark.parametrize("field", ["actor_id", "target_id", "action"])
async def test_a_nul_in_an_audit_filter_is_refused_naming_the_query_parameter(client, services, field):
    admin = await staff(client, services, "auditor")
    response = await client.get("/api/v1/admin/audit", params={field: "x\x00y"}, headers=bearer(admin))
    _named(response, field, "query")


async def test_control_characters_are_refused_in_path_parameters_and_headers(client, services):
    admin = await staff(client, services)
    path = f"/api/v1/admin/organisations/{uuid.uuid4()}/credentials/tzk_%01x"
    _named(await client.delete(path, headers=bearer(admin)), "key_id", "path")
    _named(await client.post("/api/v1/payments/notify/we%00chat", content=b"<xml/>"), "channel_name", "path")
    resident = await login(client)
    response = await client.post(
        "/api/v1/payments/transit/debts/repay",
        json={"channel": "alipay", "method": "app"},
        headers={**bearer(resident), "Idempotency-Key": "key\x7f1"},
    )
    _named(response, "idempotency-key", "header")


def test_invisible_characters_that_make_text_read_otherwise_are_refused():
    """Issue 13 probe: a right-to-left override, a zero-width space, a line separator or a BOM in an order subject
    would reach a payee's statement and read other than it is."""
    for sneaky in ("\u202e", "\u2066", "\u200b", "\u2028", "\ufeff"):
        raw = msgspec.json.encode({"subject": f"夜游{sneaky}船票"})
        assert [(f.field, f.source) for f in body_faults(raw)] == [("subject", "body")], sneaky
        escaped = b'{"subject": "a\\u' + f"{ord(sneaky):04X}".encode() + b'b"}'
        assert [f.field for f in body_faults(escaped)] == ["subject"], escaped
    # Chinese punctuation shares the first UTF-8 bytes and passes: “” — … 、, and joiners.
    assert body_faults(msgspec.json.encode({"subject": "\u201c夜游\u201d\u2014船票\u2026、👨\u200d👩"})) == []


async def test_text_with_tabs_newlines_and_any_script_is_accepted(client, services):
    admin = await staff(client, services)
    valid = random_uscc()
    failing_checksum = valid[:-1] + ("0" if valid[-1] != "0" else "1")
    response = await client.post(
        "/api/v1/admin/uscc-overrides",
        json={"uscc": failing_checksum, "reason": "登记机关已确认\n第二行\t附注 ✓ 😀"},
        headers=bearer(admin),
    )
    assert response.status_code == 201, response.text


async def test_an_integer_beyond_64_bits_is_refused_naming_the_field(client, services):
    resident = await login(client)
    response = await client.post(
        "/api/v1/payments/orders",
        content=(
            b'{"purpose": "bill", "amount_fen": 18446744073709551616, "subject": "x", "payee_id": "'
            + str(uuid.uuid4()).encode()
            + b'", "channel": "wechat", "method": "app"}'
        ),
        headers={**bearer(resident), "Content-Type": "application/json"},
    )
    _named(response, "amount_fen")


async def test_deep_json_is_refused_before_the_signature_is_checked(client, services):
    gate = await machine_credential(client, services, ["gates:taps"], kind="verifier_operator")
    deep = _deep(1000)
    assert len(deep) < 2100
    unsigned = await client.post(
        "/api/v1/gates/taps", content=deep, headers={"Content-Type": "application/json"}
    )
    _named(unsigned, "body")
    assert f"deeper than {MAX_JSON_DEPTH}" in unsigned.json()["detail"]
    headers = sign_request(gate["key_id"], gate["secret"], "POST", "/api/v1/gates/taps", deep)
    properly_signed = await client.post(
        "/api/v1/gates/taps", content=deep, headers={**headers, "Content-Type": "application/json"}
    )
    _named(properly_signed, "body")
    # A body within the limit still reaches the signature check and the handler.
    shallow = await signed(client, gate, "POST", "/api/v1/gates/taps", {"taps": []})
    assert shallow.status_code < 500 and "deeper" not in shallow.text


async def test_deep_json_on_a_public_endpoint_is_a_400_not_a_recursion_error(client):
    response = await client.post(
        "/api/v1/auth/otp",
        content=b'{"phone": ' + b"[" * 950 + b"]" * 950 + b"}",
        headers={"Content-Type": "application/json"},
    )
    _named(response, "body")
