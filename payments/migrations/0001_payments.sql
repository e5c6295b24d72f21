-- Orders, idempotency keys, refunds and a double-entry ledger. Integer fen everywhere.
CREATE SCHEMA IF NOT EXISTS payments;

CREATE TABLE payments.orders (
    id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    out_trade_no      text NOT NULL UNIQUE,
    payer_id          uuid,
    payee_id          uuid NOT NULL,
    purpose           text NOT NULL CHECK (purpose IN ('utility_bill', 'non_tax_fee', 'ticket', 'transit_fare', 'other')),
    subject           text NOT NULL,
    amount_fen        bigint NOT NULL CHECK (amount_fen > 0),
    fee_fen           bigint NOT NULL DEFAULT 0 CHECK (fee_fen >= 0),
    channel           text NOT NULL,
    method            text NOT NULL,
    status            text NOT NULL DEFAULT 'waiting'
                      CHECK (status IN ('waiting', 'paid', 'closed', 'finished')),
    refunded_fen      bigint NOT NULL DEFAULT 0,
    channel_trade_no  text,
    pay_params        jsonb,
    paid_at           timestamptz,
    expires_at        timestamptz NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    -- The refund cap, enforced by the database whatever the code does.
    CHECK (refunded_fen >= 0 AND refunded_fen <= amount_fen)
);
CREATE INDEX orders_waiting_idx ON payments.orders (expires_at) WHERE status = 'waiting';
CREATE INDEX orders_payer_idx ON payments.orders (payer_id, created_at DESC);

-- The first response per key is kept; the same key with another body is refused. Claimed by a unique index.
CREATE TABLE payments.idempotency_keys (
    scope         text NOT NULL,
    key           text NOT NULL,
    request_hash  bytea NOT NULL,
    status_code   integer,
    response      jsonb,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (scope, key)
);

CREATE TABLE payments.refunds (
    id             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    order_id       uuid NOT NULL REFERENCES payments.orders(id),
    out_refund_no  text NOT NULL UNIQUE,
    amount_fen     bigint NOT NULL CHECK (amount_fen > 0),
    status         text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'succeeded', 'failed')),
    reason         text NOT NULL DEFAULT '',
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX refunds_order_idx ON payments.refunds (order_id);

-- Double-entry ledger: an entry's postings sum to zero (debits positive, credits negative). Append-only:
-- corrections are new entries that reverse old ones. `ref` makes every posting happen exactly once.
CREATE TABLE payments.ledger_entries (
    id     bigserial PRIMARY KEY,
    ref    text NOT NULL UNIQUE,
    kind   text NOT NULL,
    memo   text NOT NULL DEFAULT '',
    at     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE payments.ledger_postings (
    entry_id    bigint NOT NULL REFERENCES payments.ledger_entries(id),
    account     text NOT NULL,
    amount_fen  bigint NOT NULL CHECK (amount_fen <> 0),
    PRIMARY KEY (entry_id, account)
);
CREATE INDEX ledger_postings_account_idx ON payments.ledger_postings (account);

CREATE TABLE payments.ledger_balances (
    account      text PRIMARY KEY,
    balance_fen  bigint NOT NULL DEFAULT 0,
    updated_at   timestamptz NOT NULL DEFAULT now()
);

CREATE FUNCTION payments.ledger_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the ledger is append-only: post a reversing entry instead';
END $$;

CREATE TRIGGER ledger_entries_append_only BEFORE UPDATE OR DELETE ON payments.ledger_entries
    FOR EACH ROW EXECUTE FUNCTION payments.ledger_append_only();
CREATE TRIGGER ledger_postings_append_only BEFORE UPDATE OR DELETE ON payments.ledger_postings
    FOR EACH ROW EXECUTE FUNCTION payments.ledger_append_only();
CREATE TRIGGER ledger_entries_no_truncate BEFORE TRUNCATE ON payments.ledger_entries
    FOR EACH STATEMENT EXECUTE FUNCTION payments.ledger_append_only();
CREATE TRIGGER ledger_postings_no_truncate BEFORE TRUNCATE ON payments.ledger_postings
    FOR EACH STATEMENT EXECUTE FUNCTION payments.ledger_append_only();
