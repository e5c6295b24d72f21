-- What the health checks found and how tiles are used (docs/decisions/0025-service-tiles.md): each tile's probe
-- state and a bounded history of probes, residents' opens (who opened which tile on which day), completions the
-- departments report, and the daily figures (impressions, flushed from Redis; probes, failures, outages; opens and
-- unique residents once their day's rows are purged).

-- One row per probed tile: when it is due next, and the run of failures it is in.
CREATE TABLE tiles.health_state (
    tile_id               uuid PRIMARY KEY REFERENCES tiles.tiles(id),
    next_probe_at         timestamptz NOT NULL,
    consecutive_failures  integer NOT NULL DEFAULT 0,
    failing_since         timestamptz,
    -- The health checks suspended the tile during this run of failures: they do not again in the same run (a
    -- department that resumed it meanwhile keeps it live).
    suspended_in_run      boolean NOT NULL DEFAULT false,
    last_probed_at        timestamptz,
    last_ok_at            timestamptz,
    last_error            text
);
CREATE INDEX health_state_due_idx ON tiles.health_state (next_probe_at);

-- Every probe of a tile's health-check URL and H5 entry, kept for TZT_TILE_HEALTH_HISTORY_DAYS.
CREATE TABLE tiles.health_probes (
    tile_id      uuid NOT NULL REFERENCES tiles.tiles(id),
    probed_at    timestamptz NOT NULL,
    target       text NOT NULL CHECK (target IN ('health_check_url', 'entry.h5_url')),
    ok           boolean NOT NULL,
    status_code  integer,
    latency_ms   integer,
    error        text
);
CREATE INDEX health_probes_tile_idx ON tiles.health_probes (tile_id, probed_at DESC);
CREATE INDEX health_probes_age_idx ON tiles.health_probes (probed_at);

-- Who opened which tile on which business day (Asia/Shanghai), and how often: unique residents per tile and day
-- are the rows, opens their sum. Kept for TZT_TILE_OPENS_RETENTION_DAYS; a day's figures move into usage_daily
-- before its rows are purged.
CREATE TABLE tiles.opens (
    tile_id      uuid NOT NULL REFERENCES tiles.tiles(id),
    day          date NOT NULL,
    resident_id  uuid NOT NULL REFERENCES identity.residents(id),
    opens        integer NOT NULL CHECK (opens >= 1),
    first_at     timestamptz NOT NULL,
    last_at      timestamptz NOT NULL,
    PRIMARY KEY (tile_id, day, resident_id)
);
CREATE INDEX opens_day_idx ON tiles.opens (day);
CREATE INDEX opens_resident_idx ON tiles.opens (resident_id, tile_id);

-- Completions a department reports back (a case finished, a payment made), one per department reference.
CREATE TABLE tiles.completions (
    tile_id       uuid NOT NULL REFERENCES tiles.tiles(id),
    reference     text NOT NULL,
    day           date NOT NULL,
    completed_at  timestamptz NOT NULL,
    recorded_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tile_id, reference)
);
CREATE INDEX completions_day_idx ON tiles.completions (tile_id, day);

-- Daily figures per tile. `opens` and `residents` are set when the day's rows of tiles.opens are purged
-- (`closed`); until then they are counted from those rows.
CREATE TABLE tiles.usage_daily (
    tile_id         uuid NOT NULL REFERENCES tiles.tiles(id),
    day             date NOT NULL,
    impressions     bigint NOT NULL DEFAULT 0,
    probes          integer NOT NULL DEFAULT 0,
    probe_failures  integer NOT NULL DEFAULT 0,
    outages         integer NOT NULL DEFAULT 0,
    opens           bigint NOT NULL DEFAULT 0,
    residents       bigint NOT NULL DEFAULT 0,
    closed          boolean NOT NULL DEFAULT false,
    PRIMARY KEY (tile_id, day)
);
CREATE INDEX usage_daily_day_idx ON tiles.usage_daily (day);

-- The impression batches already added to usage_daily: a batch taken from Redis is applied once, whatever
-- crashes or runs twice around it.
CREATE TABLE tiles.impression_batches (
    batch_id    uuid PRIMARY KEY,
    day         date NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX impression_batches_age_idx ON tiles.impression_batches (applied_at);
