"""The mini-program configuration (mini_programs/config.py) for the two sandboxes, as `tzt serve` writes it in dev
and the tests give it to the app: every app the sandboxes play, secrets by file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mini_programs.sandbox import alipay, wechat

# What the demo apps are called in a resident's list of linked identities.
DEMO_NAMES = {
    wechat.DEMO_APP_IDS[0]: "泰州通",
    wechat.DEMO_APP_IDS[1]: "泰州公积金",
    alipay.DEMO_APP_IDS[0]: "泰州通",
    alipay.DEMO_APP_IDS[1]: "泰州公积金",
}

# The city's apps' subscribe-message templates for every kind of message (notifications' kinds): the status of
# the code is a public-service template residents grant for good; the others are granted one message at a time.
DEMO_KINDS = (
    "code_status_changed",
    "fare_debt",
    "ticket_reminder",
    "complaint_answered",
    "bill_due",
    "event_changed",
)


def demo_templates(channel: str) -> dict[str, dict[str, Any]]:
    return {
        kind: {
            "template_id": f"{channel}-{kind.replace('_', '-')}",
            "grant": "long_term" if kind == "code_status_changed" else "one_time",
            "page": "pages/inbox/index",
            "fields": {"thing1": "title", "thing2": "body"},
        }
        for kind in DEMO_KINDS
    }


def sandbox_config(
    wechat_state: Path, alipay_state: Path, timeout_s: float = 5.0
) -> dict[str, list[dict[str, Any]]]:
    """The sections for the sandboxes whose state directories these are (each must have started once)."""
    played = json.loads((wechat_state / wechat.STATE_FILE).read_text())
    gateway = json.loads((alipay_state / alipay.STATE_FILE).read_text())
    return {
        "wechat": [
            {
                "app_id": app["appid"],
                "name": DEMO_NAMES.get(app["appid"], app["appid"]),
                "secret_file": app["secret_file"],
                "api_base_url": played["base_url"],
                "timeout_s": timeout_s,
                **({"templates": demo_templates("wechat")} if app["appid"] == wechat.DEMO_APP_IDS[0] else {}),
            }
            for app in played["apps"]
        ],
        "alipay": [
            {
                "app_id": app["app_id"],
                "name": DEMO_NAMES.get(app["app_id"], app["app_id"]),
                "app_private_key_file": str(alipay_state / "app_private_key.pem"),
                "alipay_public_key_file": str(alipay_state / "alipay_public_key.pem"),
                "aes_key_file": app["aes_key_file"],
                "gateway_url": gateway["gateway_url"],
                "timeout_s": timeout_s,
                **(
                    {"templates": demo_templates("alipay")} if app["app_id"] == alipay.DEMO_APP_IDS[0] else {}
                ),
            }
            for app in gateway["apps"]
        ],
    }
