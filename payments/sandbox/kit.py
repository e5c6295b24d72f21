"""What the channel sandboxes do alike, named once; each sandbox module keeps only its channel's protocol.

- Time and money: `now()` in Beijing time, `yuan()` for fen, `fee_fen()` for the fee a channel keeps.
- Test controls: `ControlError` (an HTTP status and a detail, answered as `{"error": detail}`), `json_body()` for
  the JSON object a control takes, `reply()` for the JSON it answers, `run_control()` tying them together.
- Faults: a `Fault` (mode, times, delay, whether the call is still processed, the code and message of a refusal)
  waits in `Faults` under the API method or path it applies to; `take()` hands out the next one for a call.
  The modes themselves (`error`, `timeout`, `refuse`, `tamper`, ...) are applied by the protocol, which knows
  what an error or a refusal looks like on its wire.
- Notifications: `Notifier.deliver()` posts a signed body to a notify URL in the background, retried on a
  schedule until the receiver acknowledges it (the protocol says what an acknowledgement is). `delay` holds the
  first attempt back, so a later notification overtakes it (out of order); `copies` sends the same body more than
  once (duplicates). Every attempt is recorded in a `Delivery`.
- Transfers (payouts): `PayeeBook` keeps the accounts a test registered (the holder's real name, open or closed)
  and every transfer made, by its number; the channel's protocol says what a refusal and an answer look like.
- Bill edits: `read_bill_edits()` checks a `/_sandbox/bill-edits` request; `apply_bill_edits()` drops, changes
  (amount, fee, status) or adds the lines of a day's bill through a `BillEditor`, which knows the channel's lines.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Protocol, TypeVar
from zoneinfo import ZoneInfo

import httpx
from litestar import Request, Response

SHANGHAI = ZoneInfo("Asia/Shanghai")
BILL_OPS = ("drop", "amount", "fee", "status", "add")

Line = TypeVar("Line")


# -- time and money ------------------------------------------------------------------------------------------------


def now() -> dt.datetime:
    """Beijing time, to the second (what both channels write)."""
    return dt.datetime.now(SHANGHAI).replace(microsecond=0)


def yuan(fen: int, places: int = 2) -> str:
    """Fen as a yuan amount with `places` decimals: 1234 -> "12.34"."""
    return str((Decimal(fen) / 100).quantize(Decimal(1).scaleb(-places)))


def fee_fen(amount_fen: int, rate: Decimal) -> int:
    """The fee the channel keeps on `amount_fen` at `rate` (0.006 = 0.6%), rounded half up to the fen."""
    return int((Decimal(amount_fen) * rate).to_integral_value(rounding=ROUND_HALF_UP))


# -- test controls ---------------------------------------------------------------------------------------------------


class ControlError(Exception):
    """A test control refused: answered with `status` and `{"error": detail}`."""

    def __init__(self, status: int, detail: Any) -> None:
        super().__init__(str(detail))
        self.status = status
        self.detail = detail


async def json_body(request: Request[Any, Any, Any]) -> dict[str, Any]:
    """The JSON object a control takes; an empty body is `{}`."""
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except ValueError:
        raise ControlError(400, "the body is not JSON") from None
    if not isinstance(data, dict):
        raise ControlError(400, "the body must be a JSON object")
    return data


def reply(data: Any, status: int = 200) -> Response[bytes]:
    return Response(
        content=json.dumps(data, ensure_ascii=False).encode("utf-8"),
        status_code=status,
        media_type="application/json",
    )


async def run_control(action: Callable[[], Awaitable[Any]]) -> Response[bytes]:
    """The control's answer as JSON, or its refusal as `{"error": ...}` with the refusal's status."""
    try:
        return reply(await action())
    except ControlError as exc:
        return reply({"error": exc.detail}, exc.status)


# -- faults ----------------------------------------------------------------------------------------------------------


@dataclass
class Fault:
    """What the next `times` calls of one API method get instead of a plain answer.

    `delay_s` is how long a `timeout` holds the answer; with `apply` false the call is not processed at all. `code`
    and `message` are the refusal a `refuse` answers (the channel's default when None)."""

    mode: str
    times: int
    delay_s: float
    apply: bool = True
    code: str | None = None
    message: str | None = None

    @property
    def fails(self) -> bool:
        """Answer HTTP 500 without processing the call."""
        return self.mode == "error"

    @property
    def drops(self) -> bool:
        """Hold the call past the client's patience without processing it."""
        return self.mode == "timeout" and not self.apply

    async def hold(self) -> None:
        """A `timeout` keeps the answer back for its delay."""
        if self.mode == "timeout":
            await asyncio.sleep(self.delay_s)


class Faults:
    """Faults waiting, by the API method (or path) they apply to."""

    def __init__(self) -> None:
        self._waiting: dict[str, list[Fault]] = {}

    def set(self, key: str, fault: Fault) -> None:
        """`fault` replaces whatever waits for `key`."""
        self._waiting[key] = [fault]

    def add(self, key: str, fault: Fault) -> None:
        """`fault` waits for `key` after those already there."""
        self._waiting.setdefault(key, []).append(fault)

    def take(self, key: str) -> Fault | None:
        """The fault for this call of `key`, counted; None when none is left."""
        queue = self._waiting.get(key)
        while queue:
            fault = queue[0]
            if fault.times <= 0:
                queue.pop(0)
                continue
            fault.times -= 1
            if fault.times <= 0:
                queue.pop(0)
            return fault
        return None

    def clear(self) -> None:
        self._waiting.clear()


# -- notifications ---------------------------------------------------------------------------------------------------


@dataclass
class Delivery:
    """One notification sent (or to be sent) and what became of it."""

    id: int
    url: str | None
    kind: str  # what it notifies, in the sandbox's words: "payment", "TRADE_SUCCESS", "refund R1", ...
    key: str  # the merchant's number it is about (out_trade_no, out_refund_no, contract_code)
    body: str
    headers: dict[str, str] = field(default_factory=dict)  # sent with the body (WeChat Pay v3 signs in them)
    attempts: int = 0
    delivered: bool = False
    last_status: int | None = None
    last_error: str | None = None


class Notifier:
    """Posts notifications in the background and retries them until acknowledged.

    `retry_delays` are the pauses before each attempt (the first usually 0); `acknowledged` tells, from the
    receiver's answer body to an HTTP 200, whether it took the notification."""

    def __init__(
        self,
        *,
        content_type: str,
        acknowledged: Callable[[bytes], bool],
        retry_delays: tuple[float, ...],
        timeout_s: float = 5.0,
    ) -> None:
        self.content_type = content_type
        self.acknowledged = acknowledged
        self.retry_delays = retry_delays
        self.timeout_s = timeout_s
        self.deliveries: list[Delivery] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._http: httpx.AsyncClient | None = None

    def deliver(
        self,
        url: str | None,
        body: str,
        *,
        kind: str,
        key: str = "",
        delay: float = 0.0,
        copies: int = 1,
        headers: dict[str, str] | None = None,
    ) -> list[Delivery]:
        """Sends `body` to `url` `copies` times, each first attempt after `delay` seconds. Without a URL the
        delivery is recorded as failed and nothing is sent."""
        sent = []
        for _ in range(max(1, copies)):
            delivery = Delivery(
                id=len(self.deliveries) + 1,
                url=url,
                kind=kind,
                key=key,
                body=body,
                headers=dict(headers or {}),
            )
            self.deliveries.append(delivery)
            sent.append(delivery)
            if url:
                self.spawn(self._send(delivery, delay))
            else:
                delivery.last_error = "no notify_url"
        return sent

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Runs `coro` in the background until it ends or the sandbox closes."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, delivery: Delivery, delay: float) -> None:
        assert delivery.url is not None
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=self.timeout_s)
        if delay:
            await asyncio.sleep(delay)
        for pause in self.retry_delays:
            if pause:
                await asyncio.sleep(pause)
            delivery.attempts += 1
            try:
                answer = await self._http.post(
                    delivery.url,
                    content=delivery.body.encode("utf-8"),
                    headers={**delivery.headers, "Content-Type": self.content_type},
                )
            except httpx.HTTPError as exc:
                delivery.last_error = f"{type(exc).__name__}: {exc}"
                continue
            delivery.last_status = answer.status_code
            if answer.status_code == 200 and self.acknowledged(answer.content):
                delivery.delivered = True
                delivery.last_error = None
                return
            delivery.last_error = f"HTTP {answer.status_code}: {answer.content[:100]!r}"

    async def aclose(self) -> None:
        """Stops every delivery still retrying and closes the HTTP client."""
        for task in list(self._tasks):
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._http is not None:
            await self._http.aclose()
            self._http = None


