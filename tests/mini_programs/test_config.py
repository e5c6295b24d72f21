"""The mini-program configuration: several apps per channel, secrets only by file or environment, and a file
that cannot be used refuses to start naming the entry."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from mini_programs.config import MiniProgramConfigError, load_apps

CITY, DEPARTMENT = "wx0123456789abcdef", "wxfedcba9876543210"


def _write(tmp_path: Path, document: dict[str, Any]) -> Path:
    path = tmp_path / "mini-programs.json"
    path.write_text(json.dumps(document))
    return path


def _alipay_entry(tmp_path: Path, key_format: serialization.PrivateFormat) -> dict[str, Any]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (tmp_path / "app.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, key_format, serialization.NoEncryption())
    )
    (tmp_path / "alipay.pem").write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    (tmp_path / "aes").write_text(base64.b64encode(os.urandom(16)).decode())
    return {
        "app_id": "2021000000000777",
        "app_private_key_file": str(tmp_path / "app.pem"),
        "alipay_public_key_file": str(tmp_path / "alipay.pem"),
        "aes_key_file": str(tmp_path / "aes"),
    }


def test_several_apps_per_channel_with_secrets_by_file_or_environment(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("s3cret-of-the-city\n")
    path = _write(
        tmp_path,
        {
            "wechat": [
                {"app_id": CITY, "name": "泰州通", "secret_file": str(tmp_path / "secret")},
                {"app_id": DEPARTMENT, "secret_env": "DEPT_SECRET", "timeout_s": 2},
            ],
            "alipay": [_alipay_entry(tmp_path, serialization.PrivateFormat.PKCS8)],
        },
    )
    apps = load_apps(path, env={"DEPT_SECRET": "dept"})
    assert apps.wechat[CITY].secret == "s3cret-of-the-city" and apps.wechat[CITY].name == "泰州通"
    assert apps.wechat[DEPARTMENT].secret == "dept" and apps.wechat[DEPARTMENT].timeout_s == 2
    assert apps.wechat[CITY].base_url == "https://api.weixin.qq.com/"
    # A PKCS#8 key (what Alipay's tool writes) is turned into the PKCS#1 the SDK signs with.
    assert apps.alipay["2021000000000777"].app_private_key.startswith("-----BEGIN RSA PRIVATE KEY-----")
    assert "s3cret" not in repr(apps)


@pytest.mark.parametrize(
    ("entry", "says"),
    [
        ({"app_id": CITY, "secret": "inline"}, "written in the file"),
        ({"app_id": CITY}, "secret_file or secret_env"),
        ({"app_id": CITY, "secret_env": "NOT_SET"}, "empty or unset"),
        ({"app_id": "wx123", "secret_env": "S"}, "not a wechat app id"),
        ({"app_id": CITY, "secret_env": "S", "api_base_url": "http://api.weixin.qq.com/"}, "https"),
        ({"app_id": CITY, "secret_env": "S", "timeout_s": 0}, "timeout_s"),
    ],
)
def test_a_file_that_cannot_be_used_refuses_naming_the_entry(
    tmp_path: Path, entry: dict[str, Any], says: str
) -> None:
    path = _write(tmp_path, {"wechat": [entry]})
    with pytest.raises(MiniProgramConfigError, match=says) as refused:
        load_apps(path, env={"S": "x"})
    assert "wechat[0]" in str(refused.value)


def test_an_app_given_twice_and_a_local_url_outside_dev_are_refused(tmp_path: Path) -> None:
    twice = _write(tmp_path, {"wechat": [{"app_id": CITY, "secret_env": "S"}] * 2})
    with pytest.raises(MiniProgramConfigError, match="twice"):
        load_apps(twice, env={"S": "x"})
    local = _write(
        tmp_path, {"wechat": [{"app_id": CITY, "secret_env": "S", "api_base_url": "http://127.0.0.1/"}]}
    )
    assert load_apps(local, allow_http=True, env={"S": "x"}).wechat[CITY].base_url == "http://127.0.0.1/"
    assert load_apps(None).wechat == {}


def test_an_apps_subscribe_message_templates_are_read_and_bad_ones_refused(tmp_path: Path) -> None:
    template = {
        "template_id": "tpl-1",
        "grant": "long_term",
        "page": "pages/x",
        "fields": {"thing1": "title"},
    }
    entry = {"app_id": CITY, "secret_env": "S", "templates": {"fare_debt": template}}
    apps = load_apps(_write(tmp_path, {"wechat": [entry]}), env={"S": "s"})
    loaded = apps.wechat[CITY].templates["fare_debt"]
    assert (loaded.template_id, loaded.grant, loaded.page, dict(loaded.fields)) == (
        "tpl-1",
        "long_term",
        "pages/x",
        {"thing1": "title"},
    )
    for bad, named in (
        ({**template, "grant": "forever"}, "templates.fare_debt.grant"),
        ({**template, "fields": {}}, "templates.fare_debt.fields"),
        ({**template, "template_id": ""}, "templates.fare_debt.template_id"),
        ({**template, "colour": "red"}, "templates.fare_debt"),
    ):
        path = _write(tmp_path, {"wechat": [{**entry, "templates": {"fare_debt": bad}}]})
        with pytest.raises(MiniProgramConfigError, match=named):
            load_apps(path, env={"S": "s"})


def test_a_template_for_a_kind_nobody_sends_refuses_to_start() -> None:
    from app_backend.notifications.service import check_template_kinds

    check_template_kinds([("wechat", CITY, "fare_debt")])
    with pytest.raises(ValueError, match="'parking_fine'"):
        check_template_kinds([("wechat", CITY, "parking_fine")])
