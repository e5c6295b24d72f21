"""Litestar requests as Authlib sees them, and Authlib's answers as Litestar responses: what Authlib's Flask and
Django integrations do for their frameworks (authlib/integrations/flask_oauth2/requests.py), for ours."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from authlib.oauth2.rfc6749 import OAuth2Payload, OAuth2Request
from litestar import Request, Response
from litestar.datastructures import Headers

AnyRequest = Request[Any, Any, Any]


class LitestarPayload(OAuth2Payload):
    """The query string and the form body together, as Flask's `request.values` gives them."""

    def __init__(self, query: list[tuple[str, str]], form: list[tuple[str, str]]) -> None:
        self._pairs = [*query, *form]
        self._data: dict[str, str] = {}
        for key, value in self._pairs:
            self._data.setdefault(key, value)

    @property
    def data(self) -> dict[str, str]:
        return self._data

    @property
    def datalist(self) -> defaultdict[str, list[str]]:
        values: defaultdict[str, list[str]] = defaultdict(list)
        for key, value in self._pairs:
            values[key].append(value)
        return values


class LitestarOAuth2Request(OAuth2Request):
    def __init__(
        self,
        method: str,
        uri: str,
        headers: Headers,
        query: list[tuple[str, str]],
        form: list[tuple[str, str]],
    ) -> None:
        super().__init__(method=method, uri=uri, headers=headers)
        self._args = dict(query)
        self._form: dict[str, str] = {}
        for key, value in form:
            self._form.setdefault(key, value)
        self.payload = LitestarPayload(query, form)

    @property
    def args(self) -> dict[str, str]:
        return self._args

    @property
    def form(self) -> dict[str, str]:
        return self._form


async def form_pairs(request: AnyRequest) -> list[tuple[str, str]]:
    """The urlencoded body's fields (none for any other body)."""
    if request.method != "POST":
        return []
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("application/x-www-form-urlencoded"):
        return []
    form = await request.form()
    return [(k, v) for k, v in form.multi_items() if isinstance(v, str)]


async def oauth2_request(request: AnyRequest, public_base_url: str) -> LitestarOAuth2Request:
    """The request as Authlib reads it. Its URI is the public one (behind the load balancer's TLS), which is what
    Authlib checks for transport security and what clients signed assertions for."""
    query = [(k, v) for k, v in request.query_params.multi_items()]
    path = request.url.path
    raw_query = request.scope.get("query_string", b"").decode("latin-1")
    uri = public_base_url.rstrip("/") + path + (f"?{raw_query}" if raw_query else "")
    return LitestarOAuth2Request(request.method, uri, request.headers, query, await form_pairs(request))


def protocol_response(status: int, body: Any, headers: list[tuple[str, str]] | None) -> Response[Any]:
    """Authlib's (status, body, headers) as a Litestar response: JSON bodies stay the protocol's own format
    (`{"error": …}`), not problem+json, since OAuth clients parse them."""
    header_map = dict(headers or [])
    media_type = header_map.pop("Content-Type", None) or header_map.pop("content-type", None)
    if isinstance(body, dict):
        return Response(body, status_code=status, headers=header_map, media_type="application/json")
    return Response(body or "", status_code=status, headers=header_map, media_type=media_type or "text/plain")
