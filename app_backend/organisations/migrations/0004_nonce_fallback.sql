-- While Redis is unavailable, the nonces of signed machine requests are held here instead, so that single use
-- holds across every server process and node (not in each process's memory). UNLOGGED: a nonce lives for the
-- signature window only, and losing the table in a crash costs at most that window's replay protection, while
-- skipping the WAL keeps the outage path cheap. The primary key is the claim (INSERT ... ON CONFLICT DO NOTHING);
-- a job deletes expired rows.
CREATE UNLOGGED TABLE organisations.used_nonces (
    key_id      text NOT NULL,
    nonce       text NOT NULL,
    expires_at  timestamptz NOT NULL,
    PRIMARY KEY (key_id, nonce)
);
CREATE INDEX used_nonces_expiry_idx ON organisations.used_nonces (expires_at);
