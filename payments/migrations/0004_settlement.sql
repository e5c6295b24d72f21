-- Daily settlement per payee: what the ledger says we owe for the day, a statement, and the payout.
CREATE TABLE payments.settlements (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    payee_id    uuid NOT NULL,
    day         date NOT NULL,
    gross_fen   bigint NOT NULL,
    fees_fen    bigint NOT NULL,
    refunds_fen bigint NOT NULL,
    net_fen     bigint NOT NULL,
    status      text NOT NULL DEFAULT 'due' CHECK (status IN ('due', 'paid', 'nothing-due')),
    payout_ref  text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    paid_at     timestamptz,
    UNIQUE (payee_id, day)
);
