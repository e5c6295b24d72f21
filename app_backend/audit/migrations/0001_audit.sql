-- The audit trail (GB/T 22239 level 3): time, actor, event, outcome. Append-only: rows cannot be changed and
-- can be deleted only once older than the retention period (185 days).
CREATE SCHEMA IF NOT EXISTS audit;

CREATE TABLE audit.events (
    id           bigserial PRIMARY KEY,
    at           timestamptz NOT NULL DEFAULT now(),
    actor_type   text NOT NULL,
    actor_id     text NOT NULL,
    action       text NOT NULL,
    target_type  text NOT NULL DEFAULT '',
    target_id    text NOT NULL DEFAULT '',
    outcome      text NOT NULL,
    request_id   text NOT NULL DEFAULT '',
    ip           text NOT NULL DEFAULT '',
    detail       jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX events_at_idx ON audit.events (at);
CREATE INDEX events_actor_idx ON audit.events (actor_type, actor_id, at);
CREATE INDEX events_target_idx ON audit.events (target_type, target_id, at);

CREATE FUNCTION audit.protect_events() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        RAISE EXCEPTION 'audit events are append-only';
    END IF;
    IF OLD.at > now() - interval '185 days' THEN
        RAISE EXCEPTION 'audit events are kept at least 185 days';
    END IF;
    RETURN OLD;
END $$;

CREATE TRIGGER events_append_only BEFORE UPDATE OR DELETE ON audit.events
    FOR EACH ROW EXECUTE FUNCTION audit.protect_events();
