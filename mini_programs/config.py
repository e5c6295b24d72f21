"""Which mini-programs log residents in, and their secrets: a JSON file named by `TZT_MINI_PROGRAM_CONFIG`, which
`tzt serve` writes in dev for the local sandboxes and operations provide in production (docs/operations.md).

    {"wechat": [{"app_id": "wx…", "name": "泰州通", "secret_file": "/run/secrets/wx-city",
                 "api_base_url": "https://api.weixin.qq.com/",
                 "templates": {"fare_debt": {"template_id": "…", "grant": "one_time", "page": "pages/fares",
                                             "fields": {"thing1": "title", "amount2": "amount"}}}}],
     "alipay": [{"app_id": "2021…", "name": "泰州通", "app_private_key_file": "…", "alipay_public_key_file": "…",
                 "aes_key_file": "…", "gateway_url": "https://openapi.alipay.com/gateway.do"}]}

Several apps per channel (the city's own, departments'). `templates` maps a kind of message (notifications'
kinds) to the app's subscribe-message template: its id, whether residents grant it once per message (`one_time`)
or for good (`long_term`, what WeChat allows government and public-service templates), the page it opens, and
which of the message's values fills each of the template's keywords (`title`, `body`, or a named param).

A secret is never written in the file itself: each one is given as `<name>_file` (a path, such as a mounted
secret) or `<name>_env` (the name of an environment variable)."""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

WECHAT_API = "https://api.weixin.qq.com/"
ALIPAY_GATEWAY = "https://openapi.alipay.com/gateway.do"
_WECHAT_APP_ID = re.compile(r"^wx[0-9a-f]{16}$")
_ALIPAY_APP_ID = re.compile(r"^\d{16}$")
_KIND = re.compile(r"^[a-z][a-z_]{0,39}$")
_KEYWORD = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,31}$")
_SECRETS = {"wechat": ("secret",), "alipay": ("app_private_key", "alipay_public_key", "aes_key")}


def pkcs1_private_key(text: str) -> str:
    """Any RSA private key Alipay's key tool writes (PKCS#1 or PKCS#8, PEM or bare base64) as the PKCS#1 PEM
    alipay-sdk-python signs with."""
    text = text.strip()
    if text.startswith("-----"):
        key = serialization.load_pem_private_key(text.encode("ascii"), password=None)
    else:
        key = serialization.load_der_private_key(base64.b64decode("".join(text.split())), password=None)
    if not isinstance(key, rsa.RSAPrivateKey) or key.key_size < 2048:
        raise ValueError("not an RSA private key of at least 2048 bits")
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode("ascii")


class MiniProgramConfigError(ValueError):
    """The configuration file cannot be used; the message names the file and the entry."""


@dataclass(frozen=True)
class Template:
    """A subscribe-message template of one app: what a kind of message is sent as."""

    template_id: str
    grant: str  # "one_time" or "long_term"
    fields: Mapping[str, str]  # the template's keyword -> the message value that fills it
    page: str | None = None


@dataclass(frozen=True)
class WechatApp:
    app_id: str
    name: str
    secret: str = field(repr=False)
    api_base_url: str = WECHAT_API
    timeout_s: float = 5.0
    templates: Mapping[str, Template] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        """With the trailing slash wechatpy joins endpoints to."""
        return self.api_base_url if self.api_base_url.endswith("/") else self.api_base_url + "/"


@dataclass(frozen=True)
class AlipayApp:
    app_id: str
    name: str
    app_private_key: str = field(repr=False)
    alipay_public_key: str = field(repr=False)
    # The content-encryption (AES) key of the app, base64: my.getPhoneNumber's answer is encrypted with it.
    aes_key: str = field(repr=False)
    gateway_url: str = ALIPAY_GATEWAY
    timeout_s: float = 5.0
    templates: Mapping[str, Template] = field(default_factory=dict)


@dataclass(frozen=True)
class MiniProgramApps:
    wechat: Mapping[str, WechatApp] = field(default_factory=dict)
    alipay: Mapping[str, AlipayApp] = field(default_factory=dict)

    def names(self) -> dict[tuple[str, str], str]:
        return {
            **{("wechat", a.app_id): a.name for a in self.wechat.values()},
            **{("alipay", a.app_id): a.name for a in self.alipay.values()},
        }


def _secret(path: Path, where: str, entry: Mapping[str, Any], name: str, env: Mapping[str, str]) -> str:
    if name in entry:
        raise MiniProgramConfigError(
            f"{path}: {where}.{name} is written in the file; give {name}_file or {name}_env instead"
        )
    if f"{name}_file" in entry:
        try:
            return Path(str(entry[f"{name}_file"])).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise MiniProgramConfigError(f"{path}: {where}.{name}_file cannot be read: {exc}") from None
    if f"{name}_env" in entry:
        value = env.get(str(entry[f"{name}_env"]), "").strip()
        if not value:
            raise MiniProgramConfigError(f"{path}: {where}.{name}_env names an empty or unset variable")
        return value
    raise MiniProgramConfigError(f"{path}: {where} needs {name}_file or {name}_env")


