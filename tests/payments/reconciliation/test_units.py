"""The matching rules on their own: fees rounded half up, one class per kind of difference, the pool's edges."""

from __future__ import annotations

import datetime as dt

import pytest

from payments.reconciliation.schemas import Item, PoolItem
from payments.reconciliation.service import BUSINESS_TZ, compare, expected_fee, match

DAY = dt.date(2030, 1, 15)
WINDOW = dt.timedelta(minutes=5)
RATE = 6000  # 0.6%


def _at(hms: str, day: dt.date = DAY) -> dt.datetime:
    return dt.datetime.combine(day, dt.time.fromisoformat(hms), BUSINESS_TZ)


def _ours(no: str, amount: int = 1000, at: str = "12:00:00", refund: str | None = None) -> Item:
    kind, status = ("refund", "succeeded") if refund else ("payment", "paid")
    return Item(kind, no, refund, amount, status, _at(at))


def _theirs(
    no: str,
    amount: int = 1000,
    at: str = "12:00:00",
    refund: str | None = None,
    status: str | None = None,
    fee_fen: int | None = None,
) -> Item:
    kind, usual = ("refund", "succeeded") if refund else ("payment", "paid")
    fee = expected_fee(-amount if refund else amount, RATE) if fee_fen is None else fee_fen
    return Item(kind, no, refund, amount, status or usual, _at(at), fee)


@pytest.mark.parametrize(
    ("amount", "fee"),
    [(0, 0), (1, 0), (83, 0), (84, 1), (750, 5), (749, 4), (1250, 8), (1400, 8), (-750, -5), (-500, -3)],
)
def test_expected_fee_is_the_rate_rounded_half_up(amount, fee):
    assert expected_fee(amount, RATE) == fee


def test_each_kind_of_difference_has_its_class():
    ours = _ours("A")
    assert compare(ours, _theirs("A"), RATE) == []
    assert [d.klass for d in compare(ours, _theirs("A", 1001), RATE)] == ["amount_over"]
    assert [d.klass for d in compare(ours, _theirs("A", 999), RATE)] == ["amount_short"]
    assert [d.klass for d in compare(ours, _theirs("A", fee_fen=7), RATE)] == ["fee_mismatch"]
    assert [d.klass for d in compare(ours, _theirs("A", status="closed"), RATE)] == ["status_mismatch"]
    assert compare(ours, _theirs("A", fee_fen=99), None) == [], "no configured rate: fees unchecked"
    refund = _ours("A", 500, refund="R1")
    assert compare(refund, _theirs("A", 500, refund="R1"), RATE) == []
    (fee,) = compare(refund, _theirs("A", 500, refund="R1", fee_fen=-4), RATE)
    assert (fee.klass, fee.expected_fee_fen, fee.theirs_fee_fen) == ("fee_mismatch", -3, -4)


def test_payments_match_by_trade_number_and_refunds_by_refund_number():
    ours = [_ours("A"), _ours("A", 100, refund="R1"), _ours("A", 200, refund="R2")]
    theirs = [_theirs("A", 200, refund="R2"), _theirs("A"), _theirs("A", 100, refund="R1")]
    result = match(DAY, ours, theirs, [], RATE, WINDOW)
    assert (result.matched, result.differences, result.pooled, result.unknown) == (3, [], [], [])


def test_one_side_only_items_are_missing_or_pooled_near_midnight():
    result = match(
        DAY,
        [_ours("A", at="23:54:59"), _ours("B", at="23:55:00")],
        [_theirs("C", at="23:54:59"), _theirs("D", at="23:59:59"), _theirs("D", at="10:00:00")],
        [],
        RATE,
        WINDOW,
    )
    assert [(d.klass, d.out_trade_no) for d in result.differences] == [
        ("missing_at_platform", "D"),  # the second line for D
        ("missing_at_channel", "A"),
    ]
    assert [(side, item.out_trade_no) for side, item in result.pooled] == [("ours", "B"), ("theirs", "D")]
    assert [(line.out_trade_no, note) for line, note in result.unknown] == [("C", "")]


def test_the_next_day_resolves_what_it_finds_and_escalates_the_rest():
    before = DAY - dt.timedelta(days=1)

    def pooled(side: str, no: str, amount: int = 1000) -> PoolItem:
        fee = expected_fee(amount, RATE) if side == "theirs" else None
        return PoolItem(
            side, "payment", no, None, amount, "paid", _at("23:59:58", before), fee, before, "pending"
        )

    carried = [pooled("ours", "A"), pooled("ours", "B"), pooled("theirs", "C"), pooled("theirs", "D", 990)]
    result = match(
        DAY,
        [_ours("D", at="00:00:01")],
        [_theirs("A", at="00:00:02")],
        carried,
        RATE,
        WINDOW,
    )
    assert result.matched == 1
    assert [p.out_trade_no for p in result.resolved] == ["A", "D"]
    assert [p.out_trade_no for p in result.escalated] == ["B", "C"]
    assert [(d.klass, d.out_trade_no) for d in result.differences] == [
        ("missing_at_channel", "B"),
        ("amount_short", "D"),
    ]
    assert "crossed midnight" in result.differences[1].note
    assert [line.out_trade_no for line, _ in result.unknown] == ["C"]
