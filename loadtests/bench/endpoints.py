"""What the bench loads and what it asks of the rows: endpoints, the organisations whose machine credentials
sign the verify requests, the HTTP rows and their goals (ratios to the trivial endpoint)."""

from __future__ import annotations

GOAL_ISSUE = 0.40
GOAL_VERIFY = 0.25
GOAL_OFFLINE = 0.90
GOAL_MINI_LOGIN = 0.25
# One login's token endpoint (issue 15: at least 25% of ping): the authorization-code exchange.
GOAL_TOKEN = 0.25

VERIFY_PATH = "/api/v1/verify"
ISSUE_PATH = "/api/v1/codes/personal"
PING_PATH = "/api/v1/ping"
MINI_LOGIN_PATH = "/api/v1/mini-programs/wechat/login"
TOKEN_PATH = "/oidc/token"  # noqa: S105 - a path, not a secret
AUTHORIZE_PATH = "/oidc/authorize"
TILES_PATH = "/api/v1/tiles"
IMPRESSIONS_PATH = "/api/v1/tiles/impressions"
HOME_PATH = "/api/v1/home"
HOLD_PATH = "/api/v1/tickets/holds"
# The demo tile the open row opens (city-wide, L2: the bench's residents are real-named).
OPENED_TILE = "公积金查询"
HOSPITAL = "泰州市人民医院"  # verify:medical, verify:health
METRO = "泰州地铁运营有限公司"  # verify:transit
VENUE = "泰州市体育中心场馆运营有限公司"  # verify:event


PING_ROW = "GET /api/v1/ping"
ISSUE_ROW = "POST /api/v1/codes/personal"
TRANSIT_ROW = "POST /api/v1/verify transit (fresh server codes)"
HEALTH_ROW = "POST /api/v1/verify health (server codes)"
DEVICE_ROW = "POST /api/v1/verify health (device codes)"
# Entry with the one code (issue 17): server codes in the event scene at a venue's gate. The goal is the verify rows'.
# Until a seller's Admissions provider knows the bench's occasion the answer is no-ticket (the reasons column says).
EVENT_ROW = "POST /api/v1/verify event (server codes)"
MINI_ROW = "POST /api/v1/mini-programs/wechat/login (linked)"
TOKEN_ROW = "POST /oidc/token (code exchange)"  # noqa: S105 - a row name
# Issue 16's hot paths beside the home: a resident opening a tile (recorded, one statement) and the impressions of
# a list of tiles (Redis counters, one pipeline). No goal yet: printed as ratios to ping.
OPEN_ROW = "POST /api/v1/tiles/{id}/open"
IMPRESSIONS_ROW = "POST /api/v1/tiles/impressions (4 tiles)"
# Issue 17's buy endpoint: a resident holds a ticket for themself (one statement, the class row's
# conditional UPDATE first). Goal: at least 25% of ping.
HOLD_ROW = "POST /api/v1/tickets/holds (the buyer, one ticket)"
GOAL_HOLD = 0.25
# The resident's home (issue 16: warm, no PostgreSQL; goal as for issuing a code).
HOME_ROW = "GET /api/v1/home"
GOAL_HOME = 0.40
ROWS = {
    PING_ROW: "ping",
    ISSUE_ROW: "issue",
    TRANSIT_ROW: "transit",
    HEALTH_ROW: "health",
    DEVICE_ROW: "device",
    EVENT_ROW: "event",
    MINI_ROW: "mini-login",
    TOKEN_ROW: "token",
    OPEN_ROW: "tile-open",
    IMPRESSIONS_ROW: "impressions",
    HOME_ROW: "home",
    HOLD_ROW: "hold",
}


def goal(name: str) -> float | None:
    if name == MINI_ROW:
        return GOAL_MINI_LOGIN
    if name == TOKEN_ROW:
        return GOAL_TOKEN
    if name == HOME_ROW:
        return GOAL_HOME
    if name == HOLD_ROW:
        return GOAL_HOLD
    return GOAL_ISSUE if name == ISSUE_ROW else GOAL_VERIFY if "verify" in name else None
