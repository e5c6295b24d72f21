-- The one code: signing keys, subjects, device credentials, status feeds, scans, the deny list and gate taps.
CREATE SCHEMA IF NOT EXISTS codes;

-- Platform signing keys (ES256). Private keys are AES-GCM ciphertext. A key signs while it is the newest
-- unrotated one, and stays published (JWKS) until everything it signed has expired (24 h after rotation).
CREATE TABLE codes.signing_keys (
    kid            text PRIMARY KEY,
    private_enc    bytea NOT NULL,
    public_point   bytea NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    rotated_out_at timestamptz
);

-- A subject is the pseudonymous 8-byte id a code carries: one per resident and one per enterprise.
CREATE TABLE codes.subjects (
    subject     bytea PRIMARY KEY CHECK (length(subject) = 8),
    kind        text NOT NULL CHECK (kind IN ('resident', 'enterprise')),
    ref         uuid NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (kind, ref)
);

CREATE TABLE codes.device_credentials (
    id              bytea PRIMARY KEY CHECK (length(id) = 8),
    resident_id     uuid NOT NULL,
    subject         bytea NOT NULL REFERENCES codes.subjects(subject),
    device_key      bytea NOT NULL,
    not_before      timestamptz NOT NULL,
    not_after       timestamptz NOT NULL,
    flags           smallint NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    revoked_at      timestamptz,
    revoked_reason  text
);
CREATE INDEX device_credentials_resident_idx ON codes.device_credentials (resident_id, not_after);

-- Department feeds, keyed by the person key (the keyed hash of the ID number) so a status may arrive before
-- the person has an account.
CREATE TABLE codes.health_status (
    person_key  bytea PRIMARY KEY,
    colour      text NOT NULL CHECK (colour IN ('green', 'yellow', 'red')),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    source      uuid NOT NULL
);

CREATE TABLE codes.insurance_status (
    person_key  bytea PRIMARY KEY,
    insured     boolean NOT NULL,
    scheme      text NOT NULL DEFAULT '',
    updated_at  timestamptz NOT NULL DEFAULT now(),
    source      uuid NOT NULL
);

-- Until the payments issue supplies agreements and debts: a seeded dev source of transit eligibility.
CREATE TABLE codes.dev_transit_eligibility (
    resident_id    uuid PRIMARY KEY,
    has_agreement  boolean NOT NULL DEFAULT true,
    in_debt        boolean NOT NULL DEFAULT false,
    blocked        boolean NOT NULL DEFAULT false
);

-- Online scans, written in batches off the verify path.
CREATE TABLE codes.scans (
    id                 bigserial PRIMARY KEY,
    at                 timestamptz NOT NULL,
    subject            bytea NOT NULL,
    organisation_id    uuid NOT NULL,
    organisation_name  text NOT NULL,
    key_id             text NOT NULL,
    scene              text NOT NULL,
    verdict            text NOT NULL,
    reason             text NOT NULL
);
CREATE INDEX scans_subject_idx ON codes.scans (subject, at DESC);

-- The deny list as an ordered change log; gates ask for the changes after the version they hold.
CREATE TABLE codes.deny_changes (
    version     bigserial PRIMARY KEY,
    kind        text NOT NULL CHECK (kind IN ('credential', 'account', 'debtor')),
    entry       bytea NOT NULL CHECK (length(entry) = 8),
    op          text NOT NULL CHECK (op IN ('add', 'remove')),
    reason      text NOT NULL DEFAULT '',
    at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX deny_changes_entry_idx ON codes.deny_changes (kind, entry, version DESC);

-- Taps uploaded by gates, idempotent per tap id; the payments issue turns them into trips and fares.
CREATE TABLE codes.taps (
    tap_id           text NOT NULL,
    organisation_id  uuid NOT NULL,
    gate_id          text NOT NULL,
    line             text NOT NULL,
    station          text NOT NULL,
    direction        text NOT NULL CHECK (direction IN ('in', 'out', 'single')),
    tapped_at        timestamptz NOT NULL,
    rider_token      text NOT NULL DEFAULT '',
    code_id          bytea,
    subject          bytea,
    credential_id    bytea,
    received_at      timestamptz NOT NULL DEFAULT now(),
    -- tap ids are the operator's: two operators may use the same one
    PRIMARY KEY (organisation_id, tap_id)
);
CREATE INDEX taps_subject_idx ON codes.taps (subject, tapped_at);
