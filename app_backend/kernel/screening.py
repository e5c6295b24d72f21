"""Input no handler should ever see is refused at the edge, once for every route, naming the field at fault.

Every request passes `screen_request` (the app's `before_request` hook) after routing and before any dependency:
before the request's transaction opens and before a machine request's signature is checked. It refuses with a 400
validation problem:

- a JSON body nested deeper than `MAX_JSON_DEPTH` (counted on the raw bytes, strings skipped, before anything
  decodes it: a decoder recurses, and about 950 levels in under 2 KB raised RecursionError);
- a control character in any text: a JSON string or object key, a query or path parameter. Control characters
  are Unicode's category Cc (C0, DEL and C1) except tab, line feed and carriage return, unpaired surrogates, and
  the invisible characters that make text read other than it is (bidirectional overrides, embeddings and isolates,
  line and paragraph separators, zero-width space, byte order mark).
  PostgreSQL stores no NUL at all, and none of them is text a resident or an integrator means to send;
- a JSON integer outside the 64-bit range every integer column and counter holds;
- a header value holding a C0 control character other than tab, or DEL (HTTP allows none).

The common case stays cheap: the body's raw bytes are searched once for anything suspect (an escaped control
character, a raw DEL or C1 character, a run of 19 digits); only on a hit is the body decoded and walked to name the
field (`subject`, `taps[3].line`). Screening here, rather than in each schema, covers every domain's strings,
today's and tomorrow's (docs/decisions/0013-input-screened-at-the-edge.md).

`malformed_path_parameter` names the path parameter that did not parse when routing found no route (a path id
that is not a UUID), so that the problem handler answers 400 naming it instead of a 404 naming nothing.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import msgspec
from litestar import Litestar, Request
from litestar.exceptions import ValidationException

MAX_JSON_DEPTH = 32
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
_MAX_REPORTED = 10

_CONTROL = re.compile(
    "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff"
    # Invisible characters that make stored text read other than it is (a payee's statement, a complaint):
    # bidirectional embeddings, overrides and isolates, line and paragraph separators, zero-width space, BOM.
    "\u200b\u2028\u2029\u202a-\u202e\u2066-\u2069\ufeff]"
)
# Raw C0 bytes inside a JSON string are malformed JSON (the decoder refuses them); escaped ones ("\\u00"), DEL,
# C1 (UTF-8 C2 80-9F) and runs of 19 digits are valid JSON and must be looked at. Plain substring searches, as a
# regular expression costs microseconds per verification; a hit that is harmless ("\\u00e9", a "©", a long
# number written as a string) only costs a walk that finds nothing.
_DIGITS_AS_ZERO = bytes.maketrans(b"123456789", b"000000000")
_NINETEEN_DIGITS = b"0" * 19
_HEADER_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_NOT_JSON_MEDIA = ("application/x-www-form-urlencoded", "multipart/form-data")
_TYPE_NAMES = {"UUID": "a UUID", "int": "an integer", "float": "a number", "date": "a date (YYYY-MM-DD)"}


class Fault(msgspec.Struct, frozen=True):
    field: str
    message: str
    source: str


def json_too_deep(raw: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether a JSON text nests arrays and objects deeper than `limit`, brackets inside strings not counted."""
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False
    # Outside strings only: without an escaped quote, every other piece between quotes is outside a string.
    outside = b"".join(raw.split(b'"')[::2]) if b'\\"' not in raw else _JSON_STRING.sub(b"", raw)
    depth = 0
    for byte in outside.translate(None, _NOT_BRACKETS):
        if byte in b"[{":
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False


def control_character(text: str) -> str | None:
    """The first control character in `text` as `U+XXXX`, or None."""
    found = _CONTROL.search(text)
    return None if found is None else f"U+{ord(found.group()):04X}"


def _text_fault(field: str, text: str, source: str) -> Fault | None:
    found = control_character(text)
    return None if found is None else Fault(field, f"holds a control character ({found})", source)


def json_faults(value: Any, path: str = "") -> Iterator[Fault]:
    """Every string holding a control character and every integer beyond 64 bits in a decoded JSON value, named
    by its path (`taps[3].line`; `body` for the value itself)."""
    if isinstance(value, str):
        if (fault := _text_fault(path or "body", value, "body")) is not None:
            yield fault
    elif isinstance(value, bool):
        return
    elif isinstance(value, int):
        if not INT64_MIN <= value <= INT64_MAX:
            yield Fault(path or "body", "is out of range (a 64-bit integer)", "body")
    elif isinstance(value, dict):
        for key, item in value.items():
            if control_character(key) is not None:
                yield Fault(path or "body", "holds a field name with a control character", "body")
                continue
            yield from json_faults(item, f"{path}.{key}" if path else key)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from json_faults(item, f"{path}[{index}]")


