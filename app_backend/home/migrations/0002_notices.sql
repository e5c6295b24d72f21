-- Notices and banners on the home (events, outages), managed by operations (docs/decisions/0026-one-home.md): shown
-- to the residents of their regions (the city's code: every district) between starts_at and ends_at.
CREATE TABLE home.notices (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    kind         text NOT NULL CHECK (kind IN ('event', 'outage')),
    title        text NOT NULL,
    body         text NOT NULL,
    link         text,
    regions      text[] NOT NULL,
    starts_at    timestamptz NOT NULL,
    ends_at      timestamptz NOT NULL CHECK (ends_at > starts_at),
    created_by   text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    withdrawn_at timestamptz
);
CREATE INDEX notices_current_idx ON home.notices (ends_at) WHERE withdrawn_at IS NULL;
