-- While Redis is unavailable, online verification holds the single-use replay ids of transit and medical codes
-- here instead, so that a code is accepted once across every server process and node (not once per process).
-- UNLOGGED: a replay id lives only as long as the code can be valid, and skipping the WAL keeps the outage path
-- cheap. The primary key is the claim (INSERT ... ON CONFLICT DO NOTHING); a job deletes expired rows.
CREATE UNLOGGED TABLE codes.used_codes_fallback (
    code_id     bytea PRIMARY KEY,
    expires_at  timestamptz NOT NULL
);
CREATE INDEX used_codes_fallback_expiry_idx ON codes.used_codes_fallback (expires_at);
