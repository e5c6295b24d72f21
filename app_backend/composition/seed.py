"""Demo data for `make run`: residents, registries, organisations with credentials. Idempotent."""

from __future__ import annotations

from typing import Any

from app_backend.composition.wiring import Services
from app_backend.enterprises.repository import EnterpriseRepository
from app_backend.identity.repository import ResidentRepository
from app_backend.identity.validators import id_number_check_char, uscc_check_char
from app_backend.kernel.actors import Actor
from app_backend.oidc.schemas import ClientRegistration
from app_backend.oidc.service import OidcService
from app_backend.organisations.repository import OrganisationRepository
from app_backend.tiles.schemas import EntryPoints, MiniProgramEntry, ServiceHours, ServiceWindow, TileContent
from app_backend.tiles.service import Caller, TileService

SEED_ACTOR = Actor("cli", "seed")


def _id(first17: str) -> str:
    return first17 + id_number_check_char(first17)


def _uscc(first17: str) -> str:
    return first17 + uscc_check_char(first17)


# Registry people (dev population registry). Real-name (L2) also needs the carriers' three-factor check, so each
# person has a phone the dev carriers register to them (DEMO_PHONES): log in with that phone to real-name as them.
# Any other phone can claim a person by face verification instead (L3, the dev liveness vendor passes on request).
DEMO_PEOPLE = [
    ("张三", "11010519491231002X"),
    ("王芳", _id("32120219900101234")),
    ("李强", _id("32120419850715331")),
    ("陈静", _id("32128319920303402")),
    ("刘洋", _id("32120219881111121")),
]
DEMO_PHONES = {  # ID number -> the phones the dev carriers have registered to that person
    DEMO_PEOPLE[0][1]: ["13800000010"],
    DEMO_PEOPLE[1][1]: ["13800000001"],
    DEMO_PEOPLE[2][1]: ["13800000012"],
    DEMO_PEOPLE[3][1]: ["13800000013"],
    DEMO_PEOPLE[4][1]: ["13800000014"],
}
DEMO_ENTERPRISES = [  # name, credit code, legal representative's ID number
    ("泰州示范科技有限公司", _uscc("91321200MA1XK3T7Q"), DEMO_PEOPLE[1][1]),
    ("泰州凤城河文旅有限公司", _uscc("91321202MA20B8L4P"), DEMO_PEOPLE[2][1]),
]
# A registry code that fails the checksum, as real registries have: admitted only through an audited override.
DEMO_BAD_CHECKSUM_USCC = "91321291MA1YY9N6C" + ("0" if uscc_check_char("91321291MA1YY9N6C") != "0" else "1")
DEMO_RESIDENT_PHONE = "13800000001"
# The demo rider's WeChat papay contract: `tzt serve` registers it with the sandbox at every start.
DEMO_CONTRACT_CODE = "TZTDEMOCONTRACT0001"
DEMO_CONTRACT_ID = "200000000000000000000000DEMO1"
DEMO_STAFF_PHONE = "13900000000"
SERVICE_OFFICE = "泰州市政务服务管理办公室"  # the owner of the demo's city-service tiles
DEMO_ORGANISATIONS = [  # name, kind, location, scopes
    ("泰州市卫生健康委员会", "department", "泰州市海陵区", ["feeds:health", "tiles:manage"]),
    ("泰州市医疗保障局", "department", "泰州市海陵区", ["feeds:insurance"]),
    (
        "泰州地铁运营有限公司",
        "verifier_operator",
        "泰州地铁1号线",
        ["verify:transit", "gates:sync", "gates:taps", "settlements:read"],
    ),
    ("泰州市人民医院", "verifier_operator", "泰州市海陵区", ["verify:medical", "verify:health"]),
    (
        "泰州示范超市",
        "merchant",
        "泰州市海陵区坡子街",
        ["verify:health", "payments:refund", "settlements:read"],
    ),
    ("泰州通运营中心", "operations", "泰州市", ["verify:enterprise"]),
    # A venue's gates: entry with the one code (the event scene), online and with attendee lists offline.
    ("泰州市体育中心场馆运营有限公司", "verifier_operator", "泰州市体育中心", ["verify:event", "gates:sync"]),
    # The city's one-stop government service office: it plugs the demo's city-service tiles in.
    (SERVICE_OFFICE, "department", "泰州市海陵区", ["tiles:manage", "messages:send"]),
    # The provincial games' organiser: publishes the schedule, sells the tickets (the payee) and refunds them.
    (
        "泰州市体育局",
        "department",
        "泰州市海陵区",
        ["events:publish", "verify:event", "payments:refund", "settlements:read"],
    ),
]