# -- transfers (payouts) -----------------------------------------------------------------------------------------------

ACCOUNT_STATES = ("normal", "closed")


@dataclass
class SandboxTransfer:
    """One transfer the channel made (or refused, when `status` is FAIL), under the merchant's number for it."""

    out_biz_no: str
    order_id: str
    identity: str
    identity_type: str
    name: str
    amount_fen: int
    remark: str
    status: str  # SUCCESS | FAIL (WeChat v3 bills also ACCEPTED, WAIT_USER_CONFIRM, CANCELLED, ...)
    at: dt.datetime
    reason: str = ""

    def record(self) -> dict[str, Any]:
        return {
            "out_biz_no": self.out_biz_no,
            "order_id": self.order_id,
            "identity": self.identity,
            "identity_type": self.identity_type,
            "name": self.name,
            "amount_fen": self.amount_fen,
            "remark": self.remark,
            "status": self.status,
            "at": self.at.isoformat(),
            "reason": self.reason,
        }

    def same_request(self, identity: str, name: str, amount_fen: int) -> bool:
        return (self.identity, self.name, self.amount_fen) == (identity, name, amount_fen)


class PayeeBook:
    """The accounts transfers go to, as a test set them up, and the transfers made. An account nobody registered
    takes any name (most tests do not care); a registered one refuses another name (`name_mismatch`) and, once
    closed, everything (`account_closed`)."""

    def __init__(self) -> None:
        self.accounts: dict[str, dict[str, str]] = {}
        self.transfers: dict[str, SandboxTransfer] = {}

    def clear(self) -> None:
        self.accounts.clear()
        self.transfers.clear()

    def set_account(self, identity: str, data: dict[str, Any]) -> dict[str, Any]:
        """The control `POST /_sandbox/payees/{identity}` {"name": "张三", "state": "normal"|"closed"}."""
        name, state = data.get("name"), data.get("state", "normal")
        if not isinstance(name, str) or not name:
            raise ControlError(400, "name: the account holder's real name is required")
        if state not in ACCOUNT_STATES:
            raise ControlError(400, f"state must be one of {ACCOUNT_STATES}")
        self.accounts[identity] = {"name": name, "state": str(state)}
        return {"identity": identity, **self.accounts[identity]}

    def refusal(self, identity: str, name: str) -> str | None:
        account = self.accounts.get(identity)
        if account is None:
            return None
        if account["state"] == "closed":
            return "account_closed"
        if name != account["name"]:
            return "name_mismatch"
        return None

    def listed(self, identity: str | None = None) -> dict[str, Any]:
        """The control `GET /_sandbox/transfers?identity=…`: the transfers (to one account) and what they paid."""
        found = [t for t in self.transfers.values() if identity is None or t.identity == identity]
        return {
            "transfers": [t.record() for t in found],
            "paid_fen": sum(t.amount_fen for t in found if t.status == "SUCCESS"),
        }

    def get(self, out_biz_no: str) -> SandboxTransfer:
        found = self.transfers.get(out_biz_no)
        if found is None:
            raise ControlError(404, f"no transfer {out_biz_no}")
        return found