def _suspect(raw: bytes) -> bool:
    return (
        b"\\u00" in raw
        or b"\x7f" in raw
        or b"\xc2" in raw
        # The invisible characters above, raw (UTF-8 E2 80 .., E2 81 .., EF BB BF) or escaped (\u20.., \ufeff).
        or b"\xe2\x80" in raw
        or b"\xe2\x81" in raw
        or b"\xef\xbb\xbf" in raw
        or b"\\u20" in raw
        or b"\\ufe" in raw.lower()
        or _NINETEEN_DIGITS in raw.translate(_DIGITS_AS_ZERO)
    )


def body_faults(raw: bytes) -> list[Fault]:
    """What is wrong with a JSON body before it is decoded for a handler (nothing, mostly)."""
    if json_too_deep(raw):
        return [Fault("body", f"nested deeper than {MAX_JSON_DEPTH} levels", "body")]
    if not _suspect(raw):
        return []
    try:
        value = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return []  # malformed: the handler's own decoding says so, naming the body
    faults: list[Fault] = []
    for fault in json_faults(value):
        faults.append(fault)
        if len(faults) == _MAX_REPORTED:
            break
    return faults


def _parameter_faults(request: Request[Any, Any, Any]) -> list[Fault]:
    faults: list[Fault] = []
    for name, value in request.path_params.items():
        if isinstance(value, str) and (fault := _text_fault(name, value, "path")) is not None:
            faults.append(fault)
    if request.scope.get("query_string"):
        for name, value in request.query_params.multi_items():
            if control_character(name) is not None:
                faults.append(Fault("query", "holds a parameter name with a control character", "query"))
            elif isinstance(value, str) and (fault := _text_fault(name, value, "query")) is not None:
                faults.append(fault)
    headers = request.scope["headers"]
    if _HEADER_CONTROL.search(b"\t".join(value for _, value in headers)):  # one search for the common case
        for raw_name, raw_value in headers:
            if _HEADER_CONTROL.search(raw_value):
                faults.append(Fault(raw_name.decode("latin-1"), "holds a control character", "header"))
    return faults


def _refuse(faults: list[Fault]) -> ValidationException:
    return ValidationException(
        "; ".join(f"{fault.field}: {fault.message}" for fault in faults),
        extra=[{"key": fault.field, "message": fault.message, "source": fault.source} for fault in faults],
    )


def _empty(request: Request[Any, Any, Any]) -> bool:
    """Whether the request says it has no body (Content-Length: 0, as a code display's POST), which the screen
    then does not read: nothing in it to refuse, and reading it cost a display 2 % of its instructions."""
    for name, value in request.scope["headers"]:
        if name == b"content-length":
            return value.strip() == b"0"
    return False


async def screen_request(request: Request[Any, Any, Any]) -> None:
    """The app's `before_request` hook: refuses (400, naming each field) what no handler should see."""
    faults = _parameter_faults(request)
    if not faults and request.method in ("POST", "PUT", "PATCH", "DELETE") and not _empty(request):
        media_type = request.content_type[0]
        if not media_type.startswith(_NOT_JSON_MEDIA) and "xml" not in media_type:
            raw = await request.body()
            if raw:
                faults = body_faults(raw)
    if faults:
        raise _refuse(faults)


def malformed_path_parameter(app: Litestar, path: str) -> tuple[str, str] | None:
    """The path parameter (its name and what it should have been) that kept `path` from matching a route whose
    fixed parts it matches, e.g. ("enterprise_id", "a UUID") for /api/v1/enterprises/not-a-uuid."""
    segments = [segment for segment in path.split("/") if segment]
    for route in app.routes:
        components = route.path_components
        if len(components) != len(segments):
            continue
        malformed: tuple[str, str] | None = None
        for component, segment in zip(components, segments, strict=True):
            if isinstance(component, str):
                if component != segment:
                    break
            elif component.parser is not None and malformed is None:
                try:
                    component.parser(segment)
                except ValueError:
                    kind = component.type.__name__
                    malformed = (component.name, _TYPE_NAMES.get(kind, kind))
        else:
            if malformed is not None:
                return malformed
    return None