async def _resident(services: Services, conn: Any, phone: str, person: tuple[str, str] | None) -> Any:
    cipher = services.cipher
    repo = ResidentRepository()
    row, _ = await repo.get_or_create_by_phone(
        conn, cipher.lookup_hash("resident.phone", phone), cipher.encrypt("resident.phone", phone)
    )
    if person and row.level < 2:
        name, id_number = person
        await repo.set_real_name(
            conn,
            row.id,
            cipher.encrypt("resident.name", name),
            cipher.encrypt("resident.id_number", id_number),
            cipher.lookup_hash("resident.id_number", id_number),
        )
    return row.id


async def _seed_code_facts(services: Services, conn: Any, resident_id: Any) -> None:
    """The demo resident rides (an active withholding agreement), is green and insured; a signing key exists."""
    from code_service.feeds.repository import FeedRepository

    await services.codes.keys.ensure(conn)
    if await services.payments.transit.may_ride(conn, resident_id) == (False, "no-agreement"):
        await services.payments.transit.grant_agreement(
            conn,
            resident_id,
            "wechat",
            agreement_no=DEMO_CONTRACT_ID,
            external_agreement_no=DEMO_CONTRACT_CODE,
        )
    health_dept = await OrganisationRepository().get_by_name(conn, DEMO_ORGANISATIONS[0][0])
    insurance_dept = await OrganisationRepository().get_by_name(conn, DEMO_ORGANISATIONS[1][0])
    person = services.cipher.lookup_hash("resident.id_number", DEMO_PEOPLE[1][1])
    assert health_dept is not None and insurance_dept is not None  # seeded before the code facts
    await FeedRepository().upsert_health(conn, person, "green", health_dept.id)
    await FeedRepository().upsert_insurance(conn, person, True, "城镇职工", insurance_dept.id)


# The demo department's app for one login (docs/api.md, "One login (OIDC)"): a confidential client of the health
# commission, its secret written to the demo credentials file under "one_login".
DEMO_ONE_LOGIN_REDIRECT = "http://localhost:8765/callback"


async def _seed_one_login(services: Services, conn: Any, known: dict[str, Any] | None) -> dict[str, Any]:
    oidc = services.platform.get(OidcService)
    if known and await oidc.active_client(conn, known.get("client_id", "")) is not None:
        return known
    department = await OrganisationRepository().get_by_name(conn, DEMO_ORGANISATIONS[0][0])
    assert department is not None  # seeded before
    registered = await oidc.register_client(
        conn,
        ClientRegistration(
            organisation_id=department.id,
            name="健康服务（演示）",
            purpose="核验居民身份，查询本人健康档案",
            client_type="confidential",
            token_endpoint_auth_method="client_secret_basic",  # noqa: S106 - a method name, not a secret
            redirect_uris=[DEMO_ONE_LOGIN_REDIRECT],
            post_logout_redirect_uris=["http://localhost:8765/logged-out"],
            scopes=["openid", "profile", "phone", "real_name", "id_number"],
        ),
        SEED_ACTOR,
    )
    return {
        "organisation": department.name,
        "client_id": registered.client.client_id,
        "client_secret": registered.client_secret,
        "redirect_uri": DEMO_ONE_LOGIN_REDIRECT,
        "discovery": f"{services.settings.public_base_url}/.well-known/openid-configuration",
    }


# Live tiles of the demo departments (docs/api.md, "Service tiles"): the government service office's city-wide
# services, and the health commission's records, which log residents in through its one-login client.
_WORKDAYS = ServiceHours(
    windows=[ServiceWindow(days=[1, 2, 3, 4, 5], opens="08:30", closes="17:30")], note="节假日除外"
)
DEMO_TILES: list[tuple[str, TileContent]] = [
    (
        SERVICE_OFFICE,
        TileContent(
            name="公积金查询",
            icon="https://static.taizhoutong.cn/icons/housing-fund.png",
            category="housing_fund",
            description="查询住房公积金缴存、余额和提取记录",
            keywords=["住房公积金", "公积金余额", "提取"],
            entry=EntryPoints(
                h5_url="https://h5.taizhoutong.cn/gjj/query",
                wechat=MiniProgramEntry("wx5d0c3e8b9a417f26", "pages/gjj/index"),
            ),
            regions=["321200"],
            min_level="L2",
        ),
    ),
    (
        SERVICE_OFFICE,
        TileContent(
            name="社保缴费",
            icon="https://static.taizhoutong.cn/icons/social-security.png",
            category="social_security",
            description="城乡居民养老保险、医疗保险缴费",
            keywords=["养老保险", "医保缴费", "社会保险"],
            entry=EntryPoints(
                h5_url="https://h5.taizhoutong.cn/shebao/pay", app_route="/services/social-security"
            ),
            regions=["321200"],
            min_level="L2",
        ),
    ),
    (
        SERVICE_OFFICE,
        TileContent(
            name="不动产登记",
            icon="https://static.taizhoutong.cn/icons/property.png",
            category="property",
            description="不动产登记预约、进度查询和证明打印",
            keywords=["房产证", "产权证明", "过户"],
            entry=EntryPoints(h5_url="https://h5.taizhoutong.cn/bdc/index"),
            regions=["321202", "321203", "321204"],
            min_level="L3",
            service_hours=_WORKDAYS,
        ),
    ),
]


