"""WeChat Pay v2 trade bills (downloadbill, bill_type ALL) to BillLines in exact fen.

The bill is CSV text: a header row, one row per payment or refund with every field prefixed by a backtick
(so spreadsheets keep long numbers as text), then a summary header (总交易单数,...) and one summary row.
Amounts are yuan with two decimals; fees have five decimals but are whole fen. Columns are read by header
name: their order differs between bill types and older merchants' layouts."""

from __future__ import annotations

import csv
import datetime as dt
import io
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

from app_backend.kernel.clock import BUSINESS_TZ
from payments.channels.base import BillLine, RefundStatus, TradeStatus
from payments.channels.wechat.errors import BillError

SUMMARY_FIRST = "总交易单数"

# The ALL layout as downloaded today; `older` merchants lack 订单金额/申请退款金额 (use 应结订单金额/退款金额),
# the oldest call 应结订单金额 总金额.
ALL_COLUMNS = (
    "交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,"
    "货币种类,应结订单金额,代金券金额,微信退款单号,商户退款单号,退款金额,充值券退款金额,退款类型,退款状态,商品名称,"
    "商户数据包,手续费,费率,订单金额,申请退款金额,费率备注"
).split(",")
SUMMARY_COLUMNS = (
    "总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额".split(",")
)

_TRADE_STATUS = {"SUCCESS": TradeStatus.PAID.value, "REVOKED": TradeStatus.CLOSED.value}
_REFUND_STATUS = {
    "SUCCESS": RefundStatus.SUCCEEDED.value,
    "PROCESSING": RefundStatus.PENDING.value,
    "FAIL": RefundStatus.FAILED.value,
    "CHANGE": RefundStatus.FAILED.value,
}
_FEN = Decimal(100)


def _yuan(text: str, *, what: str) -> Decimal:
    text = text.strip() or "0"
    try:
        value = Decimal(text)
    except InvalidOperation as exc:
        raise BillError(f"{what}: {text!r} is not an amount") from exc
    if not value.is_finite():
        raise BillError(f"{what}: {text!r} is not an amount")
    return value


def yuan_to_fen(text: str, *, what: str, exact: bool = True) -> int:
    """'12.34' -> 1234. Amounts must be whole fen; fees (exact=False) are rounded half up to the fen."""
    fen = _yuan(text, what=what) * _FEN
    whole = fen.to_integral_value(rounding=ROUND_HALF_UP)
    if exact and whole != fen:
        raise BillError(f"{what}: {text!r} is not a whole number of fen")
    return int(whole)


def _cells(row: list[str]) -> list[str]:
    return [cell[1:] if cell.startswith("`") else cell for cell in (c.strip() for c in row)]


def _pick(record: dict[str, str], *names: str) -> str | None:
    for name in names:
        if name in record:
            return record[name]
    return None


def parse_bill(text: str, day: dt.date) -> list[BillLine]:
    """Every payment and refund line of the day's bill.

    Payment lines: amount_fen is 订单金额 (what the payer was charged; 应结订单金额 on older layouts),
    fee_fen the fee charged, status `paid` (SUCCESS) or `closed` (REVOKED).
    Refund lines: amount_fen is 申请退款金额 (what we asked to refund; 退款金额 on older layouts), positive;
    fee_fen the fee given back, as the bill shows it (negative); status succeeded / pending / failed.
    Unknown statuses are passed through lower-cased. The summary row must agree with the lines."""
    text = text.lstrip("\ufeff")
    rows = [row for row in csv.reader(io.StringIO(text)) if any(cell.strip() for cell in row)]
    if not rows:
        raise BillError("empty bill")
    header = _cells(rows[0])
    if "商户订单号" not in header or "交易状态" not in header:
        raise BillError(f"not a WeChat Pay trade bill: header {rows[0][:5]}...")
    try:
        split = next(i for i, row in enumerate(rows) if _cells(row)[0] == SUMMARY_FIRST)
    except StopIteration as exc:
        raise BillError("the bill has no summary: truncated?") from exc
    if split + 1 >= len(rows):
        raise BillError("the bill's summary has no values")
    summary = dict(zip(_cells(rows[split]), _cells(rows[split + 1]), strict=False))

    lines: list[BillLine] = []
    paid_total = refund_total = 0
    fee_total = Decimal(0)  # in yuan, unrounded: compared with the summary as the bill states it
    for n, row in enumerate(rows[1:split], start=2):
        cells = _cells(row)
        if len(cells) < len(header):
            raise BillError(f"line {n}: {len(cells)} fields, the header has {len(header)}")
        record = dict(zip(header, cells, strict=False))
        where = f"line {n}"
        try:
            at = dt.datetime.strptime(record["交易时间"], "%Y-%m-%d %H:%M:%S").replace(tzinfo=BUSINESS_TZ)
        except (KeyError, ValueError) as exc:
            raise BillError(f"{where}: bad 交易时间") from exc
        fee_text = record.get("手续费", "0")
        fee = yuan_to_fen(fee_text, what=f"{where} 手续费", exact=False)
        fee_total += _yuan(fee_text, what=f"{where} 手续费")
        state = record["交易状态"]
        if state == "REFUND":
            amount_text = _pick(record, "申请退款金额", "退款金额")
            amount = yuan_to_fen(amount_text or "", what=f"{where} refund amount")
            refund_state = record.get("退款状态", "")
            status = _REFUND_STATUS.get(refund_state, refund_state.lower())
            out_refund_no = record.get("商户退款单号") or None
            kind = "refund"
            refund_total += amount
        else:
            amount_text = _pick(record, "订单金额", "应结订单金额", "总金额")
            amount = yuan_to_fen(amount_text or "", what=f"{where} amount")
            status = _TRADE_STATUS.get(state, state.lower())
            out_refund_no = None
            kind = "payment"
            paid_total += amount
        lines.append(
            BillLine(
                day=day,
                kind=kind,
                out_trade_no=record["商户订单号"],
                channel_trade_no=record.get("微信订单号", ""),
                amount_fen=amount,
                fee_fen=fee,
                status=status,
                out_refund_no=out_refund_no,
                at=at,
            )
        )

    _check_summary(summary, count=len(lines), paid=paid_total, refunded=refund_total, fees=fee_total)
    return lines


def _check_summary(summary: dict[str, str], *, count: int, paid: int, refunded: int, fees: Decimal) -> None:
    try:
        declared = int(summary[SUMMARY_FIRST])
    except (KeyError, ValueError) as exc:
        raise BillError("the summary has no 总交易单数") from exc
    if declared != count:
        raise BillError(f"the summary counts {declared} lines, the bill has {count}")
    for names, actual in (
        (("订单总金额", "应结订单总金额", "总交易额"), paid),
        (("申请退款总金额", "退款总金额"), refunded),
    ):
        text = _pick(summary, *names)
        if text is not None and yuan_to_fen(text, what=f"summary {names[0]}") != actual:
            raise BillError(f"the summary's {names[0]} {text} disagrees with the lines ({actual} fen)")
    fee_text = summary.get("手续费总金额")
    if fee_text is not None and _yuan(fee_text, what="summary 手续费总金额") != fees:
        raise BillError(f"the summary's 手续费总金额 {fee_text} disagrees with the lines ({fees} yuan)")
