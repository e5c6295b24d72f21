-- A verifier organisation's share of the platform: requests per second for all its credentials together.
-- NULL means the platform default (TZT_RATE_ORGANISATION_PER_SECOND).
ALTER TABLE identity.organisations
    ADD COLUMN rate_limit_per_second integer CHECK (rate_limit_per_second > 0);
