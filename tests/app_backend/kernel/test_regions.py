"""The regions of Taizhou are decided once, in the kernel."""

from __future__ import annotations

from app_backend.kernel.regions import CITY, REGIONS, covers
from app_backend.tiles import schemas as tiles_schemas


def test_tiles_serve_the_kernels_regions() -> None:
    """tiles still keeps a copy (it was being changed by another branch when the kernel took the list over): the
    two must not drift until tiles imports the kernel's."""
    assert (tiles_schemas.CITY, tiles_schemas.REGIONS) == (CITY, REGIONS)


def test_the_city_covers_every_district() -> None:
    assert all(covers([CITY], region) for region in REGIONS)
    assert covers(["321202"], "321202") and not covers(["321202"], "321203")
    # A district does not cover the city (a resident who chose no district, a city-wide broadcast).
    assert not covers(["321202", "321203"], CITY)
    assert not covers([], "321202")
