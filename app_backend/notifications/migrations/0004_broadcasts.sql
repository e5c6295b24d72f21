-- A department's broadcast (docs/decisions/0024): one message per resident of the regions it names (regions the
-- organisation may address), written by a job in batches, never in the request. The job walks the regions in
-- order and each region's residents in id order; `cursor_region` and `cursor_resident` say where it is, moved in
-- the transaction that writes the batch while the row is locked, so two runs never write one batch twice.
CREATE TABLE notifications.broadcasts (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organisation_id  uuid NOT NULL REFERENCES organisations.organisations(id),
    sender_name      text NOT NULL,
    broadcast_key    text NOT NULL,
    -- Who it is for: the residents of `regions` (a later audience: the residents who opened one of its tiles).
    audience         text NOT NULL CHECK (audience IN ('regions')),
    regions          text[] NOT NULL,
    kind             text NOT NULL,
    title            text NOT NULL,
    body             text NOT NULL,
    params           jsonb NOT NULL DEFAULT '{}',
    -- queued: accepted, not started; writing; done: every resident written; stopped: the organisation may no
    -- longer address one of the regions (operations took it back), the rest is not written.
    status           text NOT NULL DEFAULT 'queued' CHECK (status IN ('queued', 'writing', 'done', 'stopped')),
    stopped_reason   text,
    -- The residents to write to (those of the regions whose accounts existed when it was accepted), counted when
    -- the job starts; the messages written so far.
    total            integer,
    written          integer NOT NULL DEFAULT 0,
    cursor_region    text,
    cursor_resident  uuid,
    created_at       timestamptz NOT NULL DEFAULT now(),
    started_at       timestamptz,
    finished_at      timestamptz,
    CONSTRAINT broadcasts_key UNIQUE (organisation_id, broadcast_key)
);
CREATE INDEX broadcasts_open_idx ON notifications.broadcasts (created_at) WHERE status IN ('queued', 'writing');

-- A broadcast's message to one resident: at most one, whichever run writes it.
ALTER TABLE notifications.messages ADD COLUMN broadcast_id uuid REFERENCES notifications.broadcasts(id);
CREATE UNIQUE INDEX messages_broadcast_idx ON notifications.messages (broadcast_id, resident_id)
    WHERE broadcast_id IS NOT NULL;
