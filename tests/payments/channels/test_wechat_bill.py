"""WeChat Pay trade bills (backtick CSV, yuan) read into exact fen, without a server."""

from __future__ import annotations

import datetime as dt

import pytest

from payments.channels.wechat.bill import ALL_COLUMNS, SUMMARY_COLUMNS, parse_bill
from payments.channels.wechat.errors import BillError

DAY = dt.date(2024, 5, 1)
HEADER = ",".join(ALL_COLUMNS)
SUMMARY = ",".join(SUMMARY_COLUMNS)


def _row(**values: str) -> str:
    base = dict.fromkeys(ALL_COLUMNS, "")
    base.update(
        {
            "交易时间": "2024-05-01 10:00:00",
            "公众账号ID": "wx2421b1c4370ec43b",
            "商户号": "10000100",
            "特约商户号": "0",
            "交易类型": "JSAPI",
            "交易状态": "SUCCESS",
            "付款银行": "OTHERS",
            "货币种类": "CNY",
            "代金券金额": "0.00",
            "微信退款单号": "0",
            "商户退款单号": "0",
            "退款金额": "0.00",
            "充值券退款金额": "0.00",
            "费率": "0.60%",
            "申请退款金额": "0.00",
        }
    )
    base.update(values)
    return ",".join("`" + base[column] for column in ALL_COLUMNS)


PAYMENT = _row(
    微信订单号="4200000001", 商户订单号="A1", 应结订单金额="1299.01", 订单金额="1299.01", 手续费="7.79000"
)
REFUND = _row(
    交易时间="2024-05-01 23:59:59",
    微信订单号="4200000002",
    商户订单号="B1",
    交易状态="REFUND",
    应结订单金额="0.00",
    订单金额="0.00",
    微信退款单号="50000001",
    商户退款单号="B1R1",
    退款金额="0.10",
    申请退款金额="0.10",
    退款类型="ORIGINAL",
    退款状态="SUCCESS",
    手续费="-0.01000",
)


def test_lines_in_exact_fen_with_crlf_and_bom():
    text = "\ufeff" + "\r\n".join(
        [HEADER, PAYMENT, REFUND, SUMMARY, "`2,`1299.01,`0.10,`0.00,`7.78000,`1299.01,`0.10", ""]
    )
    payment, refund = parse_bill(text, DAY)
    assert (payment.kind, payment.out_trade_no, payment.channel_trade_no) == ("payment", "A1", "4200000001")
    assert (payment.amount_fen, payment.fee_fen, payment.status, payment.out_refund_no) == (
        129901,
        779,
        "paid",
        None,
    )
    assert payment.at == dt.datetime(2024, 5, 1, 10, 0, tzinfo=dt.timezone(dt.timedelta(hours=8)))
    assert (refund.kind, refund.out_trade_no, refund.out_refund_no) == ("refund", "B1", "B1R1")
    assert (refund.amount_fen, refund.fee_fen, refund.status) == (10, -1, "succeeded")
    assert payment.day == refund.day == DAY


def test_the_older_layout_without_order_amount_columns():
    columns = [c for c in ALL_COLUMNS if c not in ("订单金额", "申请退款金额", "费率备注")]
    row = dict(zip(ALL_COLUMNS, PAYMENT.split(","), strict=True))
    text = "\n".join(
        [
            ",".join(columns),
            ",".join(row[c] for c in columns),
            "总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额",
            "`1,`1299.01,`0.00,`0.00,`7.79000",
        ]
    )
    [line] = parse_bill(text, DAY)
    assert (line.amount_fen, line.fee_fen) == (129901, 779)


def test_sub_fen_fees_round_half_up_and_unknown_statuses_pass_through():
    revoked = _row(
        商户订单号="C1", 交易状态="REVOKED", 应结订单金额="1.00", 订单金额="1.00", 手续费="0.00500"
    )
    odd = _row(商户订单号="C2", 交易状态="NEWSTATE", 应结订单金额="2.00", 订单金额="2.00", 手续费="0.00400")
    text = "\n".join([HEADER, revoked, odd, SUMMARY, "`2,`3.00,`0.00,`0.00,`0.00900,`3.00,`0.00"])
    first, second = parse_bill(text, DAY)
    assert (first.status, first.fee_fen) == ("closed", 1)
    assert (second.status, second.fee_fen) == ("newstate", 0)


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([HEADER, PAYMENT], "no summary"),
        ([HEADER, PAYMENT, SUMMARY, "`2,`1299.01,`0.00,`0.00,`7.79000,`1299.01,`0.00"], "counts 2"),
        ([HEADER, PAYMENT, SUMMARY, "`1,`1299.01,`0.00,`0.00,`7.79000,`1299.00,`0.00"], "订单总金额"),
        ([HEADER, PAYMENT, SUMMARY, "`1,`1299.01,`0.00,`0.00,`7.78000,`1299.01,`0.00"], "手续费总金额"),
        (
            [
                HEADER,
                PAYMENT.replace("`1299.01", "`1299.015"),
                SUMMARY,
                "`1,`1299.015,`0,`0,`7.79,`1299.015,`0",
            ],
            "whole number of fen",
        ),
        (["交易时间,资金流水单号", "`x,`y"], "not a WeChat Pay trade bill"),
        ([], "empty"),
    ],
)
def test_bills_that_cannot_be_read_exactly_are_refused(rows: list[str], message: str):
    with pytest.raises(BillError, match=message):
        parse_bill("\n".join(rows), DAY)
