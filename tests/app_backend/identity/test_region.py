"""The district a resident lives in: chosen by the resident, the city until they choose, and read by other domains
through identity's directory (the home's tiles, broadcasts to a region)."""

from __future__ import annotations

import uuid
from typing import Any

from app_backend.kernel.clock import now
from app_backend.kernel.regions import CITY
from tests.helpers import bearer, login

REGION = "/api/v1/me/region"


async def region_of(client: Any, resident: dict[str, Any]) -> dict[str, Any]:
    answer = await client.get(REGION, headers=bearer(resident))
    assert answer.status_code == 200, answer.text
    return answer.json()  # type: ignore[no-any-return]


async def test_a_resident_lives_in_the_city_until_choosing_a_district(client: Any, services: Any) -> None:
    resident = await login(client)
    assert await region_of(client, resident) == {"region": CITY, "name": "泰州市（全市）", "chosen": False}

    chosen = await client.put(REGION, headers=bearer(resident), json={"region": "321204"})
    assert chosen.status_code == 200, chosen.text
    assert chosen.json() == {"region": "321204", "name": "姜堰区", "chosen": True}
    assert await region_of(client, resident) == chosen.json()
    directory = services.identity.directory
    async with services.pool.acquire() as conn:
        assert await directory.region_of(conn, uuid.UUID(resident["resident_id"])) == "321204"
        # Nobody (or nothing chosen) is the city.
        assert await directory.region_of(conn, uuid.uuid4()) == CITY

    moved = await client.put(REGION, headers=bearer(resident), json={"region": CITY})
    assert moved.json() == {"region": CITY, "name": "泰州市（全市）", "chosen": True}


async def test_a_region_that_is_not_taizhous_is_refused_naming_the_field(client: Any) -> None:
    resident = await login(client)
    for bad in ("320100", "海陵区", "3212021"):
        refused = await client.put(REGION, headers=bearer(resident), json={"region": bad})
        assert refused.status_code == 400, refused.text
        assert refused.json()["errors"][0]["field"] == "region"
    missing = await client.put(REGION, headers=bearer(resident), json={})
    assert missing.status_code == 400 and missing.json()["errors"][0]["field"] == "region"
    assert (await region_of(client, resident))["chosen"] is False
    assert (await client.get(REGION)).status_code == 401


async def test_the_directory_walks_a_regions_residents_in_pages(client: Any, services: Any) -> None:
    """A district's residents are those who chose it; the city's are every resident, whatever they chose; only
    accounts that existed at `joined_by`, each once across the pages."""
    district = "321283"
    mine = [await login(client) for _ in range(5)]
    for resident in mine:
        answer = await client.put(REGION, headers=bearer(resident), json={"region": district})
        assert answer.status_code == 200
    cut = now()
    later = await login(client)
    await client.put(REGION, headers=bearer(later), json={"region": district})
    directory = services.identity.directory

    async def walk(region: str, size: int) -> list[uuid.UUID]:
        found: list[uuid.UUID] = []
        after = None
        async with services.pool.acquire() as conn:
            while page := await directory.residents_of_region(
                conn, region, joined_by=cut, after=after, limit=size
            ):
                found += page
                after = page[-1]
            assert await directory.count_of_region(conn, region, joined_by=cut) == len(found)
        return found

    in_district = await walk(district, 2)
    assert len(in_district) == len(set(in_district)) and in_district == sorted(in_district)
    ids = {uuid.UUID(r["resident_id"]) for r in mine}
    assert ids <= set(in_district)
    assert uuid.UUID(later["resident_id"]) not in in_district
    everyone = await walk(CITY, 50)
    assert ids <= set(everyone) and set(in_district) <= set(everyone)
    assert len(everyone) == len(set(everyone))
