-- Service tiles that departments plug in (docs/decisions/0025-service-tiles.md): a tile, its versions (every change
-- is a new version, reviewed before it goes live), and the notices that tell the owning organisation what happened.
-- The application role's grants follow from the migrator (docs/decisions/0014-two-database-roles.md).
CREATE SCHEMA IF NOT EXISTS tiles;

-- One row per tile: who owns it, where it stands, and the live version's search forms (computed when a version goes
-- live, never per query). `usage_score` ranks the catalogue after relevance (filled by the usage work); `health`
-- is the health checks' verdict (filled by the health work): a degraded or suspended tile is shown to residents
-- as temporarily unavailable.
CREATE TABLE tiles.tiles (
    id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organisation_id     uuid NOT NULL REFERENCES organisations.organisations(id),
    organisation_name   text NOT NULL,
    state               text NOT NULL DEFAULT 'unpublished'
                        CHECK (state IN ('unpublished', 'live', 'suspended', 'retired')),
    live_version        integer,
    state_reason        text,
    suspended_by        text CHECK (suspended_by IN ('department', 'operations', 'health')),
    resident_notice     text,
    health              text NOT NULL DEFAULT 'ok' CHECK (health IN ('ok', 'degraded')),
    health_reason       text,
    usage_score         double precision NOT NULL DEFAULT 0,
    search_name         text NOT NULL DEFAULT '',
    search_description  text NOT NULL DEFAULT '',
    -- the name's pinyin and initials from each syllable on ("gongjijin", "jijin", "jin"), so a query matches a
    -- prefix of one of them: the name from its start, or from a later syllable
    name_pinyin         text[] NOT NULL DEFAULT '{}',
    name_initials       text[] NOT NULL DEFAULT '{}',
    search_keywords     text[] NOT NULL DEFAULT '{}',
    keywords_pinyin     text[] NOT NULL DEFAULT '{}',
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    CHECK ((state IN ('live', 'suspended')) = (live_version IS NOT NULL) OR state = 'retired'),
    CHECK ((state = 'suspended') = (suspended_by IS NOT NULL))
);
CREATE INDEX tiles_organisation_idx ON tiles.tiles (organisation_id, updated_at DESC);
CREATE INDEX tiles_shown_idx ON tiles.tiles (usage_score DESC) WHERE state IN ('live', 'suspended');

-- Every version of a tile. `content` is the TileContent as written; the columns beside it are what the catalogue
-- filters on. At most one version of a tile is open (draft or submitted) and at most one is live.
CREATE TABLE tiles.versions (
    tile_id         uuid NOT NULL REFERENCES tiles.tiles(id),
    number          integer NOT NULL CHECK (number >= 1),
    status          text NOT NULL CHECK (status IN
                    ('draft', 'submitted', 'approved', 'rejected', 'live', 'superseded', 'withdrawn', 'retired')),
    content         jsonb NOT NULL,
    name            text NOT NULL,
    category        text NOT NULL,
    regions         text[] NOT NULL,
    min_level       smallint NOT NULL CHECK (min_level BETWEEN 1 AND 3),
    review_note     text,
    reviewed_by     text,
    reviewed_at     timestamptz,
    submitted_at    timestamptz,
    published_at    timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tile_id, number)
);
CREATE UNIQUE INDEX versions_one_open_idx ON tiles.versions (tile_id) WHERE status IN ('draft', 'submitted');
CREATE UNIQUE INDEX versions_one_live_idx ON tiles.versions (tile_id) WHERE status = 'live';
CREATE INDEX versions_review_queue_idx ON tiles.versions (submitted_at) WHERE status = 'submitted';
CREATE INDEX versions_regions_idx ON tiles.versions USING gin (regions) WHERE status = 'live';

-- What the owning organisation is told: every transition of its tiles, with who made it and why. Those it made
-- itself are written already read.
CREATE TABLE tiles.notices (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organisation_id  uuid NOT NULL REFERENCES organisations.organisations(id),
    tile_id          uuid NOT NULL REFERENCES tiles.tiles(id),
    tile_name        text NOT NULL,
    version          integer,
    event            text NOT NULL,
    state            text NOT NULL,
    by_whom          text NOT NULL CHECK (by_whom IN ('department', 'operations', 'health')),
    reason           text,
    created_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    read_at          timestamptz
);
CREATE INDEX notices_organisation_idx ON tiles.notices (organisation_id, created_at DESC, id DESC);
CREATE INDEX notices_unread_idx ON tiles.notices (organisation_id) WHERE read_at IS NULL;
