"""Alipay's daily trade bill (业务明细): a zip holding GBK CSV files with `#` comment lines above and below the table.

The detail file (`…_业务明细.csv`, beside a `…_业务明细(汇总).csv` summary) has one line per payment (业务类型 交易)
and per refund (业务类型 退款); amounts are yuan with two decimals, refunds negative; the service fee (服务费) is
negative when charged and positive when a refund gives it back. Zip member names are GBK bytes without the UTF-8
flag, as Alipay writes them."""

from __future__ import annotations

import csv
import datetime as dt
import io
import zipfile

from app_backend.kernel.clock import BUSINESS_TZ
from payments.channels.alipay.amounts import yuan_to_fen
from payments.channels.base import BillLine, RefundStatus, TradeStatus

_KINDS = {
    "交易": ("payment", TradeStatus.PAID.value),
    "退款": ("refund", RefundStatus.SUCCEEDED.value),
}


class BillFormatError(ValueError):
    """The file is not an Alipay trade bill we can read."""


def _member_name(info: zipfile.ZipInfo) -> str:
    if info.flag_bits & 0x800:  # the name is UTF-8 and Python decoded it already
        return info.filename
    try:
        return info.filename.encode("cp437").decode("gb18030")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return info.filename


def _detail_member(archive: zipfile.ZipFile) -> zipfile.ZipInfo:
    csvs = [info for info in archive.infolist() if _member_name(info).lower().endswith(".csv")]
    details = [info for info in csvs if "业务明细" in _member_name(info) and "汇总" not in _member_name(info)]
    if len(details) == 1:
        return details[0]
    if len(csvs) == 1:
        return csvs[0]
    raise BillFormatError(
        f"cannot tell the detail file among {[_member_name(i) for i in archive.infolist()]}"
    )


def _column(header: list[str], *names: str) -> int:
    normalized = [h.replace("（", "(").replace("）", ")").strip() for h in header]
    for name in names:
        if name in normalized:
            return normalized.index(name)
    raise BillFormatError(f"the bill has no column {names[0]!r}")


def _time(text: str) -> dt.datetime | None:
    text = text.strip()
    if not text:
        return None
    try:
        return dt.datetime.strptime(text, "%Y-%m-%d %H:%M:%S").replace(tzinfo=BUSINESS_TZ)
    except ValueError:
        raise BillFormatError(f"bad time {text!r}") from None


def parse_bill_csv(text: str, day: dt.date) -> list[BillLine]:
    """The lines of a detail CSV already decoded from GBK."""
    rows = [
        row for row in csv.reader(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    ]
    rows = [[field.strip() for field in row] for row in rows if any(field.strip() for field in row)]
    if not rows:
        raise BillFormatError("the bill has no table")
    header, body = rows[0], rows[1:]
    c_trade_no = _column(header, "支付宝交易号")
    c_out_trade_no = _column(header, "商户订单号")
    c_kind = _column(header, "业务类型")
    c_finished = _column(header, "完成时间")
    c_amount = _column(header, "订单金额(元)")
    c_fee = _column(header, "服务费(元)")
    c_refund_no = _column(header, "退款批次号/请求号")
    lines: list[BillLine] = []
    for number, row in enumerate(body, start=2):
        if len(row) < len(header) - 1:  # rows end with a trailing comma; anything shorter is broken
            raise BillFormatError(f"bill row {number} has {len(row)} fields, the header {len(header)}")
        kind_text = row[c_kind]
        kind, status = _KINDS.get(kind_text, ("refund" if "退款" in kind_text else "payment", kind_text))
        try:
            amount_fen = abs(yuan_to_fen(row[c_amount]))
            fee_fen = -yuan_to_fen(row[c_fee] or "0")
        except ValueError as exc:
            raise BillFormatError(f"bill row {number}: {exc}") from None
        lines.append(
            BillLine(
                day=day,
                kind=kind,
                out_trade_no=row[c_out_trade_no],
                channel_trade_no=row[c_trade_no],
                amount_fen=amount_fen,
                fee_fen=fee_fen,
                status=status,
                out_refund_no=(row[c_refund_no] or None) if kind == "refund" else None,
                at=_time(row[c_finished]),
            )
        )
    return lines


def parse_bill_zip(data: bytes, day: dt.date) -> list[BillLine]:
    """BillLines of a downloaded bill zip: amounts in fen (payments and refunds positive, told apart by `kind`),
    `fee_fen` what Alipay keeps (positive on a payment, negative when a refund returns the fee), `status` the
    provider-neutral "paid" / "succeeded" for 交易 / 退款 lines and the raw 业务类型 for anything else."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            raw = archive.read(_detail_member(archive))
    except zipfile.BadZipFile as exc:
        raise BillFormatError(f"not a zip: {exc}") from None
    try:
        text = raw.decode("gb18030")  # a superset of GBK
    except UnicodeDecodeError as exc:
        raise BillFormatError(f"not GBK: {exc}") from None
    return parse_bill_csv(text, day)
