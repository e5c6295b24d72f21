-- Residents, sessions, organisations and enterprises. Personal data is stored only as AES-GCM ciphertext
-- (*_enc) plus a keyed hash (*_hash) for lookups: no plaintext name, ID number or phone lives here.
CREATE SCHEMA IF NOT EXISTS identity;

CREATE TABLE identity.residents (
    id                     uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    phone_enc              bytea NOT NULL,
    phone_hash             bytea NOT NULL UNIQUE,
    name_enc               bytea,
    id_number_enc          bytea,
    id_number_hash         bytea UNIQUE,
    level                  smallint NOT NULL DEFAULT 1 CHECK (level BETWEEN 1 AND 3),
    status                 text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'blocked')),
    created_at             timestamptz NOT NULL DEFAULT now(),
    real_name_verified_at  timestamptz,
    face_verified_at       timestamptz
);

-- A session is one refresh-token family; revoking it ends every token descended from the first login.
CREATE TABLE identity.sessions (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    resident_id     uuid NOT NULL REFERENCES identity.residents(id),
    created_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL,
    revoked_at      timestamptz,
    revoked_reason  text
);
CREATE INDEX sessions_resident_idx ON identity.sessions (resident_id);

CREATE TABLE identity.refresh_tokens (
    token_hash  bytea PRIMARY KEY,
    session_id  uuid NOT NULL REFERENCES identity.sessions(id),
    issued_at   timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz
);
CREATE INDEX refresh_tokens_session_idx ON identity.refresh_tokens (session_id);

CREATE TABLE identity.staff_roles (
    resident_id  uuid NOT NULL REFERENCES identity.residents(id),
    role         text NOT NULL CHECK (role IN ('ops_admin', 'ops_reviewer', 'auditor')),
    granted_at   timestamptz NOT NULL DEFAULT now(),
    granted_by   text NOT NULL,
    PRIMARY KEY (resident_id, role)
);

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

CREATE TABLE identity.uscc_overrides (
    uscc        text PRIMARY KEY,
    reason      text NOT NULL,
    granted_by  text NOT NULL,
    granted_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE identity.enterprises (
    id                 uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    uscc               text NOT NULL UNIQUE,
    name               text NOT NULL,
    standing           text NOT NULL DEFAULT 'good' CHECK (standing IN ('good', 'abnormal', 'revoked')),
    checksum_override  boolean NOT NULL DEFAULT false,
    created_by         uuid NOT NULL REFERENCES identity.residents(id),
    created_at         timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE identity.enterprise_members (
    enterprise_id  uuid NOT NULL REFERENCES identity.enterprises(id),
    resident_id    uuid NOT NULL REFERENCES identity.residents(id),
    role           text NOT NULL CHECK (role IN ('admin', 'member')),
    added_at       timestamptz NOT NULL DEFAULT now(),
    added_by       uuid,
    PRIMARY KEY (enterprise_id, resident_id)
);
CREATE INDEX enterprise_members_resident_idx ON identity.enterprise_members (resident_id);

-- Dev stand-ins for the provincial population registry and the legal-entity registry. Same interface as
-- production connectors; they hold keyed hashes, never plaintext identities.
CREATE TABLE identity.dev_population_registry (
    id_number_hash  bytea PRIMARY KEY,
    name_hash       bytea NOT NULL
);

CREATE TABLE identity.dev_legal_entity_registry (
    uscc                   text PRIMARY KEY,
    name                   text NOT NULL,
    legal_rep_id_hash      bytea NOT NULL,
    status                 text NOT NULL DEFAULT 'active'
);
