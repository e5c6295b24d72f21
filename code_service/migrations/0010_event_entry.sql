-- Entry with the one code (docs/code-format.md 7.1, decision 0029).
-- Printed ticket codes the platform signed: which key signed a ticket of which occasion, valid until when. A key
-- stays in the JWKS until every printed ticket it signed has expired (codes.signing_keys.retire_at is held back),
-- since a ticket printed weeks ahead is shown at a gate that only knows the published keys.
CREATE TABLE codes.ticket_codes (
    ticket_id    uuid NOT NULL,
    kid          text NOT NULL,
    occasion_id  uuid NOT NULL,
    not_after    timestamptz NOT NULL,
    issued_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (ticket_id, kid)
);
CREATE INDEX ticket_codes_kid_idx ON codes.ticket_codes (kid, not_after);

-- Admissions a gate made offline and uploaded later: one row per (organisation, admission id), claimed before the
-- ticket's provider is asked, so an upload sent again is answered from here and never admits twice.
CREATE TABLE codes.event_admissions (
    organisation_id  uuid NOT NULL,
    admission_id     text NOT NULL,
    occasion_id      uuid NOT NULL,
    entrance         text NOT NULL,
    scanned_at       timestamptz NOT NULL,
    received_at      timestamptz NOT NULL DEFAULT now(),
    status           text NOT NULL DEFAULT 'pending',  -- admitted | refused
    reason           text NOT NULL DEFAULT '',
    ticket_id        uuid,
    section          text,
    seat             text,
    PRIMARY KEY (organisation_id, admission_id)
);
