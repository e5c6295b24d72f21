-- Residents and their sessions. Personal data is stored only as AES-GCM ciphertext (*_enc) plus a keyed hash
-- (*_hash) for lookups: no plaintext name, ID number or phone lives here. (Organisations and enterprises were
-- created by this same script before each had its own migrations; their tables stay in the identity schema.)
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

-- Dev stand-ins for the provincial population registry. Same interface as
-- production connectors; they hold keyed hashes, never plaintext identities.
CREATE TABLE identity.dev_population_registry (
    id_number_hash  bytea PRIMARY KEY,
    name_hash       bytea NOT NULL
);
