-- A department's broadcast to the users of one of its tiles (docs/decisions/0024): the audience `tile`, whose
-- residents are those who opened the tile (tiles' usage, asked through the port the tiles module hands over) on a
-- business day of the `opened_days` ending on the day it was accepted, and had by then. Written by the same job,
-- batch, row lock and cursor as a broadcast to regions: `cursor_resident` is the last resident written,
-- `cursor_region` stays null. No foreign key to tiles: notifications' tables come before tiles'.
ALTER TABLE notifications.broadcasts DROP CONSTRAINT broadcasts_audience_check;
ALTER TABLE notifications.broadcasts
    ADD COLUMN tile_id uuid,
    ADD COLUMN opened_days integer CHECK (opened_days >= 1),
    ADD CONSTRAINT broadcasts_audience CHECK (
        (audience = 'regions' AND tile_id IS NULL AND opened_days IS NULL)
        OR (audience = 'tile' AND regions = '{}' AND tile_id IS NOT NULL AND opened_days IS NOT NULL)
    );
