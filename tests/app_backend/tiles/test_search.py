"""Issue 16: catalogue search in Chinese as residents type it: the name, its pinyin and initials (`gjj` finds
公积金, so does `gongjijin`, and `公积j` while typing), keywords and description, ranked by relevance (exact name,
name prefix, part of the name, pinyin of the name from its start, from a later syllable, keyword, description)
and then by use. The pinyin forms are computed when a version goes live, not per query."""

from __future__ import annotations

import uuid
from typing import Any

from app_backend.tiles.schemas import EntryPoints, TileContent
from app_backend.tiles.search import forms, query_forms
from app_backend.tiles.service import TileService
from tests.app_backend.tiles.helpers import (
    content,
    create,
    department,
    live,
    manage,
    ok,
    review,
    reviewer,
    unique,
)


async def _search(client: Any, q: str, **params: Any) -> list[tuple[str, str]]:
    """(tile id, what matched) for each hit, best first."""
    answer = await client.get("/api/v1/tiles/search", params={"q": q, "limit": 50, **params})
    assert answer.status_code == 200, answer.text
    return [(h["tile"]["id"], h["matched"]) for h in answer.json()["hits"]]


def _mine(hits: list[tuple[str, str]], ids: list[str]) -> list[tuple[str, str]]:
    return [h for h in hits if h[0] in ids]


async def test_gjj_gongjijin_and_gongjijin_in_chinese_find_the_housing_fund(client, services):
    dept, rev = await department(client, services), await reviewer(client, services)
    region = "321282"  # 靖江, with the query, keeps other tests' 公积金 tiles from crowding the 50 hits out
    tid = (await live(client, dept, rev, name="公积金查询", regions=[region]))["id"]
    for typed, matched in (
        ("公积金", "name_prefix"),
        ("公积金查询", "name"),
        ("gjj", "pinyin"),
        ("GJJ", "pinyin"),
        ("ＧＪＪ", "pinyin"),  # full-width, as some keyboards type
        ("gongjijin", "pinyin"),
        ("gong ji jin", "pinyin"),
        ("公积j", "pinyin"),  # part typed in Chinese, the rest still in pinyin
        ("chaxun", "pinyin_part"),
        ("cx", "pinyin_part"),
        ("查询", "name_part"),
    ):
        hits = _mine(await _search(client, typed, region=region), [tid])
        assert hits == [(tid, matched)], typed
    for typed in ("gjjx", "社保", "gongjin"):
        assert _mine(await _search(client, typed, region=region), [tid]) == [], typed


async def test_keywords_and_description_are_found(client, services):
    dept, rev = await department(client, services), await reviewer(client, services)
    marker = unique("印章")
    tid = (
        await live(
            client,
            dept,
            rev,
            name=unique("房屋贷款"),
            keywords=["公积金贷款", marker],
            description="购房贷款申请，可用住房公积金账户余额还款",
        )
    )["id"]
    assert _mine(await _search(client, "公积金贷款"), [tid]) == [(tid, "keyword")]
    assert _mine(await _search(client, marker), [tid]) == [(tid, "keyword")]
    assert _mine(await _search(client, "gjjdk"), [tid]) == [(tid, "keyword")]  # a keyword's initials
    assert _mine(await _search(client, "gongjijindaikuan"), [tid]) == [(tid, "keyword")]
    assert _mine(await _search(client, "账户余额还款"), [tid]) == [(tid, "description")]


async def test_hits_are_ranked_by_relevance_then_use(client, services):
    dept, rev = await department(client, services), await reviewer(client, services)
    region = "321203"  # 高港: this test's tiles, and city-wide ones
    made: dict[str, str] = {}
    for key, fields in (
        (
            "description",
            {"name": unique("购房补贴"), "description": "缴存公积金满一年可申请", "keywords": []},
        ),
        ("keyword", {"name": unique("房贷服务"), "keywords": ["公积金"]}),
        ("part", {"name": "住房公积金提取"}),
        ("prefix", {"name": "公积金查询"}),
        ("exact", {"name": "公积金"}),
    ):
        made[key] = (await live(client, dept, rev, regions=[region], **fields))["id"]
    order = ["exact", "prefix", "part", "keyword", "description"]
    ids = [made[k] for k in order]
    hits = _mine(await _search(client, "公积金", region=region), ids)
    assert hits == [
        (made["exact"], "name"),
        (made["prefix"], "name_prefix"),
        (made["part"], "name_part"),
        (made["keyword"], "keyword"),
        (made["description"], "description"),
    ]
    # In pinyin: the name's initials from the start, then from a later syllable, then a keyword's.
    hits = _mine(await _search(client, "gjj", region=region), ids)
    assert hits == [
        (made["exact"], "pinyin"),
        (made["prefix"], "pinyin"),
        (made["part"], "pinyin_part"),
        (made["keyword"], "keyword"),
    ]

    # Of equal relevance, the more used first (the usage work fills the scores).
    tiles = services.platform.get(TileService)
    async with services.pool.acquire() as conn:
        await tiles.set_usage_scores(conn, {uuid.UUID(made["prefix"]): 100.0, uuid.UUID(made["exact"]): 1.0})
    hits = _mine(await _search(client, "gjj", region=region), ids)
    assert [h[0] for h in hits][:2] == [made["prefix"], made["exact"]]
    hits = _mine(await _search(client, "公积金", region=region), ids)
    assert hits[0] == (made["exact"], "name"), "relevance comes before use"