async def _seed_tiles(services: Services, conn: Any, one_login: dict[str, Any]) -> None:
    """The demo tiles, live: created, submitted and published by their department, approved by the seed."""
    tiles = services.platform.get(TileService)
    orgs = OrganisationRepository()
    health = await orgs.get_by_name(conn, DEMO_ORGANISATIONS[0][0])
    assert health is not None  # seeded before
    records = TileContent(
        name="健康档案查询",
        icon="https://static.taizhoutong.cn/icons/health-records.png",
        category="medical",
        description="查询本人电子健康档案、体检和就诊记录（一次认证，免登录进入）",
        keywords=["电子健康档案", "体检报告", "就诊记录"],
        entry=EntryPoints(h5_url=one_login["redirect_uri"].rsplit("/", 1)[0] + "/"),
        regions=["321200"],
        min_level="L2",
        oidc_client_id=one_login["client_id"],
    )
    reviewer = Caller.operations(SEED_ACTOR)
    for organisation_name, content in [*DEMO_TILES, (health.name, records)]:
        org = await orgs.get_by_name(conn, organisation_name)
        assert org is not None  # seeded before
        department = Caller.department(org.id, SEED_ACTOR)
        if any(t.name == content.name for t in await tiles.tiles(conn, department)):
            continue
        tile = await tiles.create(conn, department, org.name, content)
        await tiles.submit(conn, department, tile.id, 1)
        await tiles.approve(conn, reviewer, tile.id, 1, "demo")
        await tiles.publish(conn, department, tile.id, 1)


async def seed_demo(services: Services, known_credentials: dict[str, Any]) -> dict[str, Any]:
    """Returns the demo credentials by organisation name, reusing `known_credentials` still valid."""
    stored = dict(known_credentials)
    orgs = OrganisationRepository()
    async with services.pool.acquire() as conn, conn.transaction():
        for name, id_number in DEMO_PEOPLE:
            await services.population_registry.enrol(conn, name, id_number, DEMO_PHONES[id_number])  # type: ignore[attr-defined]
        for name, uscc, rep in DEMO_ENTERPRISES:
            await services.legal_entities.enrol(conn, uscc, name, rep)  # type: ignore[attr-defined]
        await services.legal_entities.enrol(conn, DEMO_BAD_CHECKSUM_USCC, "泰州老字号茶社", DEMO_PEOPLE[3][1])  # type: ignore[attr-defined]

        resident_id = await _resident(services, conn, DEMO_RESIDENT_PHONE, DEMO_PEOPLE[1])
        staff_id = await _resident(services, conn, DEMO_STAFF_PHONE, None)
        await ResidentRepository().grant_role(conn, staff_id, "ops_admin", "cli:seed")
        enterprises = EnterpriseRepository()
        created = await enterprises.create(
            conn, DEMO_ENTERPRISES[0][1], DEMO_ENTERPRISES[0][0], False, resident_id
        )
        if created is not None:
            await enterprises.add_member(conn, created.id, resident_id, "admin", None)

        for name, kind, location, scopes in DEMO_ORGANISATIONS:
            org = await orgs.get_by_name(conn, name) or await orgs.create(conn, name, kind, location)
            assert org is not None  # created unless it existed, inside this one transaction
            known = stored.get(name)
            if (
                known
                and set(scopes) <= set(known.get("scopes", []))
                and await orgs.credential_for_auth(conn, known["key_id"]) is not None
            ):
                continue  # still valid and holding every scope the demo gives it now
            issued = await services.organisations.issue_credential(conn, org.id, scopes, "demo", SEED_ACTOR)
            stored[name] = {
                "organisation_id": str(org.id),
                "kind": kind,
                "key_id": issued.key_id,
                "secret": issued.secret,
                "scopes": issued.scopes,
            }
        await _seed_code_facts(services, conn, resident_id)
        stored["one_login"] = await _seed_one_login(services, conn, stored.get("one_login"))
        await _seed_tiles(services, conn, stored["one_login"])
        await services.audit.record(conn, SEED_ACTOR, "seed.demo")
    return stored
