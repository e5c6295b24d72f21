-- Organisations and their credentials move to a schema of their own: each domain owns its schema (they were created
-- in the identity schema when identity, enterprises and organisations were one package). Foreign keys, indexes and
-- defaults move with the tables.
CREATE SCHEMA IF NOT EXISTS organisations;
ALTER TABLE identity.organisations SET SCHEMA organisations;
ALTER TABLE identity.api_credentials SET SCHEMA organisations;
