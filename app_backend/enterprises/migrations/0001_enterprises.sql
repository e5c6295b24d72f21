-- Enterprises, their members, the audited credit-code overrides, and the dev stand-in for the legal-entity
-- registry (keyed hashes only, the same interface as the production connector).
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

CREATE TABLE identity.dev_legal_entity_registry (
    uscc                   text PRIMARY KEY,
    name                   text NOT NULL,
    legal_rep_id_hash      bytea NOT NULL,
    status                 text NOT NULL DEFAULT 'active'
);
