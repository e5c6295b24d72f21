"""The regions of Taizhou are decided once, in the kernel."""

from __future__ import annotations

from app_backend.kernel.regions import CITY, REGIONS, covers


def test_the_city_covers_every_district() -> None:
    assert all(covers([CITY], region) for region in REGIONS)
    assert covers(["321202"], "321202") and not covers(["321202"], "321203")
    # A district does not cover the city (a resident who chose no district, a city-wide broadcast).
    assert not covers(["321202", "321203"], CITY)
    assert not covers([], "321202")
