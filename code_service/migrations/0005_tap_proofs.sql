-- A tap is a proof: the platform verifies the scanned code (or finds the gate operator's own online
-- verification) at the tap's time and keeps the rider it derived from it, never a subject the gate claimed.

-- An online transit verification that answered ok gets an id a gate may upload instead of the code text; the
-- code's replay id is kept with it so the tap counts against the same code.
ALTER TABLE codes.scans ADD COLUMN verification_id uuid, ADD COLUMN replay_id bytea;
CREATE UNIQUE INDEX scans_verification_idx ON codes.scans (verification_id) WHERE verification_id IS NOT NULL;

-- The rider the platform derived from the verified code, and the online verification the tap rests on (if any).
-- Taps uploaded before this migration have neither: they were claims, and the fare side takes them over as
-- taps of no known rider, so they are never billed.
ALTER TABLE codes.taps ADD COLUMN resident_id uuid, ADD COLUMN verification_id uuid;
-- At most one entry and one exit, or one single tap, per code, over every operator and gate (code_id holds the
-- verified code's replay id on proven taps). Two slots per code: a single tap takes both, so it shares the first
-- index's slot with an entry and the second's with an exit, while an entry and an exit fit together.
CREATE UNIQUE INDEX taps_replay_entry_idx ON codes.taps (code_id, (direction = 'out')) WHERE resident_id IS NOT NULL;
CREATE UNIQUE INDEX taps_replay_exit_idx ON codes.taps (code_id, (direction = 'in')) WHERE resident_id IS NOT NULL;

-- Taps the platform refused, for the operator's report; they never reach the fare side.
CREATE TABLE codes.refused_taps (
    seq              bigserial PRIMARY KEY,
    organisation_id  uuid NOT NULL,
    tap_id           text NOT NULL,
    gate_id          text NOT NULL,
    line             text NOT NULL,
    station          text NOT NULL,
    direction        text NOT NULL,
    tapped_at        timestamptz NOT NULL,
    verification_id  uuid,
    reason           text NOT NULL,
    received_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (organisation_id, tap_id)
);
CREATE INDEX refused_taps_operator_idx ON codes.refused_taps (organisation_id, seq);
