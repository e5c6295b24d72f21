"""Production on real connectors (backend `aliyun`): the official Alibaba Cloud SDKs against a local server that
speaks their protocol and checks their signature (app_backend/identity/aliyun_sandbox.py), driven through a
production app. What the sandbox is told of people is what the vendor knows; nothing of ours is mocked."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from app_backend.composition.sandboxes import IDENTITY_SANDBOX, write_identity_sandbox_people
from app_backend.composition.seed import DEMO_PEOPLE, DEMO_PHONES
from app_backend.identity import service as identity_service
from app_backend.identity.aliyun import AliyunPopulationRegistry, AliyunSmsSender
from app_backend.identity.sms import otp_message
from app_backend.kernel.errors import DomainError
from app_backend.kernel.settings import AliyunSettings, Settings
from payments.sandbox.launch import running_sandbox
from tests.conftest import ApiClient, serving
from tests.helpers import random_id_number, random_ip, random_phone

TEMPLATES = {
    "otp": "SMS_300000001",
    "taken": "SMS_300000002",
    "claimed": "SMS_300000003",
}  # as in aliyun.json
# What the face SDK hands the app when it thinks the scan went well: the app relays it, the server never trusts it.
APP_RESULT_OK = "1000"
META_INFO = json.dumps({"zimVer": "3.0.0", "deviceType": "android", "appName": "cn.taizhoutong"})


@dataclass
class Vendor:
    base_url: str
    keys: dict[str, Any]

    @property
    def endpoint(self) -> str:
        return self.base_url.removeprefix("http://")

    def settings(self, **overrides: Any) -> AliyunSettings:
        values: dict[str, Any] = {
            "access_key_id": self.keys["access_key_id"],
            "access_key_secret": self.keys["access_key_secret"],
            "endpoint": self.endpoint,
            "protocol": "http",
            "timeout": 2.0,
            "sms_sign_name": self.keys["sign_name"],
            "sms_template_otp": TEMPLATES["otp"],
            "sms_template_identity_taken": TEMPLATES["taken"],
            "sms_template_identity_claimed": TEMPLATES["claimed"],
            "face_scene_id": self.keys["scene_id"],
        }
        return AliyunSettings(**{**values, **overrides})

    async def control(self, method: str, path: str, body: Any = None) -> Any:
        async with httpx.AsyncClient(base_url=self.base_url, timeout=10) as http:
            answer = await http.request(method, path, json=body)
        assert answer.status_code == 200, answer.text
        return answer.json()

    async def enrol(self, name: str, id_number: str, phones: list[str], face: str = "pass") -> None:
        person = {"name": name, "id_number": id_number, "phones": phones, "face": face}
        await self.control("POST", "/_sandbox/people", {"people": [person]})

    async def messages(self, phone: str) -> list[dict[str, Any]]:
        return (await self.control("GET", f"/_sandbox/messages?phone={phone}"))["messages"]  # type: ignore[no-any-return]

    async def calls(self, action: str) -> int:
        return int((await self.control("GET", "/_sandbox/calls")).get(action, 0))

    async def fault(self, action: str, mode: str, **extra: Any) -> None:
        await self.control("POST", "/_sandbox/faults", {"action": action, "mode": mode, "times": 1, **extra})


@pytest.fixture(scope="module")
def vendor(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Vendor]:
    state = tmp_path_factory.mktemp("aliyun-sandbox")
    write_identity_sandbox_people(state)
    with running_sandbox("aliyun", state, module=IDENTITY_SANDBOX) as started:
        yield Vendor(started.base_url, json.loads((Path(state) / "aliyun.json").read_text()))


def production(settings: Settings, vendor: Vendor) -> Settings:
    return msgspec.structs.replace(
        settings,
        env="production",
        sms_backend="aliyun",
        registry_backend="aliyun",
        liveness_backend="aliyun",
        aliyun=vendor.settings(),
    )


@pytest.fixture(scope="module")
async def prod(settings: Settings, vendor: Vendor) -> AsyncIterator[ApiClient]:
    async with serving(production(settings, vendor), client_port=50400) as api:
        yield api


async def login(client: ApiClient, vendor: Vendor, phone: str | None = None) -> dict[str, Any]:
    phone = phone or random_phone()
    sent = await client.post(
        "/api/v1/auth/otp", json={"phone": phone}, headers={"X-Forwarded-For": random_ip()}
    )
    assert sent.status_code == 202, sent.text
    code = (await vendor.messages(phone))[-1]["template_param"]["code"]
    answer = await client.post("/api/v1/auth/login", json={"phone": phone, "otp": code})
    assert answer.status_code == 200, answer.text
    return {**answer.json(), "phone": phone}


def bearer(tokens: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {tokens['access_token']}"}


# -- production starts on the real connectors, and on nothing of dev ---------------------------------------------------


def _never(name: str) -> Any:
    def construct(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"{name} was constructed in production")

    return construct


async def test_production_starts_on_the_aliyun_connectors_without_a_dev_stand_in(
    settings, vendor, monkeypatch
):
    for stand_in in ("DevOutboxSender", "DevLivenessProvider", "DevPopulationRegistry"):
        monkeypatch.setattr(identity_service, stand_in, _never(stand_in))
    async with serving(production(settings, vendor), client_port=50401) as api:
        monkeypatch.undo()  # started; the names are types again for the handlers' signatures
        identity = api.app.state.identity
        assert identity.dev_outbox is None and identity.dev_liveness is None
        assert identity.liveness.name == "aliyun"
        assert (await api.get("/api/v1/dev/outbox", params={"phone": "13800000001"})).status_code == 404
        # and it serves: a one-time code goes out through the vendor
        await login(api, vendor)


def test_production_names_what_the_aliyun_connectors_lack(settings):
    bare = msgspec.structs.replace(
        settings, env="production", sms_backend="aliyun", registry_backend="aliyun", liveness_backend="aliyun"
    )
    problems = " ".join(bare.backend_problems())
    for name in ("TZT_ALIYUN_ACCESS_KEY_ID", "TZT_ALIYUN_SMS_TEMPLATE_OTP", "TZT_ALIYUN_FACE_SCENE_ID"):
        assert name in problems
    with pytest.raises(RuntimeError, match="TZT_ALIYUN_ACCESS_KEY_SECRET"):
        bare.refuse_dev_stand_ins()


def test_the_access_key_secret_never_shows_in_the_settings(vendor):
    shown = repr(vendor.settings()) + str(vendor.settings())
    assert vendor.keys["access_key_secret"] not in shown


# -- SMS -------------------------------------------------------------------------------------------------------------


async def test_a_one_time_code_goes_out_as_the_registered_template_with_the_code(prod, vendor):
    phone = random_phone()
    sent = await prod.post(
        "/api/v1/auth/otp", json={"phone": phone}, headers={"X-Forwarded-For": random_ip()}
    )
    assert sent.status_code == 202, sent.text
    [message] = await vendor.messages(phone)
    assert message["template_code"] == TEMPLATES["otp"]
    assert message["sign_name"] == vendor.keys["sign_name"]
    code = message["template_param"]["code"]
    assert len(code) == 6 and code.isdigit()
    login = await prod.post("/api/v1/auth/login", json={"phone": phone, "otp": code})
    assert login.status_code == 200, login.text


async def test_the_sandbox_refuses_a_request_signed_with_another_secret(vendor):
    forged = AliyunSmsSender(vendor.settings(access_key_secret="not-the-secret"))
    phone = random_phone()
    with pytest.raises(DomainError) as refused:
        await forged.send(phone, otp_message("123456", 5))
    assert refused.value.status == 503
    assert await vendor.messages(phone) == []
    # the same call rightly signed goes through: the refusal was the signature's
    await AliyunSmsSender(vendor.settings()).send(phone, otp_message("123456", 5))
    assert [m["template_param"] for m in await vendor.messages(phone)] == [{"code": "123456"}]


async def test_the_sandbox_answers_a_bad_signature_as_the_vendor_does(vendor):
    async with httpx.AsyncClient(base_url=vendor.base_url) as http:
        answer = await http.post(
            "/?PhoneNumbers=13800000001",
            headers={
                "x-acs-action": "SendSms",
                "x-acs-version": "2017-05-25",
                "Authorization": f"ACS3-HMAC-SHA256 Credential={vendor.keys['access_key_id']},"
                "SignedHeaders=host;x-acs-action;x-acs-content-sha256;x-acs-date;x-acs-signature-nonce,"
                "Signature=00",
                "x-acs-content-sha256": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
                "x-acs-date": "2026-01-01T00:00:00Z",
                "x-acs-signature-nonce": "n1",
            },
        )
    assert answer.status_code == 400
    assert answer.json()["Code"] == "SignatureDoesNotMatch"


async def test_an_sms_gateway_that_is_down_is_a_503_and_leaves_no_code_or_cap_behind(prod, vendor):
    phone = random_phone()
    ip = {"X-Forwarded-For": random_ip()}
    await vendor.fault("SendSms", "error")
    down = await prod.post("/api/v1/auth/otp", json={"phone": phone}, headers=ip)
    assert down.status_code == 503, down.text
    assert down.json()["type"].endswith("/dependency-unavailable")
    pk = prod.app.state.identity.otp._phone_key(phone)
    assert await prod.app.state.services.redis.exists(f"otp:code:{pk}") == 0
    # the owner asks again at once (no cooldown was spent on a text that never left) and gets in
    await login(prod, vendor, phone)


async def test_a_slow_sms_gateway_is_a_503_within_the_timeout(prod, vendor):
    await vendor.fault("SendSms", "timeout", delay_s=10)
    slow = await prod.post(
        "/api/v1/auth/otp", json={"phone": random_phone()}, headers={"X-Forwarded-For": random_ip()}
    )
    assert slow.status_code == 503, slow.text


# -- the registry: two factors and three -----------------------------------------------------------------------------


async def test_the_registry_matches_name_and_id_number_and_the_carriers_the_phone(vendor):
    registry = AliyunPopulationRegistry(vendor.settings())
    name, id_number = DEMO_PEOPLE[2]
    phone = DEMO_PHONES[id_number][0]
    assert await registry.matches(None, name, id_number)  # type: ignore[arg-type]
    assert not await registry.matches(None, "某某", id_number)  # type: ignore[arg-type]
    assert not await registry.matches(None, name, random_id_number())  # type: ignore[arg-type]
    assert await registry.phone_belongs(None, name, id_number, phone)  # type: ignore[arg-type]
    assert not await registry.phone_belongs(None, name, id_number, DEMO_PHONES[DEMO_PEOPLE[3][1]][0])  # type: ignore[arg-type]
    assert not await registry.phone_belongs(None, name, id_number, random_phone())  # type: ignore[arg-type]


async def test_real_name_in_production_needs_the_vendors_two_and_three_factor_checks(prod, vendor):
    me = await login(prod, vendor)
    name, id_number = "钱七", random_id_number()
    await vendor.enrol(name, id_number, [random_phone()])  # the carriers know another phone of theirs
    not_theirs = await prod.post(
        "/api/v1/me/real-name", json={"name": name, "id_number": id_number}, headers=bearer(me)
    )
    assert not_theirs.status_code == 422 and not_theirs.json()["type"].endswith("/phone-not-registered")
    wrong_name = await prod.post(
        "/api/v1/me/real-name", json={"name": "钱八", "id_number": id_number}, headers=bearer(me)
    )
    assert wrong_name.status_code == 422 and wrong_name.json()["type"].endswith("/real-name-mismatch")
    await vendor.enrol(name, id_number, [me["phone"]])
    verified = await prod.post(
        "/api/v1/me/real-name", json={"name": name, "id_number": id_number}, headers=bearer(me)
    )
    assert verified.status_code == 200, verified.text


async def test_a_registry_that_is_down_is_a_503_that_costs_no_attempt_and_verifies_nothing(prod, vendor):
    me = await login(prod, vendor)
    name, id_number = "孙九", random_id_number()
    await vendor.enrol(name, id_number, [me["phone"]])
    redis = prod.app.state.services.redis
    for action in ("Id2MetaVerify", "Mobile3MetaSimpleVerify"):
        await vendor.fault(action, "error")
        down = await prod.post(
            "/api/v1/me/real-name", json={"name": name, "id_number": id_number}, headers=bearer(me)
        )
        assert down.status_code == 503, down.text
        assert (await prod.get("/api/v1/me", headers=bearer(me))).json()["level"] == "L1"
    assert int(await redis.get(f"realname:tries:{me['resident_id']}") or 0) == 0  # both given back
    verified = await prod.post(
        "/api/v1/me/real-name", json={"name": name, "id_number": id_number}, headers=bearer(me)
    )
    assert verified.status_code == 200, verified.text


# -- face verification -----------------------------------------------------------------------------------------------


async def _claim(prod: ApiClient, me: dict[str, Any], name: str, id_number: str) -> str:
    started = await prod.post(
        "/api/v1/me/face-verification/sessions",
        json={"name": name, "id_number": id_number, "meta_info": META_INFO},
        headers=bearer(me),
    )
    assert started.status_code == 200, started.text
    assert started.json()["provider"] == "aliyun"
    return str(started.json()["session_id"])


async def _confirm(
    prod: ApiClient, me: dict[str, Any], session_id: str, result: str = APP_RESULT_OK
) -> httpx.Response:
    return await prod.post(
        "/api/v1/me/face-verification",
        json={"session_id": session_id, "result_token": result},
        headers=bearer(me),
    )


async def test_a_face_verification_that_the_vendor_passed_makes_l3(prod, vendor):
    me = await login(prod, vendor)
    name, id_number = "周十", random_id_number()
    await vendor.enrol(name, id_number, [], face="pass")
    certify_id = await _claim(prod, me, name, id_number)
    await vendor.control("POST", f"/_sandbox/verifications/{certify_id}/scan")
    confirmed = await _confirm(prod, me, certify_id)
    assert confirmed.status_code == 200 and confirmed.json()["level"] == "L3", confirmed.text
    assert (await vendor.control("GET", f"/_sandbox/verifications/{certify_id}"))["described"] == 1
    again = await _confirm(prod, me, certify_id)  # one confirmation per session
    assert again.status_code == 422


async def test_the_apps_result_token_alone_proves_nothing(prod, vendor):
    me = await login(prod, vendor)
    name, id_number = "吴一", random_id_number()
    await vendor.enrol(name, id_number, [], face="pass")
    certify_id = await _claim(prod, me, name, id_number)
    # the app claims success (the face SDK's code 1000) but never scanned a face: the vendor says no
    forged = await _confirm(prod, me, certify_id, result=APP_RESULT_OK)
    assert forged.status_code == 422 and forged.json()["type"].endswith("/liveness-failed")
    assert (await vendor.control("GET", f"/_sandbox/verifications/{certify_id}"))["described"] == 1
    assert (await prod.get("/api/v1/me", headers=bearer(me))).json()["level"] == "L1"


async def test_a_face_that_does_not_match_fails(prod, vendor):
    me = await login(prod, vendor)
    name, id_number = "郑二", random_id_number()
    await vendor.enrol(name, id_number, [], face="pass")
    certify_id = await _claim(prod, me, name, id_number)
    await vendor.control("POST", f"/_sandbox/verifications/{certify_id}/scan", {"outcome": "fail"})
    failed = await _confirm(prod, me, certify_id)
    assert failed.status_code == 422 and failed.json()["type"].endswith("/liveness-failed")


async def test_an_expired_face_verification_fails(prod, vendor):
    me = await login(prod, vendor)
    name, id_number = "王三", random_id_number()
    await vendor.enrol(name, id_number, [], face="pass")
    certify_id = await _claim(prod, me, name, id_number)
    await vendor.control("POST", f"/_sandbox/verifications/{certify_id}/scan")
    await vendor.control("POST", f"/_sandbox/verifications/{certify_id}/expire")
    expired = await _confirm(prod, me, certify_id)
    assert expired.status_code == 422 and expired.json()["type"].endswith("/liveness-failed")


async def test_another_residents_session_is_not_confirmed_for_me(prod, vendor):
    owner, other = await login(prod, vendor), await login(prod, vendor)
    name, id_number = "冯四", random_id_number()
    await vendor.enrol(name, id_number, [], face="pass")
    certify_id = await _claim(prod, owner, name, id_number)
    await vendor.control("POST", f"/_sandbox/verifications/{certify_id}/scan")
    stolen = await _confirm(prod, other, certify_id)
    assert stolen.status_code == 422
    assert (await _confirm(prod, owner, certify_id)).status_code == 200


async def test_the_face_vendor_needs_the_devices_meta_info(prod, vendor):
    me = await login(prod, vendor)
    name, id_number = "陈五", random_id_number()
    await vendor.enrol(name, id_number, [])
    started = await prod.post(
        "/api/v1/me/face-verification/sessions",
        json={"name": name, "id_number": id_number},
        headers=bearer(me),
    )
    assert started.status_code == 400 and "meta_info" in started.text


async def test_a_face_vendor_that_is_down_is_a_503_and_the_session_survives_it(prod, vendor):
    me = await login(prod, vendor)
    name, id_number = "褚六", random_id_number()
    await vendor.enrol(name, id_number, [], face="pass")
    await vendor.fault("InitFaceVerify", "error")
    down = await prod.post(
        "/api/v1/me/face-verification/sessions",
        json={"name": name, "id_number": id_number, "meta_info": META_INFO},
        headers=bearer(me),
    )
    assert down.status_code == 503, down.text
    certify_id = await _claim(prod, me, name, id_number)
    await vendor.control("POST", f"/_sandbox/verifications/{certify_id}/scan")
    await vendor.fault("DescribeFaceVerify", "error")
    assert (await _confirm(prod, me, certify_id)).status_code == 503
    assert (await prod.get("/api/v1/me", headers=bearer(me))).json()["level"] == "L1"
    # nothing was spent: once the vendor is back the same session confirms
    confirmed = await _confirm(prod, me, certify_id)
    assert confirmed.status_code == 200 and confirmed.json()["level"] == "L3", confirmed.text


@pytest.mark.parametrize("gateway", ["up", "down for the first notice"])
async def test_a_takeover_tells_both_phones_through_their_templates(prod, vendor, gateway):
    holder, claimant = await login(prod, vendor), await login(prod, vendor)
    name, id_number = "蒋七", random_id_number()
    await vendor.enrol(name, id_number, [holder["phone"]], face="pass")
    real_named = await prod.post(
        "/api/v1/me/real-name", json={"name": name, "id_number": id_number}, headers=bearer(holder)
    )
    assert real_named.status_code == 200, real_named.text
    certify_id = await _claim(prod, claimant, name, id_number)
    await vendor.control("POST", f"/_sandbox/verifications/{certify_id}/scan")
    if gateway != "up":
        await vendor.fault("SendSms", "error")  # the claimant's notice goes first
    taken = await _confirm(prod, claimant, certify_id)
    assert taken.status_code == 200 and taken.json()["identity"] == "taken-over", taken.text
    assert (await vendor.messages(holder["phone"]))[-1]["template_code"] == TEMPLATES["taken"]
    claimed = [m["template_code"] for m in await vendor.messages(claimant["phone"])]
    assert (TEMPLATES["claimed"] in claimed) == (gateway == "up")


async def test_dev_on_the_aliyun_connectors_builds_no_outbox_and_its_dev_routes_say_so(settings, vendor):
    dev = msgspec.structs.replace(
        settings,
        sms_backend="aliyun",
        registry_backend="aliyun",
        liveness_backend="aliyun",
        aliyun=vendor.settings(),
    )
    async with serving(dev, client_port=50402) as api:
        assert api.app.state.identity.dev_outbox is None
        outbox = await api.get("/api/v1/dev/outbox", params={"phone": "13800000001"})
        assert outbox.status_code == 404 and "dev outbox" in outbox.json()["detail"]
        liveness = await api.post("/api/v1/dev/liveness/anything", json={"outcome": "pass"})
        assert liveness.status_code == 404
