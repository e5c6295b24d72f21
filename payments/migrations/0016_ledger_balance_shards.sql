-- A ledger account's balance is kept in up to 16 shards (account, shard), summed when read. Every payment posts to
-- the same few accounts (the channel's clearing and fees, the platform's fees, the payee's payable), and one row
-- per account made every paying transaction queue on its lock until the one before committed: a ticket rush's
-- notifications waited seconds on `ledger_balances` (pg_stat_activity: Lock:transactionid on its upsert). An
-- entry posts every account to one shard (its id modulo 16), in account order, so entries still cannot deadlock.
ALTER TABLE payments.ledger_balances ADD COLUMN shard smallint NOT NULL DEFAULT 0 CHECK (shard BETWEEN 0 AND 15);
ALTER TABLE payments.ledger_balances DROP CONSTRAINT ledger_balances_pkey;
ALTER TABLE payments.ledger_balances ADD PRIMARY KEY (account, shard);
