"""The OpenAPI document is the contract: every operation declares its request and response schemas, and
schemathesis, driving every operation as a resident with every staff role and as an organisation with every scope,
gets no answer the document does not declare (and no 500)."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import hypothesis
import msgspec
import schemathesis
from hypothesis import HealthCheck, given
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import status_code_conformance

from app_backend.identity.auth import AUDITOR, OPS_ADMIN, OPS_REVIEWER
from app_backend.identity.repository import ResidentRepository
from app_backend.organisations.schemas import KNOWN_SCOPES, SCOPES_BY_KIND
from app_backend.organisations.signing import sign_request
from tests.conftest import serving
from tests.helpers import login, machine_credential

_EXAMPLES = 50
_BASE = "http://testserver.local"


def _operations(client: Any) -> list[tuple[str, str, dict[str, Any]]]:
    document = client.app.openapi_schema.to_schema()
    return [
        (method.upper(), path, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if isinstance(operation, dict) and "responses" in operation
    ]


def test_every_operation_declares_its_success_response(client):
    missing = []
    for method, path, operation in _operations(client):
        for status, response in operation["responses"].items():
            if not status.startswith("2") or status == "204":
                continue
            schemas = [media.get("schema") for media in response.get("content", {}).values()]
            if not schemas or any(schema in (None, {}) for schema in schemas):
                missing.append(f"{method} {path} {status}")
    assert missing == []


def test_every_operation_with_a_body_declares_its_request_schema(client):
    missing = [
        f"{method} {path}"
        for method, path, operation in _operations(client)
        if "requestBody" in operation
        and any(media.get("schema") in (None, {}) for media in operation["requestBody"]["content"].values())
    ]
    assert missing == []


# The gates' and verifiers' endpoints are signed by a verifier operator, every other machine endpoint by a
# department: between them they hold every scope (no one kind of organisation may, SCOPES_BY_KIND).
_OPERATOR_PATHS = ("/api/v1/gates", "/api/v1/verify")


async def _caller(client: Any, services: Any) -> dict[str, str]:
    """A resident holding every staff role, and organisation credentials holding every scope between them."""
    tokens = await login(client)
    async with services.pool.acquire() as conn:
        for role in (OPS_ADMIN, OPS_REVIEWER, AUDITOR):
            await ResidentRepository().grant_role(conn, uuid.UUID(tokens["resident_id"]), role, "test")
    department = await machine_credential(
        client, services, sorted(SCOPES_BY_KIND["department"]), kind="department"
    )
    operator = await machine_credential(
        client, services, sorted(SCOPES_BY_KIND["verifier_operator"]), kind="verifier_operator"
    )
    assert set(SCOPES_BY_KIND["department"]) | set(SCOPES_BY_KIND["verifier_operator"]) == KNOWN_SCOPES
    return {
        "bearer": tokens["access_token"],
        "key_id": department["key_id"],
        "secret": department["secret"],
        "operator_key_id": operator["key_id"],
        "operator_secret": operator["secret"],
    }


def _request(case: Any, caller: dict[str, str]) -> dict[str, Any]:
    sent = case.as_transport_kwargs(base_url=_BASE)
    raw = b""
    if "json" in sent:
        raw = json.dumps(sent.pop("json")).encode()
    elif isinstance(sent.get("data"), (bytes, str)):
        data = sent.pop("data")
        raw = data.encode() if isinstance(data, str) else data
    headers = {k: str(v) for k, v in (sent.get("headers") or {}).items()}
    security = case.operation.definition.raw.get("security") or []
    names = {name for requirement in security for name in requirement}
    if "bearer" in names:
        headers["Authorization"] = f"Bearer {caller['bearer']}"
    request = {"method": sent["method"], "url": sent["url"], "params": sent.get("params"), "content": raw}
    if "machine" in names:
        # Signed as an integrator's client does: the path and query exactly as sent, the body as sent.
        probe = httpx_request(request)
        target = probe.url.raw_path.decode()
        key_id, secret = (
            (caller["operator_key_id"], caller["operator_secret"])
            if target.startswith(_OPERATOR_PATHS)
            else (caller["key_id"], caller["secret"])
        )
        headers.update(sign_request(key_id, secret, request["method"], target, raw))
    request["headers"] = headers
    return request


def httpx_request(request: dict[str, Any]) -> Any:
    import httpx

    return httpx.Request(
        request["method"], request["url"], params=request["params"], content=request["content"]
    )


async def test_schemathesis_finds_no_undocumented_answer(settings):
    # An app of its own whose rate limits the fuzzing does not reach: behind a limit every answer is a 429.
    unlimited = msgspec.structs.replace(
        settings, rate_resident_per_minute=1_000_000, rate_organisation_per_second=1_000_000
    )
    async with serving(unlimited, client_port=50003) as client:
        await _fuzz(client, client.app.state.services)


async def _fuzz(client: Any, services: Any) -> None:
    caller = await _caller(client, services)
    schema = schemathesis.openapi.from_dict(client.app.openapi_schema.to_schema())
    loop = asyncio.get_running_loop()
    failures: list[str] = []

    def drive(operation: Any) -> None:
        @hypothesis.settings(
            max_examples=_EXAMPLES,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
            phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
        )
        @given(case=operation.as_strategy())
        def run(case: Any) -> None:
            who = caller
            if (
                operation.path == "/api/v1/auth/logout"
            ):  # ends the session it is called with: not the caller's
                fresh = asyncio.run_coroutine_threadsafe(login(client), loop).result(timeout=30)
                who = {**caller, "bearer": fresh["access_token"]}
            request = _request(case, who)
            response = asyncio.run_coroutine_threadsafe(client.request(**request), loop).result(timeout=30)
            case.validate_response(response, checks=[status_code_conformance, not_a_server_error])

        try:
            run()
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # every operation is tried; the failures are reported together
            failures.append(f"{operation.method.upper()} {operation.path}: {exc}"[:700])

    for result in schema.get_all_operations():
        operation = result.ok()
        await asyncio.to_thread(drive, operation)
    assert failures == [], "\n\n".join(failures)
