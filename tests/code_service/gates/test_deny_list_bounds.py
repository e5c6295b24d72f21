"""The deny list's `since` is a 64-bit version: beyond that it is a 400 naming it, not the whole list."""

from __future__ import annotations

from tests.helpers import machine_credential, signed


async def test_since_beyond_64_bits_is_refused_naming_it(client, services):
    gate = await machine_credential(client, services, ["gates:sync"], kind="verifier_operator")
    response = await signed(client, gate, "GET", f"/api/v1/gates/deny-list?since={2**63}")
    assert response.status_code == 400, response.text
    [error] = response.json()["errors"]
    assert (error["field"], error["source"]) == ("since", "query")
    largest = await signed(client, gate, "GET", f"/api/v1/gates/deny-list?since={2**63 - 1}")
    assert largest.status_code == 200, largest.text
