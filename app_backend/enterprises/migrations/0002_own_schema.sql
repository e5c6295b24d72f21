-- Enterprises, their members, the credit-code overrides and the dev legal-entity registry move to a schema of
-- their own (see organisations/migrations/0003_own_schema.sql). Members still reference identity.residents.
CREATE SCHEMA IF NOT EXISTS enterprises;
ALTER TABLE identity.enterprises SET SCHEMA enterprises;
ALTER TABLE identity.enterprise_members SET SCHEMA enterprises;
ALTER TABLE identity.uscc_overrides SET SCHEMA enterprises;
ALTER TABLE identity.dev_legal_entity_registry SET SCHEMA enterprises;
