-- Debts are collected once: one open repayment order per debt at a time (the repay call serialises per rider and
-- returns the open order), and money that arrives for a debt already repaid is returned to the rider by the
-- platform through the channel it came from (payments/transit/service.py, "Money for a debt already repaid").

-- Finding the rider's open repayment order quickly (the repay call reads it under the rider's lock).
CREATE INDEX transit_repayments_resident_idx ON payments.transit_repayments (resident_id, created_at)
    WHERE applied_at IS NULL;

-- What the platform owes a rider back: a repayment or a late deduction paid for debts already cleared. One row
-- per paid order, made in the payment's transaction; the refund job sends it through the refund service with
-- this row's id as the refund's idempotency key (unguessable, so no payee can pre-empt it), and retries while the
-- channel does not answer.
CREATE TABLE payments.transit_overpayments (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    order_id     uuid NOT NULL UNIQUE REFERENCES payments.orders(id),
    resident_id  uuid NOT NULL,
    payee_id     uuid NOT NULL,
    amount_fen   bigint NOT NULL CHECK (amount_fen > 0),
    -- pending: to be sent; sent: a refund exists (refund_id), its outcome is the refund's; failed: refused for
    -- good (the operator had refunded it already), for operations to follow up
    status       text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'sent', 'failed')),
    refund_id    uuid,
    attempts     integer NOT NULL DEFAULT 0,
    last_error   text NOT NULL DEFAULT '',
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX transit_overpayments_resident_idx ON payments.transit_overpayments (resident_id, created_at);
CREATE INDEX transit_overpayments_due_idx ON payments.transit_overpayments (created_at)
    WHERE status = 'pending';
