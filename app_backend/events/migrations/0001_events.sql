-- The events zone's schedule (docs/decisions/0027-events-schedule.md): events (the games), their competitions (a
-- sport each), venues with their guide, sessions of a competition at a venue, news items and broadcast links. Each
-- row belongs to the organisation that published it (its organiser); only that organisation changes it.
-- The application role's grants follow from the migrator (docs/decisions/0014-two-database-roles.md).
CREATE SCHEMA IF NOT EXISTS events;

CREATE TABLE events.events (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organiser_id    uuid NOT NULL REFERENCES organisations.organisations(id),
    name            text NOT NULL,
    description     text NOT NULL DEFAULT '',
    starts_on       date NOT NULL,
    ends_on         date NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CHECK (ends_on >= starts_on)
);
CREATE INDEX events_starts_idx ON events.events (starts_on DESC, id);

CREATE TABLE events.competitions (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    event_id        uuid NOT NULL REFERENCES events.events(id),
    organiser_id    uuid NOT NULL REFERENCES organisations.organisations(id),
    sport           text NOT NULL,
    name            text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX competitions_event_idx ON events.competitions (event_id);

-- A venue and its guide. `gate_verifiers` are the organisations whose verifiers admit at its gates (the one code's
-- `event` scene asks, through the session's facts).
CREATE TABLE events.venues (
    id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organiser_id        uuid NOT NULL REFERENCES organisations.organisations(id),
    name                text NOT NULL,
    address             text NOT NULL,
    district            text NOT NULL,
    sections            text[] NOT NULL DEFAULT '{}',
    entrances           text[] NOT NULL DEFAULT '{}',
    transport_notes     text NOT NULL DEFAULT '',
    accessibility_notes text NOT NULL DEFAULT '',
    gate_verifiers      uuid[] NOT NULL DEFAULT '{}',
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX venues_name_idx ON events.venues (name, id);

-- A session of a competition at a venue. `scheduled_starts_at` is the start first published; `starts_at` moves when
-- the session is delayed. `finished` and `cancelled` are final (the service's state machine).
CREATE TABLE events.sessions (
    id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    competition_id      uuid NOT NULL REFERENCES events.competitions(id),
    event_id            uuid NOT NULL REFERENCES events.events(id),
    organiser_id        uuid NOT NULL REFERENCES organisations.organisations(id),
    venue_id            uuid NOT NULL REFERENCES events.venues(id),
    title               text NOT NULL,
    starts_at           timestamptz NOT NULL,
    ends_at             timestamptz NOT NULL,
    scheduled_starts_at timestamptz NOT NULL,
    status              text NOT NULL DEFAULT 'scheduled'
                        CHECK (status IN ('scheduled', 'delayed', 'live', 'finished', 'cancelled')),
    status_reason       text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    CHECK (ends_at > starts_at)
);
CREATE INDEX sessions_starts_idx ON events.sessions (starts_at, id);
CREATE INDEX sessions_venue_idx ON events.sessions (venue_id, starts_at);
CREATE INDEX sessions_competition_idx ON events.sessions (competition_id, starts_at);

CREATE TABLE events.news (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organiser_id    uuid NOT NULL REFERENCES organisations.organisations(id),
    event_id        uuid REFERENCES events.events(id),
    title           text NOT NULL,
    body            text NOT NULL,
    published_at    timestamptz NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX news_published_idx ON events.news (published_at DESC, id);

CREATE TABLE events.broadcasts (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    session_id      uuid NOT NULL REFERENCES events.sessions(id),
    organiser_id    uuid NOT NULL REFERENCES organisations.organisations(id),
    platform        text NOT NULL,
    url             text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX broadcasts_session_idx ON events.broadcasts (session_id, created_at);
