"""HTTP for operations staff: a payee's payout account (paid by channel transfer instead of by bank), and paying a
settlement by transfer."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from litestar import Controller, Response, delete, get, post, put
from litestar.openapi.datastructures import ResponseSpec
from litestar.status_codes import HTTP_200_OK, HTTP_202_ACCEPTED

from app_backend.identity.auth import AUDITOR, OPS_ADMIN, STAFF, Staff, audited, staff_only
from app_backend.kernel.db import Connection
from app_backend.kernel.http import problems
from payments.payouts.schemas import PayoutAccountSet, PayoutAccountView, Payouts, PayoutView

if TYPE_CHECKING:
    from payments.container import PaymentServices


class PayoutAccountAdminController(Controller):
    """Where a payee is paid by channel transfer. The account and the holder's name come back masked; the audit
    trail keeps who set which channel, never the account itself."""

    path = "/api/v1/admin/payout-accounts"
    tags = ["admin"]
    guards = [staff_only(OPS_ADMIN, AUDITOR)]
    dependencies = STAFF

    @get(
        "/{payee_id:uuid}",
        summary="A payee's payout account (masked)",
        opt={
            **problems(404),
            **audited("admin.payout_account_view", target_type="payee", target="payee_id"),
        },
    )
    async def account(
        self, payee_id: uuid.UUID, payments: PaymentServices, db: Connection, staff: Staff
    ) -> PayoutAccountView:
        return await payments.payouts.account(db, payee_id)

    @put(
        "/{payee_id:uuid}",
        summary="Pay a payee's settlements by Alipay or WeChat Pay transfer to this account",
        description=(
            "From now on the payee's due settlements are sent by transfer (the payouts job, `tzt settle --pay`, or "
            "POST /api/v1/admin/settlements/{id}/pay) instead of being paid by bank. A settlement whose last "
            "transfer failed (a wrong name, a closed account) is sent again, with a new number, once this account "
            "is changed. Alipay: ALIPAY_USER_ID (2088…) or ALIPAY_LOGON_ID (mobile or email); WeChat: "
            "WECHAT_OPENID under the merchant's app id. `name` is the holder's real name, which the channel checks."
        ),
        guards=[staff_only(OPS_ADMIN)],
        opt={
            **problems(404, 422),
            **audited(
                "admin.payout_account_set",
                target_type="payee",
                target="payee_id",
                detail=("channel", "account_type"),
            ),
        },
    )
    async def set_account(
        self,
        payee_id: uuid.UUID,
        data: PayoutAccountSet,
        payments: PaymentServices,
        db: Connection,
        staff: Staff,
    ) -> PayoutAccountView:
        return await payments.payouts.set_account(db, payee_id, data)

    @delete(
        "/{payee_id:uuid}",
        summary="Pay a payee by bank again (its transfers under way are finished as sent)",
        guards=[staff_only(OPS_ADMIN)],
        opt={
            **problems(404),
            **audited("admin.payout_account_removed", target_type="payee", target="payee_id"),
        },
    )
    async def remove_account(
        self, payee_id: uuid.UUID, payments: PaymentServices, db: Connection, staff: Staff
    ) -> None:
        await payments.payouts.remove_account(db, payee_id)


_PENDING = ResponseSpec(
    data_container=PayoutView,
    description=(
        "the channel's answer is not known yet: the transfer keeps its out_biz_no and is settled by querying the "
        "channel (repeat this call, or the payouts job does it); a repeat never makes a second transfer"
    ),
    generate_examples=False,
)


class PayoutAdminController(Controller):
    """Paying a settlement by its payee's channel transfer, and the transfers made for it."""

    path = "/api/v1/admin/settlements"
    tags = ["admin"]
    guards = [staff_only(OPS_ADMIN, AUDITOR)]
    dependencies = STAFF

    @post(
        "/{settlement_id:uuid}/pay",
        status_code=HTTP_200_OK,
        summary="Pay a due settlement by transfer to its payee's payout account (once, whatever the retries)",
        description=(
            "200: the transfer as the channel answered it (succeeded: the settlement is paid, with the channel's "
            "order id as its reference; failed: the channel's reason, the settlement stays due). 202: no answer "
            "yet. Repeating the call asks about the same transfer; a new transfer (a new out_biz_no) is made only "
            "when the last one failed. 409 when the settlement is not due, or its payee is paid by bank."
        ),
        responses={HTTP_202_ACCEPTED: _PENDING},
        guards=[staff_only(OPS_ADMIN)],
        opt={
            **problems(404, 409),
            **audited("admin.settlement_pay", target_type="settlement", target="settlement_id"),
        },
    )
    async def pay(
        self, settlement_id: uuid.UUID, payments: PaymentServices, staff: Staff
    ) -> Response[PayoutView]:
        # The claim and the answer commit in transactions of their own (payments/payouts/service.py); the
        # request's holds only the audit record.
        payout = await payments.payouts.pay(payments.pool, settlement_id)
        if payout.status == "pending":
            return Response(payout, status_code=HTTP_202_ACCEPTED, headers={"Retry-After": "5"})
        return Response(payout, status_code=HTTP_200_OK)

    @get(
        "/{settlement_id:uuid}/payouts",
        summary="The channel transfers made for a settlement, oldest first",
        opt=audited("admin.settlement_payouts_view", target_type="settlement", target="settlement_id"),
    )
    async def payouts(
        self, settlement_id: uuid.UUID, payments: PaymentServices, db: Connection, staff: Staff
    ) -> Payouts:
        return Payouts(payouts=await payments.payouts.of_settlement(db, settlement_id))
