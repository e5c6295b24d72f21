"""What a department learns: a pairwise `sub` of its own, only the claims the resident consented to (sensitive
ones each on their own), `acr` the level with step-up when a department asks for more; what the resident sees:
consents to list and withdraw, and every release in the data-access history."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from tests.app_backend.oidc.department import (
    app_for,
    authorize,
    browser,
    consent_form,
    department,
    discover,
    log_in,
    open_authorization,
    registered,
    verified_claims,
)
from tests.conftest import ApiClient
from tests.helpers import bearer, login, real_named

ALL = "openid profile phone real_name id_number"


async def _sub(client: ApiClient, reg: dict, resident: dict) -> str:
    async with app_for(client, reg) as app:
        meta = await discover(app, client)
        token = await log_in(client, app, meta, resident)
        return str((await verified_claims(app, meta, token["id_token"]))["sub"])


async def test_two_departments_see_different_subjects_for_one_resident(client: ApiClient) -> None:
    resident = await login(client)
    health = await registered(client)
    transport = await registered(client)
    hall = await registered(client, dept=health["department"])  # a second app of the same department
    sectored = await registered(
        client, dept=transport["department"], sector_identifier_uri="https://sector.example.cn/uris.json"
    )
    subs = {
        "health": await _sub(client, health, resident),
        "transport": await _sub(client, transport, resident),
        "hall": await _sub(client, hall, resident),
        "sectored": await _sub(client, sectored, resident),
    }
    assert subs["health"] != subs["transport"] != subs["sectored"] != subs["health"]
    assert subs["hall"] == subs["health"]  # one department, one sector
    assert resident["resident_id"] not in subs.values()
    assert subs["health"] == await _sub(client, health, resident)  # stable
    assert subs["health"] != await _sub(client, health, await login(client))


async def test_a_claim_never_consented_is_never_released(client: ApiClient) -> None:
    reg = await registered(client, scopes=["openid", "profile", "phone", "real_name", "id_number"])
    resident = await real_named(client, client.app.state.services, name="孙权")
    async with app_for(client, reg, scope=ALL) as app:
        meta = await discover(app, client)
        url, _ = app.create_authorization_url(meta["authorization_endpoint"], code_verifier="v" * 50)
        page = await browser(client).get(url, headers=bearer(resident))
        assert page.status_code == 200
        assert "身份证号码" in page.text and "手机号码" in page.text and "真实姓名" in page.text
        assert reg["department"]["name"] in page.text and reg["client"]["purpose"] in page.text
        _, boxes = consent_form(page.text)
        assert sorted(boxes) == ["id_number", "phone", "real_name"]  # sensitive: each its own box, unticked
        assert "checked" not in page.text
        # "同意" without ticking a sensitive box releases none of them.
        token = await log_in(client, app, meta, resident)
        assert set(token["scope"].split()) == {"openid", "profile"}
        info = (await app.get(meta["userinfo_endpoint"])).json()
        assert set(info) == {"sub", "name"} and info["name"] == "孙*"
        # Ticking one releases that one only, and it is remembered for the next login.
        token = await log_in(client, app, meta, resident, tick=("id_number",))
        info = (await app.get(meta["userinfo_endpoint"])).json()
        assert set(info) == {"sub", "name", "id_number"} and len(info["id_number"]) == 18
        answer = await open_authorization(client, app, meta, resident)
        assert answer.status_code == 200, "phone and real_name were never consented: the page asks again"
        _, boxes = consent_form(answer.text)
        assert sorted(boxes) == ["phone", "real_name"]
    # A department asking for a scope it was not registered for gets nothing of it.
    narrow = await registered(client, scopes=["openid", "profile"])
    async with app_for(client, narrow, scope=ALL) as app:
        meta = await discover(app, client)
        token = await log_in(client, app, meta, resident, tick=("phone", "id_number", "real_name"))
        assert set(token["scope"].split()) == {"openid", "profile"}
        assert set((await app.get(meta["userinfo_endpoint"])).json()) == {"sub", "name"}


async def test_an_l1_resident_has_no_name_to_release(client: ApiClient) -> None:
    reg = await registered(client)
    resident = await login(client)
    async with app_for(client, reg, scope=ALL) as app:
        meta = await discover(app, client)
        await log_in(client, app, meta, resident, tick=("phone", "real_name", "id_number"))
        info = (await app.get(meta["userinfo_endpoint"])).json()
        assert set(info) == {"sub", "phone_number", "phone_number_verified"}
        assert info["phone_number"] == resident["phone"]


async def test_a_department_asking_a_higher_level_sends_the_resident_to_step_up(client: ApiClient) -> None:
    reg = await registered(client)
    resident = await login(client)
    async with app_for(client, reg) as app:
        meta = await discover(app, client)
        answer, _, state = await authorize(client, app, meta, resident, acr_values="L2")
        assert answer.status_code == 302
        back = {k: v[0] for k, v in parse_qs(urlsplit(answer.headers["location"]).query).items()}
        assert back["error"] == "unmet_authentication_requirements" and back["state"] == state
        assert "L2" in back["error_description"]
        # A level the resident has is met; the lowest of several named is what is required.
        answer, _, _ = await authorize(client, app, meta, resident, acr_values="L1 L2")
        assert answer.status_code == 302 and "code=" in answer.headers["location"]
    named = await real_named(client, client.app.state.services)
    async with app_for(client, reg) as app:
        token = await log_in(client, app, meta, named, acr_values="L2")
        assert (await verified_claims(app, meta, token["id_token"]))["acr"] == "L2"
        answer, _, _ = await authorize(client, app, meta, named, acr_values="L3")
        assert "unmet_authentication_requirements" in answer.headers["location"]


async def test_denying_consent_and_prompt_none_answer_the_client(client: ApiClient) -> None:
    reg = await registered(client)
    resident = await login(client)
    async with app_for(client, reg) as app:
        meta = await discover(app, client)
        answer, _, _ = await authorize(client, app, meta, resident, decision="deny")
        assert "error=access_denied" in answer.headers["location"]
        url, _ = app.create_authorization_url(
            meta["authorization_endpoint"], code_verifier="v" * 50, prompt="none"
        )
        no_session = await browser(client).get(url)
        assert "error=login_required" in no_session.headers["location"]
        no_consent = await browser(client).get(url, headers=bearer(resident))
        assert "error=consent_required" in no_consent.headers["location"]


async def test_a_forged_consent_post_is_refused(client: ApiClient) -> None:
    reg = await registered(client)
    resident = await login(client)
    async with app_for(client, reg) as app:
        meta = await discover(app, client)
        agent = browser(client)
        url, _ = app.create_authorization_url(meta["authorization_endpoint"], code_verifier="v" * 50)
        page = await agent.get(url, headers=bearer(resident))
        hidden, _ = consent_form(page.text)
        forged = [(k, "forged" if k == "csrf" else v) for k, v in hidden] + [("decision", "allow")]
        answer = await agent.post("/oidc/authorize", data=dict(forged))
        assert answer.status_code == 400 and "csrf" in answer.text
        stranger = await browser(client).post("/oidc/authorize", data={**dict(hidden), "decision": "allow"})
        assert stranger.status_code == 400 and "location" not in stranger.headers


async def test_residents_list_and_withdraw_consents_and_see_every_release(client: ApiClient) -> None:
    reg = await registered(client)
    resident = await real_named(client, client.app.state.services, name="鲁肃")
    async with app_for(client, reg, scope="openid profile id_number") as app:
        meta = await discover(app, client)
        token = await log_in(client, app, meta, resident, tick=("id_number",))
        assert (await app.get(meta["userinfo_endpoint"])).status_code == 200
        consents = (await client.get("/api/v1/me/consents", headers=bearer(resident))).json()["consents"]
        assert [(c["client_id"], c["claims"]) for c in consents] == [
            (reg["client"]["client_id"], ["profile", "id_number"])
        ]
        assert consents[0]["organisation"] == reg["department"]["name"]
        history = (await client.get("/api/v1/me/data-access", headers=bearer(resident))).json()["releases"]
        assert [(r["via"], r["claims"]) for r in history] == [
            ("userinfo", ["sub", "profile", "id_number"]),
            ("id_token", ["sub", "acr"]),
        ]
        assert {r["organisation"] for r in history} == {reg["department"]["name"]}
        assert {r["purpose"] for r in history} == {reg["client"]["purpose"]}

        gone = await client.delete(
            f"/api/v1/me/consents/{reg['client']['client_id']}", headers=bearer(resident)
        )
        assert gone.status_code == 204
        assert (await client.get("/api/v1/me/consents", headers=bearer(resident))).json()["consents"] == []
        assert (await app.get(meta["userinfo_endpoint"])).status_code == 401  # its tokens stopped
        again = await client.delete(
            f"/api/v1/me/consents/{reg['client']['client_id']}", headers=bearer(resident)
        )
        assert again.status_code == 404 and again.json()["detail"].startswith("client_id:")
        answer = await open_authorization(client, app, meta, resident)
        assert answer.status_code == 200 and "授权登录" in answer.text  # asked again
        assert token["access_token"]
    other = await login(client)
    assert (await client.get("/api/v1/me/data-access", headers=bearer(other))).json() == {"releases": []}
    bad = await client.get("/api/v1/me/data-access", params={"limit": 0}, headers=bearer(other))
    assert bad.status_code == 400 and bad.json()["errors"][0]["field"] == "limit"


async def test_a_second_department_is_told_nothing_of_the_first(client: ApiClient) -> None:
    """Consents are per client: consenting to one department releases nothing to another."""
    resident = await real_named(client, client.app.state.services)
    first = await registered(client, dept=await department(client))
    second = await registered(client)
    async with app_for(client, first, scope="openid id_number") as app:
        meta = await discover(app, client)
        await log_in(client, app, meta, resident, tick=("id_number",))
    async with app_for(client, second, scope="openid id_number") as app:
        page = await open_authorization(client, app, meta, resident)
        assert (
            page.status_code == 200 and "身份证号码" in page.text
        )  # consented to the first, asked again here
        token = await log_in(client, app, meta, resident)
        assert token["scope"] == "openid"
        assert set((await app.get(meta["userinfo_endpoint"])).json()) == {"sub"}
