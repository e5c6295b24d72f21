"""The Alipay adapter's pieces without a server: amounts, the bill parser, response extraction, configuration, the
sandbox's demo keys and the sandbox CLI."""

from __future__ import annotations

import base64
import datetime as dt
import io
import json
import stat
import zipfile
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import rsa
from cryptography.hazmat.primitives import serialization
from hypothesis import given
from hypothesis import strategies as st

from payments.channels.alipay import AlipayConfig
from payments.channels.alipay.amounts import fen_to_yuan, yuan_to_fen
from payments.channels.alipay.bill import BillFormatError, parse_bill_csv, parse_bill_zip
from payments.channels.alipay.errors import AlipayInvalidResponse
from payments.channels.alipay.signing import load_public_key, verified_response
from payments.sandbox.__main__ import CHANNELS, parse_args
from payments.sandbox.alipay import AlipaySandbox
from payments.sandbox.keys import generate_alipay_keys, load_alipay_keys, load_or_create_alipay_keys

SHANGHAI = ZoneInfo("Asia/Shanghai")


@pytest.fixture(scope="module")
def keys_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("alipay-keys")
    generate_alipay_keys(folder)
    return folder


# -- amounts -------------------------------------------------------------------------------------------------


@given(st.integers(min_value=-(10**13), max_value=10**13))
def test_fen_yuan_round_trip_is_exact(fen: int) -> None:
    text = fen_to_yuan(fen)
    assert Decimal(text) * 100 == fen and text.count(".") == 1 and len(text.split(".")[1]) == 2
    assert yuan_to_fen(text) == fen


