-- Transit, ride first and pay later: withholding agreements, the fare table, taps taken over from the gates,
-- trips, batched deductions, debts and their repayment. Integer fen everywhere. See payments/transit/service.py
-- for the rules (pairing, fares, the daily cap) and the accounting of debts.

-- A withholding agreement (Alipay agreement / WeChat papay contract). Only an ACTIVE one lets its rider ride.
CREATE TABLE payments.transit_agreements (
    id                     uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    resident_id            uuid NOT NULL,
    channel                text NOT NULL,
    payer_channel_id       text NOT NULL DEFAULT '',
    external_agreement_no  text NOT NULL UNIQUE,   -- ours (Alipay external_agreement_no, WeChat contract_code)
    agreement_no           text,                   -- the channel's, once signed
    status                 text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'active', 'ended')),
    sign_params            jsonb NOT NULL DEFAULT '{}',
    end_reason             text NOT NULL DEFAULT '',
    created_at             timestamptz NOT NULL DEFAULT now(),
    activated_at           timestamptz,
    ended_at               timestamptz,
    updated_at             timestamptz NOT NULL DEFAULT now(),
    CHECK (status <> 'active' OR agreement_no IS NOT NULL)
);
CREATE INDEX transit_agreements_resident_idx ON payments.transit_agreements (resident_id, status);
CREATE INDEX transit_agreements_pending_idx ON payments.transit_agreements (created_at) WHERE status = 'pending';

-- Riders operations have barred from transit (fare evasion, fraud); online verification refuses them.
CREATE TABLE payments.transit_blocks (
    resident_id  uuid PRIMARY KEY,
    reason       text NOT NULL DEFAULT '',
    blocked_at   timestamptz NOT NULL DEFAULT now()
);

-- The fare table. One row per line (the line code gates put in their taps); '*' is the fare of any other line.
-- flat: every trip costs flat_fen. distance: base_fen up to base_m metres between the entry and exit stations,
-- then step_fen for every started step_m, never above max_fen. max_fen is also what a trip with a missing entry
-- or exit, a transfer between lines, or a single tap on a distance line costs.
CREATE TABLE payments.transit_fare_lines (
    line      text PRIMARY KEY,
    kind      text NOT NULL CHECK (kind IN ('flat', 'distance')),
    flat_fen  integer NOT NULL DEFAULT 0 CHECK (flat_fen >= 0),
    base_fen  integer NOT NULL DEFAULT 0 CHECK (base_fen >= 0),
    base_m    integer NOT NULL DEFAULT 0 CHECK (base_m >= 0),
    step_m    integer NOT NULL DEFAULT 1 CHECK (step_m > 0),
    step_fen  integer NOT NULL DEFAULT 0 CHECK (step_fen >= 0),
    max_fen   integer NOT NULL CHECK (max_fen > 0),
    CHECK (kind <> 'flat' OR flat_fen <= max_fen),
    CHECK (kind <> 'distance' OR base_fen <= max_fen)
);

-- Where each station of a distance line lies along it, in metres from the line's first station.
CREATE TABLE payments.transit_fare_stations (
    line        text NOT NULL REFERENCES payments.transit_fare_lines(line),
    station     text NOT NULL,
    position_m  integer NOT NULL CHECK (position_m >= 0),
    PRIMARY KEY (line, station)
);

-- One row: the daily cap per rider (all operators together, by the Beijing date a trip began) and the hours after
-- which an entry with no exit (or an exit with no entry) is charged as such.
CREATE TABLE payments.transit_fare_policy (
    id              boolean PRIMARY KEY DEFAULT true CHECK (id),
    daily_cap_fen   integer NOT NULL CHECK (daily_cap_fen > 0),
    open_tap_hours  integer NOT NULL CHECK (open_tap_hours > 0)
);

INSERT INTO payments.transit_fare_policy (daily_cap_fen, open_tap_hours) VALUES (1500, 4);
INSERT INTO payments.transit_fare_lines (line, kind, flat_fen, base_fen, base_m, step_m, step_fen, max_fen) VALUES
    ('*',  'flat',     200, 0,   0,    1,    0,   200),
    ('1',  'distance', 0,   200, 6000, 6000, 100, 600),
    ('B1', 'flat',     200, 0,   0,    1,    0,   200),
    ('B2', 'flat',     100, 0,   0,    1,    0,   100),
    ('B8', 'flat',     200, 0,   0,    1,    0,   200);
