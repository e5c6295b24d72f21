"""Problems name what is at fault: a malformed path id, a missing or invalid query parameter (with its source)."""

from __future__ import annotations

from tests.helpers import bearer, login, staff


async def test_a_path_id_that_is_not_a_uuid_is_a_400_naming_the_parameter(client, services):
    resident = await login(client)
    for path in ("/api/v1/enterprises/not-a-uuid", "/api/v1/enterprises/42/members"):
        response = await client.get(path, headers=bearer(resident))
        assert response.status_code == 400, response.text
        assert response.json()["errors"] == [
            {"field": "enterprise_id", "message": "is not a UUID", "source": "path"}
        ]
        assert response.json()["detail"] == "enterprise_id: is not a UUID"
    admin = await staff(client, services)
    response = await client.delete(
        "/api/v1/admin/organisations/zzz/credentials/tzk_abc", headers=bearer(admin)
    )
    assert response.status_code == 400, response.text
    assert response.json()["errors"][0]["field"] == "organisation_id"


async def test_a_path_that_matches_no_route_is_still_a_404(client):
    response = await client.get("/api/v1/no-such-thing/123")
    assert response.status_code == 404
    assert response.json()["type"].endswith("/not-found")


async def test_a_missing_query_parameter_is_named_with_its_source(client, services):
    admin = await staff(client, services)
    response = await client.get("/api/v1/payments/settlements", headers=bearer(admin))
    assert response.status_code == 400, response.text
    assert response.json()["errors"] == [
        {"field": "date", "message": "the query parameter is required", "source": "query"}
    ]


async def test_an_invalid_query_parameter_is_named_with_its_source(client):
    resident = await login(client)
    response = await client.get("/api/v1/payments/transit/trips?limit=abc", headers=bearer(resident))
    assert response.status_code == 400, response.text
    [error] = response.json()["errors"]
    assert (error["field"], error["source"]) == ("limit", "query")
