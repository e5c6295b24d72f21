-- A table of the probe domain: adding a domain brings its own migrations.
CREATE SCHEMA IF NOT EXISTS probe;
CREATE TABLE probe.pings (id bigserial PRIMARY KEY, at timestamptz NOT NULL DEFAULT now());
