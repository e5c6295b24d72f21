"""What payments answers is in /schema/openapi.json: every operation declares the body of its success (a 204
has none), and the notification endpoint its real answers rather than a JSON string."""

from __future__ import annotations

from typing import Any

_PAYMENTS = ("/api/v1/payments/", "/api/v1/admin/settlements", "/api/v1/admin/reconciliation")


async def _spec(client: Any) -> dict[str, Any]:
    answer = await client.get("/schema/openapi.json")
    assert answer.status_code == 200
    spec: dict[str, Any] = answer.json()
    return spec


def _operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, operation)
        for path, operations in spec["paths"].items()
        if path.startswith(_PAYMENTS)
        for method, operation in operations.items()
        if isinstance(operation, dict) and "responses" in operation
    ]


async def test_every_payments_operation_declares_its_response_body(client):
    operations = _operations(await _spec(client))
    assert len(operations) >= 15
    undeclared = [
        f"{method.upper()} {path} {code}"
        for path, method, operation in operations
        for code, response in operation["responses"].items()
        if code.startswith("2") and code != "204"
        if not (content := response.get("content"))
        or not all(media.get("schema") for media in content.values())
    ]
    assert undeclared == []


async def test_idempotent_creations_declare_their_views(client):
    paths = (await _spec(client))["paths"]

    def created(path: str) -> object:
        return paths[path]["post"]["responses"]["201"]["content"]["application/json"]["schema"]

    assert created("/api/v1/payments/orders") == {"$ref": "#/components/schemas/OrderView"}
    assert created("/api/v1/payments/orders/{order_id}/refunds") == {
        "$ref": "#/components/schemas/RefundView"
    }
    assert created("/api/v1/payments/transit/debts/repay") == {"$ref": "#/components/schemas/Repayment"}


async def test_the_notification_endpoint_declares_acknowledgement_and_refusal(client):
    responses = (await _spec(client))["paths"]["/api/v1/payments/notify/{channel_name}"]["post"]["responses"]
    assert "201" not in responses
    assert responses["200"]["content"] == {"text/plain": {"schema": {"type": "string"}}}
    assert responses["400"]["content"] == {"text/plain": {"schema": {"type": "string"}}}
