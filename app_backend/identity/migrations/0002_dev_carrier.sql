-- The dev stand-in for the carriers' three-factor check (name + ID number + phone): which ID number each phone
-- is registered to. Keyed hashes only, like the dev population registry.
CREATE TABLE identity.dev_carrier_subscribers (
    phone_hash      bytea PRIMARY KEY,
    id_number_hash  bytea NOT NULL
);
