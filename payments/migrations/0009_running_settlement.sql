-- The ledger states what is true (issue 14): channel fees booked with each payment and given back with each
-- refund, settlements as a running account (every movement of a payee's money in exactly one settlement, a
-- negative balance carried forward as the payee's debt to us), and clearing compared per channel and day with
-- what the channel's bill says it holds for us.

-- When the money moved at the channel (a payment's paid_at, a refund's success): the business day a bill lists
-- it on. Postings are compared with bills by this day, not by when we heard of them.
ALTER TABLE payments.ledger_entries ADD COLUMN value_at timestamptz;
-- Filling the new column is not a correction of the ledger: the append-only trigger steps aside for it alone.
ALTER TABLE payments.ledger_entries DISABLE TRIGGER ledger_entries_append_only;
UPDATE payments.ledger_entries SET value_at = at WHERE value_at IS NULL;
ALTER TABLE payments.ledger_entries ENABLE TRIGGER ledger_entries_append_only;
ALTER TABLE payments.ledger_entries ALTER COLUMN value_at SET DEFAULT now();
ALTER TABLE payments.ledger_entries ALTER COLUMN value_at SET NOT NULL;
CREATE INDEX ledger_entries_value_at_idx ON payments.ledger_entries (value_at);
CREATE INDEX ledger_entries_at_idx ON payments.ledger_entries (at);

-- What the channel keeps of a payment, and gives back with a refund, as booked: the channel's rate at booking,
-- trued up by reconciliation to what the bill says.
ALTER TABLE payments.orders ADD COLUMN channel_fee_fen bigint NOT NULL DEFAULT 0;
ALTER TABLE payments.refunds ADD COLUMN channel_fee_back_fen bigint NOT NULL DEFAULT 0;

-- What the day's bill says the channel holds for us from that day: payments less their fees, less refunds plus
-- the fees given back. NULL for runs made before this column, and for failed runs.
ALTER TABLE payments.reconciliation_runs ADD COLUMN bill_held_fen bigint;

-- A payee may be settled more than once a day (money that arrived after the day's first run rolls into the
-- next settlement, which may be the same day's second): seq numbers them.
ALTER TABLE payments.settlements DROP CONSTRAINT settlements_payee_id_day_key;
ALTER TABLE payments.settlements DROP CONSTRAINT settlements_status_check;
ALTER TABLE payments.settlements
    ADD COLUMN seq integer NOT NULL DEFAULT 1,
    -- Movements before this instant (the end of `day`, or when the run was made if earlier) were taken.
    ADD COLUMN cutoff timestamptz,
    -- What the payee owed us when this settlement was made (refunds after earlier payouts), recovered first.
    ADD COLUMN owed_before_fen bigint NOT NULL DEFAULT 0 CHECK (owed_before_fen >= 0),
    -- What is paid out (0 unless due or paid) and what the payee still owes us afterwards.
    ADD COLUMN payout_fen bigint NOT NULL DEFAULT 0 CHECK (payout_fen >= 0),
    ADD COLUMN owed_after_fen bigint NOT NULL DEFAULT 0 CHECK (owed_after_fen >= 0),
    -- Settlements made before this migration posted their payout straight from the payable: the ledger check
    -- reads only those made as a running account.
    ADD COLUMN running_account boolean NOT NULL DEFAULT true,
    ADD CONSTRAINT settlements_status_check CHECK (status IN ('due', 'paid', 'nothing-due', 'carried')),
    ADD CONSTRAINT settlements_payee_day_seq_key UNIQUE (payee_id, day, seq);
UPDATE payments.settlements SET cutoff = created_at, payout_fen = greatest(net_fen, 0), running_account = false
WHERE cutoff IS NULL;
ALTER TABLE payments.settlements ALTER COLUMN cutoff SET NOT NULL;

-- Every ledger entry moving a payee's money belongs to exactly one of its settlements.
CREATE TABLE payments.settlement_entries (
    entry_id       bigint NOT NULL REFERENCES payments.ledger_entries(id),
    payee_id       uuid NOT NULL,
    settlement_id  uuid NOT NULL REFERENCES payments.settlements(id),
    PRIMARY KEY (entry_id, payee_id)
);
CREATE INDEX settlement_entries_settlement_idx ON payments.settlement_entries (settlement_id);

-- Entries settled before this migration: the settlements of their payee and day, and each one's payout.
INSERT INTO payments.settlement_entries (entry_id, payee_id, settlement_id)
SELECT DISTINCT ON (e.id, s.payee_id) e.id, s.payee_id, s.id
FROM payments.settlements s
JOIN payments.ledger_postings p ON p.account = 'payee_payable:' || s.payee_id::text
JOIN payments.ledger_entries e ON e.id = p.entry_id
WHERE (e.kind <> 'settlement' AND (e.at AT TIME ZONE 'Asia/Shanghai')::date = s.day)
   OR e.ref = 'settlement:' || s.id::text
ON CONFLICT DO NOTHING;
