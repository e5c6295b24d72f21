"""The regions of Taizhou (GB/T 2260 codes): the city and the districts and county-level cities residents live in.
More than one domain needs them (identity keeps the region a resident chose, notifications addresses and
broadcasts by region, tiles serve regions), so they are decided here, once; a domain never imports another's
list (tests/app_backend/kernel/test_regions.py holds tiles' copy to this one until tiles imports it).

The city's code covers every district: a resident who chose no district lives in the city, a city-wide tile is
seen in every district, an organisation allowed to address the city may address every resident."""

from __future__ import annotations

from collections.abc import Collection

CITY = "321200"
REGIONS: dict[str, str] = {
    CITY: "泰州市（全市）",
    "321202": "海陵区",
    "321203": "高港区",
    "321204": "姜堰区",
    "321281": "兴化市",
    "321282": "靖江市",
    "321283": "泰兴市",
}
UNKNOWN_REGION = f"not a region of Taizhou (known: {', '.join(REGIONS)})"


def covers(allowed: Collection[str], region: str) -> bool:
    """Whether regions `allowed` reach `region` (a resident's, or a broadcast's): the city reaches them all."""
    return CITY in allowed or region in allowed