async def test_search_sees_the_live_version_only(client, services):
    dept, rev = await department(client, services), await reviewer(client, services)
    first, second = unique("不动产登记"), unique("不动产证明")
    tile = await create(client, dept, name=first)
    tid = tile["id"]
    ok(await manage(client, dept, "POST", f"/{tid}/versions/1/submit"))
    assert _mine(await _search(client, first), [tid]) == []  # not live yet
    ok(await review(client, rev, f"/{tid}/versions/1/approve"))
    ok(await manage(client, dept, "POST", f"/{tid}/versions/1/publish"))
    assert _mine(await _search(client, first), [tid]) == [(tid, "name")]

    ok(await manage(client, dept, "POST", f"/{tid}/versions", content(name=second)))
    assert _mine(await _search(client, second), [tid]) == []  # a draft is not searched
    ok(await manage(client, dept, "POST", f"/{tid}/versions/2/submit"))
    ok(await review(client, rev, f"/{tid}/versions/2/approve"))
    ok(await manage(client, dept, "POST", f"/{tid}/versions/2/publish"))
    assert _mine(await _search(client, second), [tid]) == [(tid, "name")]
    assert _mine(await _search(client, first), [tid]) == []

    ok(await manage(client, dept, "POST", f"/{tid}/rollback", {"version": 1, "reason": "回退"}))
    assert _mine(await _search(client, first), [tid]) == [(tid, "name")]
    # Suspended: still found, shown as temporarily unavailable.
    ok(await manage(client, dept, "POST", f"/{tid}/suspend", {"reason": "维护"}))
    answer = await client.get("/api/v1/tiles/search", params={"q": first})
    hit = next(h for h in answer.json()["hits"] if h["tile"]["id"] == tid)
    assert hit["tile"]["status"] == "temporarily_unavailable"
    ok(await manage(client, dept, "POST", f"/{tid}/retire", {"reason": "停办"}))
    assert _mine(await _search(client, first), [tid]) == []


async def test_a_blank_query_finds_nothing_and_bad_filters_are_named(client):
    assert (await client.get("/api/v1/tiles/search", params={"q": "   "})).json()["hits"] == []
    for params, field in (
        ({"q": "gjj", "region": "999999"}, "region"),
        ({"q": "gjj", "category": "nope"}, "category"),
        ({"q": "x" * 33}, "q"),
        ({}, "q"),
    ):
        refused = await client.get("/api/v1/tiles/search", params=params)
        assert refused.status_code == 400 and refused.json()["errors"][0]["field"] == field, refused.text


def test_the_forms_a_name_is_searched_in():
    tile = TileContent(
        name="ETC办理·银行",
        icon="https://x.example.cn/i.png",
        category="transport",
        description="高速 ETC",
        entry=EntryPoints(app_route="/etc"),
        regions=["321200"],
        keywords=["重庆", "ETC"],
    )
    found = forms(tile)
    assert found.name == "etc办理·银行"
    assert found.name_pinyin == ["etcbanliyinhang", "banliyinhang", "liyinhang", "yinhang", "hang"]
    assert found.name_initials == ["etcblyh", "blyh", "lyh", "yh", "h"]  # 银行 is yin hang, not yin xing
    assert found.keywords == ["重庆", "etc"] and found.keywords_pinyin == ["chongqing", "cq", "etc"]
    assert found.description == "高速etc"
    assert query_forms("公积金") == ("公积金", "")
    assert query_forms(" Gong Ji j ") == ("gongjij", "gongjij")
    assert query_forms("公积j") == ("公积j", "gongjij")
