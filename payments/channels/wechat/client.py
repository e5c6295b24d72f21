"""wechatpy's WeChatPay, with the sign type sent on every request and every answer's signature checked.

wechatpy 1.8 signs with HMAC-SHA256 only when the request carries `sign_type`, which most of its API methods
give no way to pass, and it never verifies the signature of what WeChat answers. Both are fixed here, in the
two hooks every call goes through (`_request`, `_handle_result`).

Transfers (企业付款到零钱, under mmpaymkttransfers/) are the exception WeChat makes: their requests are signed with MD5
only and carry no sign_type, and their answers are not signed at all (the real gateway answers them only over the
merchant certificate's mutual TLS). Their answers are checked for our merchant and app instead, and a signature
is verified when one is there."""

from __future__ import annotations

from typing import Any

from wechatpy.pay import WeChatPay

from payments.channels.wechat import signing
from payments.channels.wechat.errors import InvalidResponse, WechatError

TRANSFER_PATHS = ("mmpaymkttransfers/",)


def is_transfer(url: str) -> bool:
    return any(path in url for path in TRANSFER_PATHS)


class SignedWeChatPay(WeChatPay):
    def __init__(
        self,
        *,
        appid: str,
        api_key: str,
        mch_id: str,
        sign_type: str,
        base_url: str,
        mch_cert: str | None,
        mch_key: str | None,
        timeout: float,
    ) -> None:
        super().__init__(
            appid=appid,
            api_key=api_key,
            mch_id=mch_id,
            mch_cert=mch_cert,
            mch_key=mch_key,
            timeout=timeout,
            sandbox=False,
        )
        self.sign_type = sign_type
        self.API_BASE_URL = base_url  # on the instance: every endpoint of this client goes there

    def _request(self, method: str, url_or_endpoint: str, **kwargs: Any) -> Any:
        data = kwargs.get("data")
        if isinstance(data, dict) and not is_transfer(url_or_endpoint):
            data["sign_type"] = self.sign_type
        return super()._request(method, url_or_endpoint, **kwargs)

    def _handle_result(self, res: Any) -> Any:
        res.encoding = "utf-8"
        text = res.text
        try:
            data = signing.parse_xml(text)
        except signing.XmlError:
            return text  # a bill (CSV), or garbage the caller refuses
        if data.get("return_code") != "SUCCESS":
            # Protocol-level refusals (bad signature, bad parameters, no bill) come unsigned.
            code = data.get("err_code") or data.get("error_code") or "FAIL"
            raise WechatError(code, data.get("return_msg", ""), data)
        transfer = is_transfer(str(res.url))
        if transfer:
            if data.get("sign") and not signing.verify(data, self.api_key, "MD5"):
                raise InvalidResponse(f"{res.url}: the answer's MD5 signature does not verify")
        elif not signing.verify(data, self.api_key, self.sign_type):
            raise InvalidResponse(f"{res.url}: the answer's {self.sign_type} signature does not verify")
        foreign = any(
            data.get(name) not in (None, "", ours)
            for name, ours in (
                ("mch_id", self.mch_id),
                ("mchid", self.mch_id),
                ("appid", self.appid),
                ("mch_appid", self.appid),
            )
        )
        if foreign:
            raise InvalidResponse(f"{res.url}: the answer names another merchant or app")
        if data.get("result_code") != "SUCCESS":
            raise WechatError(data.get("err_code") or "FAIL", data.get("err_code_des", ""), data)
        return data