INSERT INTO payments.transit_fare_stations (line, station, position_m) VALUES
    ('1', '泰州站',     0),
    ('1', '鼓楼路',     2400),
    ('1', '坡子街',     4100),
    ('1', '稻河古街区', 5900),
    ('1', '海陵北路',   8300),
    ('1', '凤城河',     11200),
    ('1', '医药城',     15800),
    ('1', '高港',       23500);

-- Taps taken over from the gates' upload table, with the rider they belong to. `open` taps wait for their pair;
-- `used` ones are part of a trip; a tap whose code subject is no resident is kept as `unknown_rider`.
CREATE TABLE payments.transit_taps (
    organisation_id  uuid NOT NULL,   -- the operator
    tap_id           text NOT NULL,
    resident_id      uuid,
    subject          bytea,
    gate_id          text NOT NULL,
    line             text NOT NULL,
    station          text NOT NULL,
    direction        text NOT NULL CHECK (direction IN ('in', 'out', 'single')),
    tapped_at        timestamptz NOT NULL,
    state            text NOT NULL CHECK (state IN ('open', 'used', 'unknown_rider')),
    trip_id          uuid,
    taken_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (organisation_id, tap_id)
);
CREATE INDEX transit_taps_open_idx ON payments.transit_taps (resident_id, organisation_id, tapped_at)
    WHERE state = 'open';

-- One deduction per rider and operator per run, under the rider's active agreement, as a transit_fare order.
-- A failed one is a debt until cleared (by a repayment, or by the money arriving late after all).
CREATE TABLE payments.transit_deductions (
    id             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    resident_id    uuid NOT NULL,
    payee_id       uuid NOT NULL,     -- the operator
    agreement_id   uuid REFERENCES payments.transit_agreements(id),
    order_id       uuid UNIQUE REFERENCES payments.orders(id),   -- none when there was no agreement to deduct under
    out_trade_no   text UNIQUE,
    channel        text NOT NULL DEFAULT '',
    amount_fen     bigint NOT NULL CHECK (amount_fen > 0),
    status         text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'paid', 'failed')),
    failure        text NOT NULL DEFAULT '',     -- refused | unanswered | no-agreement
    overpaid       boolean NOT NULL DEFAULT false,  -- money arrived after the debt had been repaid: refund it
    created_at     timestamptz NOT NULL DEFAULT now(),
    sent_at        timestamptz,
    resolved_at    timestamptz,
    cleared_at     timestamptz,
    cleared_by     text NOT NULL DEFAULT '',
    CHECK (cleared_at IS NULL OR status = 'failed')
);
CREATE INDEX transit_deductions_pending_idx ON payments.transit_deductions (created_at) WHERE status = 'pending';
CREATE INDEX transit_deductions_debt_idx ON payments.transit_deductions (resident_id, created_at)
    WHERE status = 'failed' AND cleared_at IS NULL;

-- A repayment: a normal order paying the debts owed to one operator; paid, it clears them all at once.
CREATE TABLE payments.transit_repayments (
    order_id       uuid PRIMARY KEY REFERENCES payments.orders(id),
    resident_id    uuid NOT NULL,
    payee_id       uuid NOT NULL,
    amount_fen     bigint NOT NULL CHECK (amount_fen > 0),
    deduction_ids  uuid[] NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    applied_at     timestamptz,
    overpaid_fen   bigint NOT NULL DEFAULT 0   -- paid for debts already cleared otherwise: refund it
);

CREATE TABLE payments.transit_trips (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    resident_id   uuid NOT NULL,
    operator_id   uuid NOT NULL,
    kind          text NOT NULL CHECK (kind IN ('paired', 'single', 'open_entry', 'open_exit')),
    line_in       text,
    station_in    text,
    started_at    timestamptz NOT NULL,
    line_out      text,
    station_out   text,
    ended_at      timestamptz,
    day           date NOT NULL,     -- the Beijing date the trip began: the daily cap's day
    fare_fen      integer NOT NULL CHECK (fare_fen >= 0),
    charged_fen   integer NOT NULL CHECK (charged_fen >= 0 AND charged_fen <= fare_fen),
    status        text NOT NULL CHECK (status IN ('unbilled', 'waived', 'billing', 'paid', 'debt', 'repaid')),
    deduction_id  uuid REFERENCES payments.transit_deductions(id),
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX transit_trips_unbilled_idx ON payments.transit_trips (resident_id, operator_id)
    WHERE status = 'unbilled';
CREATE INDEX transit_trips_day_idx ON payments.transit_trips (resident_id, day);
CREATE INDEX transit_trips_deduction_idx ON payments.transit_trips (deduction_id);
