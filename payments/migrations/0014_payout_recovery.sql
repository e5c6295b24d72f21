-- A payout never pays more than the payee is owed when it is made: what the payee owes us by then (a refund after
-- its money was settled, carried by a later settlement) is kept back from the payout, decided once per settlement
-- when its payout is first made (by bank or channel transfer) and booked as `payout_recovery:<id>` (decision 0019).
ALTER TABLE payments.settlements
    ADD COLUMN recovered_at_payout_fen bigint NOT NULL DEFAULT 0 CHECK (recovered_at_payout_fen >= 0),
    ADD COLUMN kept_back_at timestamptz,
    ADD CONSTRAINT settlements_recovered_within_payout CHECK (recovered_at_payout_fen <= payout_fen);
