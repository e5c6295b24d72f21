-- Payouts through the channels' transfer APIs (decision 0021): a payee may be paid by Alipay transfer to an Alipay
-- account or by WeChat Pay 企业付款 to an openid instead of by bank; each payout keeps one number (out_biz_no, the
-- channel's idempotency key) for life, claimed and committed before the channel is asked.

-- Where a payee is paid by channel transfer. The account and the holder's real name are personal data: AES-GCM
-- ciphertexts (the field cipher), masked on the way out. A payee without a row is paid by bank (mark_paid).
CREATE TABLE payments.payout_accounts (
    payee_id       uuid PRIMARY KEY,
    channel        text NOT NULL CHECK (channel IN ('alipay', 'wechat')),
    identity_type  text NOT NULL CHECK (identity_type IN ('ALIPAY_USER_ID', 'ALIPAY_LOGON_ID', 'WECHAT_OPENID')),
    identity_enc   bytea NOT NULL,
    name_enc       bytea NOT NULL,
    updated_at     timestamptz NOT NULL DEFAULT now(),
    CHECK ((channel = 'wechat') = (identity_type = 'WECHAT_OPENID'))
);

-- One channel transfer of a settlement's payout. The account it was sent to is kept with it (encrypted), so a
-- repeat of the same number sends exactly what the first call sent, whatever the payee's configuration says now.
CREATE TABLE payments.payouts (
    id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    settlement_id     uuid NOT NULL REFERENCES payments.settlements(id),
    payee_id          uuid NOT NULL,
    channel           text NOT NULL,
    out_biz_no        text NOT NULL UNIQUE,
    amount_fen        bigint NOT NULL CHECK (amount_fen > 0),
    identity_type     text NOT NULL,
    identity_enc      bytea NOT NULL,
    name_enc          bytea NOT NULL,
    remark            text NOT NULL,
    -- Ours: pending until the channel's answer is known (sent or not, we may not know), then final.
    status            text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'succeeded', 'failed')),
    channel_order_id  text,
    failure           text,
    -- What the channel said about this number when last asked (succeeded, failed, pending, or missing: it has
    -- none), and when a query last confirmed it: the ledger check compares it with what was booked.
    channel_status    text CHECK (channel_status IN ('succeeded', 'failed', 'pending', 'missing')),
    checked_at        timestamptz,
    created_at        timestamptz NOT NULL DEFAULT now(),
    finished_at       timestamptz
);
-- One transfer of a settlement at a time: a new number only once the last one is known failed.
CREATE UNIQUE INDEX payouts_one_live_per_settlement ON payments.payouts (settlement_id) WHERE status <> 'failed';
CREATE INDEX payouts_settlement_idx ON payments.payouts (settlement_id, created_at);
CREATE INDEX payouts_open_idx ON payments.payouts (created_at)
    WHERE status = 'pending' OR checked_at IS NULL OR channel_status IS NULL;