# -- bill edits ------------------------------------------------------------------------------------------------------


def read_bill_edits(data: dict[str, Any]) -> tuple[dt.date, list[dict[str, Any]]]:
    """The day and the edits of a `/_sandbox/bill-edits` request: every edit has an op of BILL_OPS and an
    out_trade_no, `amount` and `fee` take integer fen."""
    try:
        day = dt.date.fromisoformat(str(data.get("day")))
    except ValueError:
        raise ControlError(400, "day must be YYYY-MM-DD") from None
    edits = data.get("edits")
    if not isinstance(edits, list):
        raise ControlError(400, "edits must be a list")
    for index, edit in enumerate(edits):
        if not isinstance(edit, dict) or edit.get("op") not in BILL_OPS or not edit.get("out_trade_no"):
            raise ControlError(400, f"edits[{index}] needs op in {BILL_OPS} and out_trade_no")
        if edit["op"] in ("amount", "fee") and (
            isinstance(edit.get("value"), bool) or not isinstance(edit.get("value"), int)
        ):
            raise ControlError(400, f"edits[{index}].value must be integer fen")
    return day, list(edits)


class BillEditor(Protocol[Line]):
    """How one channel's bill lines are matched, changed and made up."""

    def matches(self, line: Line, edit: dict[str, Any]) -> bool:
        """Whether `edit` is about `line` (its out_trade_no, and its refund number or else its payment line)."""
        ...

    def with_amount(self, line: Line, fen: int) -> Line: ...

    def with_fee(self, line: Line, fen: int) -> Line: ...

    def with_status(self, line: Line, status: str) -> Line: ...

    def added(self, edit: dict[str, Any], day: dt.date) -> Line:
        """A line the channel's records do not have, described by the edit's value."""
        ...


def apply_bill_edits(
    lines: list[Line], edits: list[dict[str, Any]], day: dt.date, editor: BillEditor[Line]
) -> list[Line]:
    """`lines` with `edits` applied in order: `drop` removes the matching lines, `amount`, `fee` and `status`
    change them, `add` appends a line."""
    for edit in edits:
        op, value = edit["op"], edit.get("value")
        if op == "add":
            lines = [*lines, editor.added(edit, day)]
            continue
        kept = []
        for line in lines:
            if not editor.matches(line, edit):
                kept.append(line)
            elif op == "amount":
                kept.append(editor.with_amount(line, int(value)))  # type: ignore[arg-type]
            elif op == "fee":
                kept.append(editor.with_fee(line, int(value)))  # type: ignore[arg-type]
            elif op == "status":
                kept.append(editor.with_status(line, str(value)))
        lines = kept
    return lines