def _url(path: Path, where: str, value: object, allow_http: bool) -> str:
    """https; plain http only in dev or to a sandbox on this machine (the platforms' APIs are https only)."""
    text = str(value)
    host = urlsplit(text).hostname or ""
    local = host in ("127.0.0.1", "localhost", "::1")
    if not (text.startswith("https://") or (text.startswith("http://") and (allow_http or local))):
        raise MiniProgramConfigError(f"{path}: {where} must be an https URL (http only for a local sandbox)")
    return text


def _templates(path: Path, where: str, value: object) -> dict[str, Template]:
    if not isinstance(value, dict):
        raise MiniProgramConfigError(f"{path}: {where}.templates must be an object of kinds")
    templates = {}
    for kind, entry in value.items():
        at = f"{where}.templates.{kind}"
        if not _KIND.match(str(kind)):
            raise MiniProgramConfigError(f"{path}: {at}: a kind is lower-case letters and underscores")
        if not isinstance(entry, dict) or set(entry) - {"template_id", "grant", "page", "fields"}:
            raise MiniProgramConfigError(
                f"{path}: {at} must be an object of template_id, grant, page, fields"
            )
        template_id, grant, page, fields = (
            entry.get("template_id"),
            entry.get("grant", "one_time"),
            entry.get("page"),
            entry.get("fields"),
        )
        if not isinstance(template_id, str) or not 0 < len(template_id) <= 64:
            raise MiniProgramConfigError(f"{path}: {at}.template_id must be the template's id")
        if grant not in ("one_time", "long_term"):
            raise MiniProgramConfigError(f"{path}: {at}.grant must be one_time or long_term")
        if page is not None and (not isinstance(page, str) or len(page) > 256):
            raise MiniProgramConfigError(f"{path}: {at}.page must be a page path")
        if (
            not isinstance(fields, dict)
            or not fields
            or not all(_KEYWORD.match(str(k)) and isinstance(v, str) and v for k, v in fields.items())
        ):
            raise MiniProgramConfigError(
                f"{path}: {at}.fields must map the template's keywords to title, body or a param name"
            )
        templates[str(kind)] = Template(template_id, grant, dict(fields), page)
    return templates


def _apps(
    path: Path, channel: str, entries: object, env: Mapping[str, str], allow_http: bool
) -> list[dict[str, Any]]:
    if not isinstance(entries, list):
        raise MiniProgramConfigError(f"{path}: {channel} must be a list of apps")
    pattern = _WECHAT_APP_ID if channel == "wechat" else _ALIPAY_APP_ID
    seen: set[str] = set()
    apps = []
    for n, entry in enumerate(entries):
        where = f"{channel}[{n}]"
        if not isinstance(entry, dict):
            raise MiniProgramConfigError(f"{path}: {where} must be an object")
        app_id = str(entry.get("app_id", ""))
        if not pattern.match(app_id):
            raise MiniProgramConfigError(f"{path}: {where}.app_id {app_id!r} is not a {channel} app id")
        if app_id in seen:
            raise MiniProgramConfigError(f"{path}: {where}.app_id {app_id} appears twice")
        seen.add(app_id)
        app: dict[str, Any] = {"app_id": app_id, "name": str(entry.get("name") or app_id)}
        for name in _SECRETS[channel]:
            app[name] = _secret(path, where, entry, name, env)
        if channel == "alipay":
            try:
                app["app_private_key"] = pkcs1_private_key(app["app_private_key"])
                if len(base64.b64decode(app["aes_key"], validate=True)) not in (16, 24, 32):
                    raise ValueError("aes_key is not a base64 AES key")
            except (ValueError, TypeError, binascii.Error) as exc:
                raise MiniProgramConfigError(f"{path}: {where}: {exc}") from None
        if "templates" in entry:
            app["templates"] = _templates(path, where, entry["templates"])
        url_key = "api_base_url" if channel == "wechat" else "gateway_url"
        if url_key in entry:
            app[url_key] = _url(path, f"{where}.{url_key}", entry[url_key], allow_http)
        if "timeout_s" in entry:
            timeout = entry["timeout_s"]
            if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout <= 60:
                raise MiniProgramConfigError(f"{path}: {where}.timeout_s must be 0 < seconds <= 60")
            app["timeout_s"] = float(timeout)
        apps.append(app)
    return apps


def load_apps(
    path: Path | None, *, allow_http: bool = False, env: Mapping[str, str] | None = None
) -> MiniProgramApps:
    """The configured apps; none without a file (mini-program login then answers 400 for every app id)."""
    if path is None:
        return MiniProgramApps()
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise MiniProgramConfigError(f"{path}: cannot be read as JSON: {exc}") from None
    if not isinstance(document, dict) or set(document) - {"wechat", "alipay"}:
        raise MiniProgramConfigError(f"{path}: an object with the channels wechat and alipay")
    variables = os.environ if env is None else env
    wechat = [
        WechatApp(**a) for a in _apps(path, "wechat", document.get("wechat", []), variables, allow_http)
    ]
    alipay = [
        AlipayApp(**a) for a in _apps(path, "alipay", document.get("alipay", []), variables, allow_http)
    ]
    return MiniProgramApps(
        wechat={a.app_id: a for a in wechat},
        alipay={a.app_id: a for a in alipay},
    )
