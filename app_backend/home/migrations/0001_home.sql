-- The resident's home (docs/decisions/0026-one-home.md): the tiles a resident pinned, in the order they pinned them.
-- The application role's grants follow from the migrator (docs/decisions/0014-two-database-roles.md).
CREATE SCHEMA IF NOT EXISTS home;

CREATE TABLE home.pins (
    resident_id uuid NOT NULL,
    tile_id     uuid NOT NULL,
    position    integer NOT NULL,
    pinned_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (resident_id, tile_id)
);
CREATE INDEX pins_order_idx ON home.pins (resident_id, position);
