-- Daily reconciliation: each channel's bill matched line by line against our orders and refunds.
-- One run per (business day, channel); re-running a day replaces its run and differences.
CREATE TABLE payments.reconciliation_runs (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    day          date NOT NULL,
    channel      text NOT NULL,
    status       text NOT NULL CHECK (status IN ('balanced', 'differences', 'failed')),
    bill_lines   integer NOT NULL DEFAULT 0,
    our_items    integer NOT NULL DEFAULT 0,
    matched      integer NOT NULL DEFAULT 0,
    differences  integer NOT NULL DEFAULT 0,
    pooled       integer NOT NULL DEFAULT 0,
    resolved     integer NOT NULL DEFAULT 0,
    escalated    integer NOT NULL DEFAULT 0,
    fee_rule     text NOT NULL DEFAULT '',
    error        text,
    started_at   timestamptz NOT NULL,
    finished_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (day, channel)
);

CREATE TABLE payments.reconciliation_differences (
    id                bigserial PRIMARY KEY,
    run_id            uuid NOT NULL REFERENCES payments.reconciliation_runs(id) ON DELETE CASCADE,
    class             text NOT NULL CHECK (class IN ('missing_at_channel', 'missing_at_platform', 'status_mismatch',
                                                     'amount_over', 'amount_short', 'fee_mismatch')),
    kind              text NOT NULL CHECK (kind IN ('payment', 'refund')),
    out_trade_no      text NOT NULL,
    out_refund_no     text,
    ours_amount_fen   bigint,
    theirs_amount_fen bigint,
    ours_status       text,
    theirs_status     text,
    expected_fee_fen  bigint,
    theirs_fee_fen    bigint,
    note              text NOT NULL DEFAULT ''
);
CREATE INDEX reconciliation_differences_run_idx ON payments.reconciliation_differences (run_id);
CREATE INDEX reconciliation_differences_trade_idx ON payments.reconciliation_differences (out_trade_no);

-- The scratch pool: items one side has near the end of a day and the other side does not have that day. They
-- are re-examined by the next day's run, which resolves them (found on the other side) or escalates them.
CREATE TABLE payments.reconciliation_pool (
    channel        text NOT NULL,
    kind           text NOT NULL CHECK (kind IN ('payment', 'refund')),
    item_key       text NOT NULL,  -- out_trade_no of a payment, out_refund_no of a refund
    origin_day     date NOT NULL,
    side           text NOT NULL CHECK (side IN ('ours', 'theirs')),  -- who had it on origin_day
    out_trade_no   text NOT NULL,
    out_refund_no  text,
    amount_fen     bigint NOT NULL,
    fee_fen        bigint,  -- the bill's fee when the channel had it
    status         text NOT NULL,
    at             timestamptz,
    state          text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'resolved', 'escalated')),
    settled_day    date,
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (channel, kind, item_key, origin_day)
);
CREATE INDEX reconciliation_pool_pending_idx ON payments.reconciliation_pool (channel, origin_day)
    WHERE state = 'pending';
CREATE INDEX reconciliation_pool_settled_idx ON payments.reconciliation_pool (channel, settled_day);

-- What a day's run reads on our side.
CREATE INDEX orders_paid_at_idx ON payments.orders (channel, paid_at) WHERE paid_at IS NOT NULL;
CREATE INDEX refunds_succeeded_idx ON payments.refunds (updated_at) WHERE status = 'succeeded';