def test_yuan_parsing_is_strict() -> None:
    assert yuan_to_fen("0.01") == 1
    assert yuan_to_fen("100000000.00") == 10_000_000_000
    assert yuan_to_fen(" 12.3 ") == 1230
    assert yuan_to_fen("-0.06") == -6
    assert yuan_to_fen("5") == 500
    for bad in ("0.001", "1e2", "", " ", "NaN", "Infinity", "1,00", "¥1", "0x10", "1.2.3", "１"):
        with pytest.raises(ValueError):
            yuan_to_fen(bad)
    with pytest.raises(TypeError):
        fen_to_yuan(1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        fen_to_yuan(True)


# -- bills ---------------------------------------------------------------------------------------------------

HEADER = (
    "支付宝交易号,商户订单号,业务类型,商品名称,创建时间,完成时间,门店编号,门店名称,操作员,终端号,对方账户,"
    "订单金额（元）,商家实收（元）,支付宝红包（元）,集分宝（元）,支付宝优惠（元）,商家优惠（元）,券核销金额（元）,"
    "券名称,商家红包消费金额（元）,卡消费金额（元）,退款批次号/请求号,服务费（元）,分润（元）,备注"
)


def _row(trade_no: str, out: str, kind: str, amount: str, refund_no: str, fee: str) -> str:
    fields = [
        trade_no,
        out,
        kind,
        "水费",
        "2024-05-01 09:00:00",
        "2024-05-01 09:00:05",
        "",
        "",
        "",
        "",
        "",
        amount,
        amount,
        "0.00",
        "0.00",
        "0.00",
        "0.00",
        "0.00",
        "",
        "0.00",
        "0.00",
        refund_no,
        fee,
        "0.00",
        "",
    ]
    return ",".join(f"{f}\t" for f in fields) + ","


BILL = "\r\n".join(
    [
        "#支付宝业务明细查询",
        "#账号：[20880000000000010156]",
        "#起始日期：[2024年05月01日 00:00:00]   终止日期：[2024年05月02日 00:00:00]",
        "#-----------------------------------------业务明细列表----------------------------------------",
        HEADER,
        _row("2024050122001", "P1", "交易", "0.07", "", "0.00"),
        _row("2024050122002", "P2", "交易", "100000000.00", "", "-600000.00"),
        _row("2024050122002", "P2", "退款", "-0.01", "R1", "0.00"),
        _row("2024050122003", "P3", "交易", "19.99", "", "-0.12"),
        "#-----------------------------------------业务明细列表结束------------------------------------",
        "#交易合计：3笔，退款合计：1笔",
        "#导出时间：[2024年05月02日 05:12:33]",
        "",
    ]
)


class _GbkName(zipfile.ZipInfo):
    def _encodeFilenameFlags(self) -> tuple[bytes, int]:  # zipfile's hook for the stored name
        return self.filename.encode("gbk"), self.flag_bits & ~0x800


def _zip(members: dict[str, bytes], utf8_names: bool = False) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            if utf8_names:
                archive.writestr(name, data)
            else:  # GBK names without the UTF-8 flag, as Alipay writes them
                archive.writestr(_GbkName(name), data)
    return buffer.getvalue()


def test_bill_csv_lines_in_exact_fen() -> None:
    day = dt.date(2024, 5, 1)
    lines = parse_bill_csv(BILL, day)
    assert [(x.kind, x.out_trade_no, x.amount_fen, x.fee_fen, x.status, x.out_refund_no) for x in lines] == [
        ("payment", "P1", 7, 0, "paid", None),
        ("payment", "P2", 10_000_000_000, 60_000_000, "paid", None),
        ("refund", "P2", 1, 0, "succeeded", "R1"),
        ("payment", "P3", 1_999, 12, "paid", None),
    ]
    assert lines[0].at == dt.datetime(2024, 5, 1, 9, 0, 5, tzinfo=SHANGHAI) and lines[0].day == day
    assert lines[0].channel_trade_no == "2024050122001"


@pytest.mark.parametrize("utf8_names", [False, True])
def test_bill_zip_picks_the_detail_file(utf8_names: bool) -> None:
    data = _zip(
        {
            "20880000000000010156_20240501_业务明细(汇总).csv": "#汇总\r\n合计,1\r\n".encode("gbk"),
            "20880000000000010156_20240501_业务明细.csv": BILL.encode("gbk"),
        },
        utf8_names,
    )
    assert [line.out_trade_no for line in parse_bill_zip(data, dt.date(2024, 5, 1))] == [
        "P1",
        "P2",
        "P2",
        "P3",
    ]


def test_broken_bills_are_refused() -> None:
    day = dt.date(2024, 5, 1)
    with pytest.raises(BillFormatError):
        parse_bill_zip(b"not a zip", day)
    with pytest.raises(BillFormatError):
        parse_bill_csv("#only comments\r\n", day)
    with pytest.raises(BillFormatError, match="column"):
        parse_bill_csv("a,b,c\r\n1,2,3\r\n", day)
    with pytest.raises(BillFormatError, match="row 2"):
        parse_bill_csv(HEADER + "\r\n" + _row("1", "P", "交易", "1.001", "", "0.00"), day)
    with pytest.raises(BillFormatError):
        parse_bill_zip(_zip({"a.csv": b"x", "b.csv": b"y"}), day)


def test_sandbox_bill_round_trips_through_the_parser(keys_dir: Path) -> None:
    """The sandbox's zip (GBK member names, GBK CSV) read back by the adapter's parser."""
    sandbox = AlipaySandbox(load_alipay_keys(keys_dir))
    day = dt.date(2024, 5, 1)
    sandbox.bill_edits[day] = [
        {"op": "add", "out_trade_no": "X1", "value": {"amount_fen": 1_234_567, "fee_fen": 7_407}},
        {
            "op": "add",
            "out_trade_no": "X1",
            "value": {"kind": "refund", "amount_fen": 1, "fee_fen": 0, "out_refund_no": "R9"},
        },
    ]
    data = sandbox.bill_zip(day)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert all(not info.flag_bits & 0x800 for info in archive.infolist())
    lines = parse_bill_zip(data, day)
    assert [(x.kind, x.amount_fen, x.fee_fen, x.out_refund_no) for x in lines] == [
        ("payment", 1_234_567, 7_407, None),
        ("refund", 1, 0, "R9"),
    ]


# -- response signatures -------------------------------------------------------------------------------------


def _signed_answer(private: rsa.PrivateKey, key: str, content: str, *, sign_first: bool = False) -> bytes:
    sign = base64.b64encode(rsa.sign(content.encode(), private, "SHA-256")).decode()
    if sign_first:
        return ('{"sign":"' + sign + '", "' + key + '" : ' + content + "}").encode()
    return ('{"' + key + '":' + content + ',"sign":"' + sign + '"}').encode()


def test_response_signature_covers_the_exact_object_bytes() -> None:
    public, private = rsa.newkeys(1024)  # small and fast: only the framing is under test here
    method = "alipay.trade.query"
    content = '{"code":"10000", "msg":"Success","total_amount":"1.00","note":"a \\"}\\" b"}'
    assert (
        verified_response(_signed_answer(private, "alipay_trade_query_response", content), method, public)[
            "total_amount"
        ]
        == "1.00"
    )
    # the sign may come first and whitespace may vary: the bytes of the object are still what is verified
    answer = _signed_answer(private, "alipay_trade_query_response", content, sign_first=True)
    assert verified_response(answer, method, public)["note"] == 'a "}" b'
    # the same JSON re-serialized (other bytes) is refused
    reserialized = json.dumps(json.loads(content), separators=(",", ":"))
    forged = _signed_answer(private, "alipay_trade_query_response", content).replace(
        content.encode(), reserialized.encode()
    )
    with pytest.raises(AlipayInvalidResponse, match="signature"):
        verified_response(forged, method, public)
    # a second member of the same name cannot smuggle other values past the signature
    good = _signed_answer(private, "alipay_trade_query_response", content)
    smuggled = good[:-1] + b',"alipay_trade_query_response":{"code":"10000","total_amount":"999.00"}}'
    with pytest.raises(AlipayInvalidResponse, match="ambiguous"):
        verified_response(smuggled, method, public)
    with pytest.raises(AlipayInvalidResponse, match="not JSON"):
        verified_response(b"<html>502</html>", method, public)
    with pytest.raises(AlipayInvalidResponse, match="no alipay_trade_query_response"):
        verified_response(b'{"other_response":{},"sign":"x"}', method, public)
    error = _signed_answer(private, "error_response", '{"code":"40002","sub_code":"isv.invalid-method"}')
    assert verified_response(error, method, public)["sub_code"] == "isv.invalid-method"


def test_load_public_key_reads_spki_pem(keys_dir: Path) -> None:
    key = load_public_key((keys_dir / "alipay_public_key.pem").read_text())
    assert key.n.bit_length() == 2048


# -- configuration and keys ----------------------------------------------------------------------------------


def test_config_accepts_alipay_key_tool_formats(keys_dir: Path) -> None:
    keys = load_alipay_keys(keys_dir)
    private = serialization.load_pem_private_key(keys.app_private_key.encode(), password=None)
    pkcs8_der = private.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    bare_public = "".join(
        line for line in keys.alipay_public_key.splitlines() if not line.startswith("-----")
    )
    config = AlipayConfig(
        app_id="2021000000000001",
        # bare base64 PKCS#8, as Alipay's Java key tool writes it; the public key as the Alipay console shows it
        app_private_key=base64.b64encode(pkcs8_der).decode(),
        alipay_public_key=bare_public,
    )
    # normalized to the PKCS#1 PEM the SDK needs
    assert config.app_private_key.strip() == keys.app_private_key.strip()
    assert config.alipay_public_key.strip() == keys.alipay_public_key.strip()
    assert "PRIVATE" not in repr(config) and "2021000000000001" in repr(config)
    with pytest.raises(ValueError, match="app_private_key"):
        AlipayConfig(app_id="1", app_private_key="nonsense", alipay_public_key=keys.alipay_public_key)
    with pytest.raises(ValueError, match="gateway_url"):
        AlipayConfig(
            app_id="1",
            app_private_key=keys.app_private_key,
            alipay_public_key=keys.alipay_public_key,
            gateway_url="ftp://x",
        )


def test_demo_keys_are_private_files(tmp_path: Path) -> None:
    folder = tmp_path / "keys"
    keys = load_or_create_alipay_keys(folder)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    for name in (
        "app_private_key.pem",
        "app_public_key.pem",
        "alipay_private_key.pem",
        "alipay_public_key.pem",
    ):
        assert stat.S_IMODE((folder / name).stat().st_mode) == 0o600
    assert keys.app_private_key.startswith("-----BEGIN RSA PRIVATE KEY-----")  # PKCS#1, as the SDK needs
    assert keys.alipay_public_key.startswith("-----BEGIN PUBLIC KEY-----")
    assert load_or_create_alipay_keys(folder) == keys  # loaded, not regenerated
    (folder / "alipay_public_key.pem").unlink()
    assert load_or_create_alipay_keys(folder) != keys  # a half set is replaced by a fresh pair set


def test_cli_has_one_subcommand_per_channel(tmp_path: Path) -> None:
    assert "alipay" in CHANNELS
    args = parse_args(
        ["alipay", "--port", "9101", "--state-dir", str(tmp_path), "--app-id", "2021000000000042"]
    )
    assert (args.channel, args.port, args.app_id, args.host) == (
        "alipay",
        9101,
        "2021000000000042",
        "127.0.0.1",
    )
    app = CHANNELS["alipay"].build_app(args)
    assert app.state.sandbox.app_id == "2021000000000042"
    assert (tmp_path / "app_private_key.pem").is_file()
    with pytest.raises(SystemExit):
        parse_args(["alipay", "--state-dir", str(tmp_path)])  # --port is required


def test_the_payment_configuration_needs_our_seller_id(keys_dir: Path, tmp_path: Path) -> None:
    """Issue 14, finding 6: without our PID a notification for another seller of the same app cannot be told apart,
    so a configuration without one is refused by name, and a PID that is not one is refused."""
    from payments.channels.configured import build_channels

    section = {
        "app_id": "2021000000000001",
        "app_private_key_file": str(keys_dir / "app_private_key.pem"),
        "alipay_public_key_file": str(keys_dir / "alipay_public_key.pem"),
    }
    path = tmp_path / "payment-channels.json"
    path.write_text(json.dumps({"alipay": section}))
    with pytest.raises(ValueError, match=r"alipay\.seller_id"):
        build_channels(path)
    path.write_text(json.dumps({"alipay": {**section, "seller_id": "2088000000000001"}}))
    assert build_channels(path)["alipay"].config.seller_id == "2088000000000001"  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="seller_id"):
        AlipayConfig.from_keys_dir(
            keys_dir, app_id="2021000000000001", gateway_url="http://x", seller_id="12"
        )


def test_a_query_answer_naming_another_seller_is_not_believed(keys_dir: Path) -> None:
    from payments.channels.alipay.adapter import AlipayChannel

    channel = AlipayChannel(
        AlipayConfig.from_keys_dir(
            keys_dir, app_id="2021000000000001", gateway_url="http://x", seller_id="2088000000000001"
        )
    )
    answer = {"out_trade_no": "T1", "trade_status": "TRADE_SUCCESS", "total_amount": "1.00"}
    assert (
        channel._trade({**answer, "seller_id": "2088000000000001"}, "T1", "alipay.trade.query").amount_fen
        == 100
    )
    assert channel._trade(answer, "T1", "alipay.trade.query").amount_fen == 100  # most answers name none
    with pytest.raises(AlipayInvalidResponse, match="another seller"):
        channel._trade({**answer, "seller_id": "2088999999999999"}, "T1", "alipay.trade.query")
