"""Operations register departments' apps: only ops_admin, every change audited, the secret shown once and stored
as a keyed hash, and bad registrations refused naming the field."""

from __future__ import annotations

from typing import Any

from tests.app_backend.oidc.department import CLIENTS, department, register, registered
from tests.conftest import ApiClient
from tests.helpers import bearer, login


async def test_registration_is_for_operations_and_audited(client: ApiClient, db: Any) -> None:
    dept = await department(client)
    resident = await login(client)
    refused = await client.post(CLIENTS, json={}, headers=bearer(resident))
    assert refused.status_code == 403
    reg = await registered(client, dept)
    secret = reg["client_secret"]
    assert secret.startswith("tzos_") and reg["client"]["token_endpoint_auth_method"] == "client_secret_basic"
    stored = await db.fetchrow(
        "SELECT secret_hash, sector FROM oidc.clients WHERE client_id = $1", reg["client"]["client_id"]
    )
    assert secret.encode() not in bytes(stored["secret_hash"]) and len(stored["secret_hash"]) == 32
    assert stored["sector"] == f"organisation:{dept['id']}"
    audited = await db.fetchval(
        "SELECT count(*) FROM audit.events WHERE action = 'admin.oidc_client_register' AND target_id = $1",
        reg["client"]["client_id"],
    )
    assert audited == 1
    listed = await client.get(CLIENTS, params={"organisation_id": dept["id"]}, headers=bearer(dept["admin"]))
    assert listed.status_code == 200
    assert [c["client_id"] for c in listed.json()["clients"]] == [reg["client"]["client_id"]]
    assert secret not in listed.text and "secret_hash" not in listed.text

    gone = await client.delete(f"{CLIENTS}/{reg['client']['client_id']}", headers=bearer(dept["admin"]))
    assert gone.status_code == 204
    again = await client.delete(f"{CLIENTS}/{reg['client']['client_id']}", headers=bearer(dept["admin"]))
    assert again.status_code == 404 and again.json()["detail"].startswith("client_id:")


async def _refused(client: ApiClient, dept: dict[str, Any], field: str, **fields: Any) -> None:
    answer = await register(client, dept, **fields)
    assert 400 <= answer.status_code < 500, answer.text
    problem = answer.json()
    named = [e["field"] for e in problem.get("errors", [])]
    assert field in named or problem["detail"].startswith(field), (field, problem)


async def test_bad_registrations_are_refused_naming_the_field(client: ApiClient) -> None:
    dept = await department(client)
    await _refused(client, dept, "redirect_uris[0]", redirect_uris=["ftp://dept.example.cn/cb"])
    await _refused(client, dept, "redirect_uris[0]", redirect_uris=["https://dept.example.cn/cb#frag"])
    await _refused(client, dept, "redirect_uris[0]", redirect_uris=["dept.example.cn/cb"])
    await _refused(client, dept, "redirect_uris", redirect_uris=[])
    await _refused(client, dept, "scopes", scopes=["openid", "email"])
    await _refused(client, dept, "scopes", scopes=["profile"])
    await _refused(client, dept, "token_endpoint_auth_method", token_endpoint_auth_method="none")
    await _refused(client, dept, "token_endpoint_auth_method", token_endpoint_auth_method="client_secret_jwt")
    await _refused(client, dept, "token_endpoint_auth_method", client_type="public")
    await _refused(client, dept, "jwks", token_endpoint_auth_method="private_key_jwt")
    await _refused(
        client,
        dept,
        "jwks.keys[0]",
        token_endpoint_auth_method="private_key_jwt",
        jwks={"keys": [{"kty": "EC"}]},
    )
    await _refused(
        client,
        dept,
        "jwks.keys[0]",
        token_endpoint_auth_method="private_key_jwt",
        jwks={"keys": [{"kty": "oct", "k": "c2VjcmV0"}]},
    )
    await _refused(client, dept, "jwks", jwks={"keys": []})
    await _refused(client, dept, "backchannel_logout_uri", backchannel_logout_uri="javascript:alert(1)")
    await _refused(client, dept, "purpose", purpose="")
    await _refused(client, dept, "organisation_id", organisation_id="00000000-0000-0000-0000-000000000000")
    await _refused(client, dept, "organisation_id", organisation_id="not-a-uuid")
    await _refused(client, dept, "client_type", client_type="private")
    await _refused(client, dept, "colour", colour="red")
    merchant = await client.post(
        "/api/v1/admin/organisations",
        json={"name": f"测试商户-{dept['id'][:8]}", "kind": "merchant"},
        headers=bearer(dept["admin"]),
    )
    await _refused(client, {**dept, "id": merchant.json()["id"]}, "organisation_id")
