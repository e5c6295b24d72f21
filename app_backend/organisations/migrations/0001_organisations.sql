-- Organisations (departments, gate operators, merchants, operations) and their machine credentials.
CREATE SCHEMA IF NOT EXISTS identity;

CREATE TABLE identity.organisations (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name        text NOT NULL UNIQUE,
    kind        text NOT NULL CHECK (kind IN ('department', 'verifier_operator', 'merchant', 'operations')),
    location    text,
    status      text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended')),
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Secrets must be recoverable to check HMAC signatures, so they are encrypted, not hashed.
CREATE TABLE identity.api_credentials (
    key_id           text PRIMARY KEY,
    organisation_id  uuid NOT NULL REFERENCES identity.organisations(id),
    secret_enc       bytea NOT NULL,
    scopes           text[] NOT NULL,
    label            text NOT NULL DEFAULT '',
    created_at       timestamptz NOT NULL DEFAULT now(),
    revoked_at       timestamptz
);
CREATE INDEX api_credentials_org_idx ON identity.api_credentials (organisation_id);
