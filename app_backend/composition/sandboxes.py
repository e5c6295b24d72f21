"""`tzt serve` in dev starts the payment sandboxes (local servers speaking Alipay's and WeChat Pay's protocols)
and writes the channel config the app reads, so `make run` pays end to end without the internet; with
`--identity-sandbox` it also starts the identity vendors' sandbox (Alibaba Cloud's protocol) and points the
`aliyun` SMS, registry and liveness connectors at it.

WeChat Pay speaks API v2 by default; `TZT_WECHAT_API=v3` starts the v3 sandbox instead and configures the merchant
for v3 (papay withholding, and so transit's ride-first-pay-later through WeChat, is v2-only)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import httpx

from app_backend.composition.processes import die_with_parent as _die_with_parent
from payments.sandbox.launch import start_sandbox


def _start(channel: str, state_dir: Path, children: list[subprocess.Popen[bytes]]) -> str:
    base, proc = start_sandbox(channel, state_dir, preexec_fn=_die_with_parent)
    children.append(proc)  # start_sandbox kills the child itself if it never gets healthy
    return base


def start_sandboxes(data_dir: Path, children: list[subprocess.Popen[bytes]]) -> Path:
    """Starts both sandboxes (appending them to `children` at once) and returns the channel config path."""
    root = data_dir / "sandbox"
    config: dict[str, dict[str, Any]] = {}
    if os.environ.get("TZT_WECHAT_API", "v2") == "v3":
        config["wechat"] = wechat_v3_config(
            root / "wechat_v3", _start("wechat_v3", root / "wechat_v3", children)
        )
    else:
        config["wechat"] = _wechat_v2(root / "wechat", children)
    alipay_base = _start("alipay", root / "alipay", children)
    config["alipay"] = alipay_config(root / "alipay", alipay_base)
    path = data_dir / "payment-channels.json"
    path.write_text(json.dumps(config, indent=1))
    return path


def wechat_v3_config(state_dir: Path, base: str) -> dict[str, Any]:
    """The v3 sandbox's merchant as the payment config names it: keys by file, and the transfer scene it is
    granted (so payees with a WeChat payout account are paid by 商家转账)."""
    merchant = json.loads((state_dir / "wechat_v3.json").read_text())
    return {
        "api_version": "v3",
        "appid": merchant["appid"],
        "mchid": merchant["mchid"],
        "cert_serial_no": merchant["cert_serial_no"],
        "private_key_file": merchant["private_key_file"],
        "apiv3_key_file": merchant["apiv3_key_file"],
        "api_base_url": base,
        "transfer_scene_id": merchant["transfer_scene_id"],
        "transfer_scene_report_infos": merchant["transfer_scene_report_infos"],
    }


def _wechat_v2(state_dir: Path, children: list[subprocess.Popen[bytes]]) -> dict[str, str]:
    root = state_dir.parent
    _start("wechat", root / "wechat", children)
    merchant = json.loads((root / "wechat" / "wechat.json").read_text())
    key_file = root / "wechat" / "api_key.txt"
    key_file.write_text(merchant["api_key"])
    key_file.chmod(0o600)
    # The demo rider's contract, "signed" before this sandbox started: the demo can ride and pay at once.
    from app_backend.composition.seed import DEMO_CONTRACT_CODE, DEMO_CONTRACT_ID

    httpx.post(
        f"{merchant['base_url'].rstrip('/')}/_sandbox/contracts/{DEMO_CONTRACT_CODE}",
        json={"contract_id": DEMO_CONTRACT_ID},
        timeout=10,
    ).raise_for_status()
    return {
        "appid": merchant["appid"],
        "mch_id": merchant["mch_id"],
        "api_key_file": str(key_file),
        "api_base_url": merchant["base_url"],
        "papay_plan_id": str(merchant.get("plan_id", "")),
    }


def alipay_config(state_dir: Path, base: str) -> dict[str, str]:
    from payments.sandbox.alipay import DEMO_APP_ID, DEMO_SELLER_ID

    return {
        "app_id": DEMO_APP_ID,
        "seller_id": DEMO_SELLER_ID,
        "app_private_key_file": str(state_dir / "app_private_key.pem"),
        "alipay_public_key_file": str(state_dir / "alipay_public_key.pem"),
        "gateway_url": f"{base}/gateway.do",
    }


MINI_PROGRAM_SANDBOX = "mini_programs.sandbox"


def start_mini_program_sandboxes(data_dir: Path, children: list[subprocess.Popen[bytes]]) -> Path:
    """Starts the WeChat and Alipay mini-program sandboxes (appending them to `children`) and returns the
    mini-program config naming their apps (TZT_MINI_PROGRAM_CONFIG); the city's apps are the payment sandboxes'
    app ids, so a mini-program login can pay at once."""
    from mini_programs.sandbox.config import sandbox_config

    root = data_dir / "sandbox"
    for channel in ("wechat", "alipay"):
        _, proc = start_sandbox(
            channel, root / f"{channel}-mini", preexec_fn=_die_with_parent, module=MINI_PROGRAM_SANDBOX
        )
        children.append(proc)
    path = data_dir / "mini-programs.json"
    path.write_text(json.dumps(sandbox_config(root / "wechat-mini", root / "alipay-mini"), indent=1))
    return path


IDENTITY_SANDBOX = "app_backend.identity.aliyun_sandbox"


def write_identity_sandbox_people(state_dir: Path) -> Path:
    """The demo seed's people (names, ID numbers, the phones the carriers have registered to them) as the identity
    vendors' sandbox loads them at start: the same people the dev registry is seeded with."""
    from app_backend.composition.seed import DEMO_PEOPLE, DEMO_PHONES

    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / "people.json"
    people = [
        {"name": name, "id_number": id_number, "phones": DEMO_PHONES[id_number], "face": "pass"}
        for name, id_number in DEMO_PEOPLE
    ]
    path.write_text(json.dumps(people, ensure_ascii=False, indent=1))
    return path


