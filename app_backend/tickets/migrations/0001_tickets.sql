-- Ticket sales for the sessions of an event (docs/decisions/0028-ticket-sales.md): a session's sale and its ticket
-- classes, the holds residents keep while they pay, the tickets (one per attendee) and the count of tickets per ID
-- number. PostgreSQL is the truth of what is left: `sold + held <= quota` is a CHECK on the class row and every hold
-- takes its tickets with a conditional UPDATE of that row, so no number of server workers can oversell.
CREATE SCHEMA IF NOT EXISTS tickets;

-- One sale per session, set up by the session's organiser. `starts_at`, `ends_at` and `session_status` copy the
-- schedule's facts (events' on_session_changed keeps them), so a hold never asks the schedule.
CREATE TABLE tickets.sales (
    session_id          uuid PRIMARY KEY,
    organiser_id        uuid NOT NULL,
    venue_id            uuid NOT NULL,
    title               text NOT NULL,
    opens_at            timestamptz NOT NULL,
    closes_at           timestamptz NOT NULL,
    per_person          integer NOT NULL CHECK (per_person BETWEEN 1 AND 20),
    hold_seconds        integer NOT NULL CHECK (hold_seconds BETWEEN 60 AND 3600),
    return_cutoff_minutes integer NOT NULL CHECK (return_cutoff_minutes BETWEEN 0 AND 43200),
    -- NULL: no re-entry; n: a ticket admitted may enter again n minutes or more after its last admission
    re_entry_minutes    integer CHECK (re_entry_minutes BETWEEN 1 AND 1440),
    -- 0: no queue; otherwise residents are admitted from the virtual queue at this rate
    admit_per_minute    integer NOT NULL CHECK (admit_per_minute BETWEEN 0 AND 1000000),
    starts_at           timestamptz NOT NULL,
    ends_at             timestamptz NOT NULL,
    session_status      text NOT NULL,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    CHECK (closes_at > opens_at)
);

CREATE TABLE tickets.classes (
    id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    session_id          uuid NOT NULL REFERENCES tickets.sales(session_id),
    name                text NOT NULL,
    price_fen           integer NOT NULL CHECK (price_fen > 0),
    section             text NOT NULL,
    entrances           text[] NOT NULL DEFAULT '{}',
    quota               integer NOT NULL CHECK (quota >= 0),
    sold                integer NOT NULL DEFAULT 0 CHECK (sold >= 0),
    held                integer NOT NULL DEFAULT 0 CHECK (held >= 0),
    position            integer NOT NULL,
    CONSTRAINT class_quota CHECK (sold + held <= quota),
    UNIQUE (session_id, name)
);

-- Tickets held for a buyer while they pay; one payment order per hold, for life.
CREATE TABLE tickets.holds (
    id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    session_id          uuid NOT NULL REFERENCES tickets.sales(session_id),
    class_id            uuid NOT NULL REFERENCES tickets.classes(id),
    buyer_id            uuid NOT NULL,
    quantity            integer NOT NULL CHECK (quantity > 0),
    amount_fen          integer NOT NULL CHECK (amount_fen > 0),
    -- held: waiting for payment; paid: its tickets are valid; released: its tickets went back on sale;
    -- unfilled: paid after its tickets went back and none were left (the whole order is refunded)
    status              text NOT NULL DEFAULT 'held' CHECK (status IN ('held', 'paid', 'released', 'unfilled')),
    expires_at          timestamptz NOT NULL,
    order_id            uuid,
    pay                 jsonb,
    refund_id           uuid,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);
-- Partial indexes where a hold's insert need not touch them (the hold endpoint writes as little as it can).
CREATE UNIQUE INDEX holds_order ON tickets.holds (order_id) WHERE order_id IS NOT NULL;
CREATE INDEX holds_expiring ON tickets.holds (expires_at) WHERE status = 'held';
CREATE INDEX holds_unfilled ON tickets.holds (created_at) WHERE status = 'unfilled' AND refund_id IS NULL;

-- One ticket per attendee. The attendee is the buyer (attendee_resident_id = buyer_id, no name stored) or a person
-- the buyer named: name and ID number encrypted with the field cipher; `person_key` is the keyed hash identity
-- keys ID numbers by, so the per-person limit counts the same person whoever buys.
CREATE TABLE tickets.tickets (
    id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    hold_id             uuid NOT NULL REFERENCES tickets.holds(id),
    session_id          uuid NOT NULL REFERENCES tickets.sales(session_id),
    class_id            uuid NOT NULL REFERENCES tickets.classes(id),
    buyer_id            uuid NOT NULL,
    attendee_resident_id uuid,
    attendee_name_enc   bytea,
    attendee_id_enc     bytea,
    person_key          bytea NOT NULL,
    price_fen           integer NOT NULL,
    seat                text,
    -- held, valid (paid), returned (by its buyer before the cut-off), cancelled (the session was), released
    status              text NOT NULL DEFAULT 'held'
                        CHECK (status IN ('held', 'valid', 'returned', 'cancelled', 'released')),
    admitted_at         timestamptz,
    last_admitted_at    timestamptz,
    last_entrance       text,
    admissions          integer NOT NULL DEFAULT 0,
    returned_at         timestamptz,
    -- the refund of a returned or cancelled ticket (payments' refund, keyed by the ticket's id)
    refund_id           uuid,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX tickets_of_hold ON tickets.tickets (hold_id);
CREATE INDEX tickets_of_buyer ON tickets.tickets (buyer_id, created_at DESC);
-- Only tickets paid (or paid once) are indexed by session and attendee: a hold's insert touches neither.
CREATE INDEX tickets_of_attendee ON tickets.tickets (session_id, attendee_resident_id)
    WHERE status IN ('valid', 'returned', 'cancelled');
CREATE INDEX tickets_of_session ON tickets.tickets (session_id) WHERE status IN ('valid', 'cancelled');
CREATE INDEX tickets_to_refund ON tickets.tickets (updated_at)
    WHERE status IN ('returned', 'cancelled') AND refund_id IS NULL;

-- How many held or valid tickets name a person (by keyed ID number) for a session: one conditional upsert per
-- attendee keeps the limit under any concurrency, the same person bought by two accounts included.
CREATE TABLE tickets.person_counts (
    session_id          uuid NOT NULL,
    person_key          bytea NOT NULL,
    tickets             integer NOT NULL CHECK (tickets >= 0),
    -- the sale's per-person limit when the count last grew: a hold past it fails this check, whole
    max_tickets         integer NOT NULL,
    CONSTRAINT person_limit CHECK (tickets <= max_tickets),
    PRIMARY KEY (session_id, person_key)
);

-- A session delayed or cancelled: what the change job still has to do (message the holders; for a cancelled
-- session, the tickets' refunds are found by their status).
CREATE TABLE tickets.session_changes (
    id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    session_id          uuid NOT NULL REFERENCES tickets.sales(session_id),
    kind                text NOT NULL CHECK (kind IN ('delayed', 'cancelled')),
    starts_at           timestamptz NOT NULL,
    created_at          timestamptz NOT NULL DEFAULT now(),
    done_at             timestamptz
);
CREATE INDEX session_changes_pending ON tickets.session_changes (created_at) WHERE done_at IS NULL;
