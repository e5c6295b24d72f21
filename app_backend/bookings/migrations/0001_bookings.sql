-- Venue booking (场馆预约, docs/decisions/0030-venue-booking.md): a venue's facilities (courts, pools, halls), their
-- time slots with capacity and price, residents' bookings of places in a slot, paid through payments' orders, and
-- the no-shows that limit future booking. The venues themselves are the schedule's (app_backend/events).
-- The application role's grants follow from the migrator (docs/decisions/0014-two-database-roles.md).
CREATE SCHEMA IF NOT EXISTS bookings;

-- A bookable part of a venue, offered by the venue's organiser.
CREATE TABLE bookings.facilities (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    venue_id      uuid NOT NULL,
    organiser_id  uuid NOT NULL REFERENCES organisations.organisations(id),
    name          text NOT NULL,
    kind          text NOT NULL CHECK (kind IN ('court', 'pool', 'hall', 'field', 'other')),
    created_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (venue_id, name)
);

-- A time slot of a facility. `booked` (paid places) and `held` (places held while their booker pays) move only by
-- conditional updates; the CHECK is the no-oversell rule the database keeps whatever the code does.
CREATE TABLE bookings.slots (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    facility_id      uuid NOT NULL REFERENCES bookings.facilities(id),
    venue_id         uuid NOT NULL,
    organiser_id     uuid NOT NULL,
    starts_at        timestamptz NOT NULL,
    ends_at          timestamptz NOT NULL,
    capacity         integer NOT NULL CHECK (capacity > 0),
    price_fen        bigint NOT NULL CHECK (price_fen > 0),
    book_until       timestamptz NOT NULL,
    cancel_until     timestamptz NOT NULL,
    booked           integer NOT NULL DEFAULT 0,
    held             integer NOT NULL DEFAULT 0,
    status           text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'cancelled')),
    cancel_reason    text,
    no_shows_marked  boolean NOT NULL DEFAULT false,
    created_at       timestamptz NOT NULL DEFAULT now(),
    CHECK (ends_at > starts_at),
    CHECK (book_until <= starts_at AND cancel_until <= starts_at),
    CHECK (booked >= 0 AND held >= 0 AND booked + held <= capacity),
    UNIQUE (facility_id, starts_at)
);
CREATE INDEX slots_venue_time_idx ON bookings.slots (venue_id, starts_at);
CREATE INDEX slots_to_mark_idx ON bookings.slots (ends_at) WHERE status = 'open' AND NOT no_shows_marked;

-- A resident's places in a slot: `held` while its order can be paid, `paid` once it is, `released` when the hold
-- ended unpaid (order closed), `cancelled` by the resident or with the slot. `refund`: 'due' until the refund job
-- (or the cancel itself) has asked payments' refund path, then 'requested'.
CREATE TABLE bookings.bookings (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    slot_id          uuid NOT NULL REFERENCES bookings.slots(id),
    resident_id      uuid NOT NULL,
    places           integer NOT NULL CHECK (places > 0),
    amount_fen       bigint NOT NULL CHECK (amount_fen > 0),
    order_id         uuid NOT NULL UNIQUE,
    pay              jsonb,
    status           text NOT NULL DEFAULT 'held' CHECK (status IN ('held', 'paid', 'released', 'cancelled')),
    hold_expires_at  timestamptz NOT NULL,
    cancelled_by     text CHECK (cancelled_by IN ('resident', 'organiser', 'late_payment')),
    refund           text CHECK (refund IN ('due', 'requested', 'failed')),
    refund_id        uuid,
    admitted_at      timestamptz,
    admitted_by      uuid,
    no_show_at       timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
-- One live booking per resident and slot (more places in it for companions).
CREATE UNIQUE INDEX bookings_one_live_idx ON bookings.bookings (slot_id, resident_id)
    WHERE status IN ('held', 'paid');
CREATE INDEX bookings_resident_idx ON bookings.bookings (resident_id, created_at DESC);
CREATE INDEX bookings_holds_idx ON bookings.bookings (hold_expires_at) WHERE status = 'held';
CREATE INDEX bookings_refunds_idx ON bookings.bookings (updated_at) WHERE refund = 'due';
CREATE INDEX bookings_slot_paid_idx ON bookings.bookings (slot_id) WHERE status = 'paid';
CREATE INDEX bookings_no_shows_idx ON bookings.bookings (resident_id, no_show_at) WHERE no_show_at IS NOT NULL;

-- A resident's Idempotency-Keys for booking: the first request's hash and the booking it made (claimed by the
-- primary key, never select-then-insert).
CREATE TABLE bookings.requests (
    resident_id   uuid NOT NULL,
    key           text NOT NULL,
    request_hash  bytea NOT NULL,
    booking_id    uuid,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (resident_id, key)
);

-- A resident limited for repeated no-shows: no booking before `until`. Only no-shows after `since` count towards
-- the next limit, so the same no-shows never limit twice.
CREATE TABLE bookings.restrictions (
    resident_id  uuid PRIMARY KEY,
    since        timestamptz NOT NULL,
    until        timestamptz NOT NULL,
    no_shows     integer NOT NULL
);