def start_identity_sandbox(data_dir: Path, children: list[subprocess.Popen[bytes]]) -> dict[str, str]:
    """Starts the identity vendors' sandbox with the demo people (appending it to `children`) and returns the
    environment that sets the three backends to `aliyun` and points them at it."""
    from app_backend.identity.aliyun_sandbox import DEMO_TEMPLATE_OF

    state = data_dir / "sandbox" / "aliyun"
    write_identity_sandbox_people(state)
    base, proc = start_sandbox("aliyun", state, preexec_fn=_die_with_parent, module=IDENTITY_SANDBOX)
    children.append(proc)
    vendor = json.loads((state / "aliyun.json").read_text())
    return {
        "TZT_SMS_BACKEND": "aliyun",
        "TZT_REGISTRY_BACKEND": "aliyun",
        "TZT_LIVENESS_BACKEND": "aliyun",
        "TZT_ALIYUN_ENDPOINT": base.removeprefix("http://"),
        "TZT_ALIYUN_PROTOCOL": "http",
        "TZT_ALIYUN_ACCESS_KEY_ID": vendor["access_key_id"],
        "TZT_ALIYUN_ACCESS_KEY_SECRET": vendor["access_key_secret"],
        "TZT_ALIYUN_SMS_SIGN_NAME": vendor["sign_name"],
        "TZT_ALIYUN_SMS_TEMPLATE_OTP": DEMO_TEMPLATE_OF["otp"],
        "TZT_ALIYUN_SMS_TEMPLATE_IDENTITY_TAKEN": DEMO_TEMPLATE_OF["identity-taken"],
        "TZT_ALIYUN_SMS_TEMPLATE_IDENTITY_CLAIMED": DEMO_TEMPLATE_OF["identity-claimed"],
        "TZT_ALIYUN_FACE_SCENE_ID": str(vendor["scene_id"]),
    }
