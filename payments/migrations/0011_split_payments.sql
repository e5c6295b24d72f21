-- A payment split between payees at order time (an event ticket: the organising department and the venue): each
-- share is owed to its payee and settled to it; refunds take back from every share in proportion.

-- The shares of an order that has more than one payee, the order's own payee included (its share is what the
-- others leave). An order without rows here is all its payee's.
CREATE TABLE payments.order_shares (
    order_id    uuid NOT NULL REFERENCES payments.orders(id),
    payee_id    uuid NOT NULL,
    amount_fen  bigint NOT NULL CHECK (amount_fen > 0),
    -- the platform's fee on this share (the order's fee_fen is their sum)
    fee_fen     bigint NOT NULL CHECK (fee_fen >= 0),
    PRIMARY KEY (order_id, payee_id)
);

-- What each refund of a split order took back from each share, as posted.
CREATE TABLE payments.refund_shares (
    refund_id   uuid NOT NULL REFERENCES payments.refunds(id),
    payee_id    uuid NOT NULL,
    amount_fen  bigint NOT NULL CHECK (amount_fen >= 0),
    fee_fen     bigint NOT NULL CHECK (fee_fen >= 0),
    PRIMARY KEY (refund_id, payee_id)
);
