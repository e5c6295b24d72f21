-- The district a resident lives in (a region code of app_backend/kernel/regions.py), chosen by the resident; NULL
-- until chosen, which counts as the city (321200). What the home shows and which broadcasts reach the resident
-- follow it. A district of seven is not an address: it is kept in the clear so that a broadcast's residents are
-- selected by the database (docs/decisions/0024).
ALTER TABLE identity.residents ADD COLUMN region text CHECK (region ~ '^[0-9]{6}$');
-- A district's residents, in id order (a broadcast walks them in batches from the last id written).
CREATE INDEX residents_region_idx ON identity.residents (region, id) WHERE region IS NOT NULL;
