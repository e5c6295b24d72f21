-- The tiles residents see (live or suspended, with their live version), serving any of `served` (all when NULL),
-- of `category` (any when NULL), most used first: one definition for the catalogue's lists and the home's cold
-- statement, which reads a resident's part and, when its node holds no fresh list for the resident's region and
-- level, these tiles in the same round trip (docs/decisions/0026-one-home.md).
CREATE FUNCTION tiles.shown(served text[], category text, lim integer)
    RETURNS TABLE (id uuid, organisation_id uuid, organisation_name text, state text, health text,
                   health_reason text, resident_notice text, usage_score double precision, number integer,
                   content jsonb, min_level smallint)
    LANGUAGE sql STABLE PARALLEL SAFE
BEGIN ATOMIC
    SELECT t.id, t.organisation_id, t.organisation_name, t.state, t.health, t.health_reason, t.resident_notice,
           t.usage_score, v.number, v.content, v.min_level
    FROM tiles.tiles t JOIN tiles.versions v ON v.tile_id = t.id AND v.number = t.live_version
    WHERE t.state IN ('live', 'suspended')
      AND (shown.served IS NULL OR v.regions && shown.served)
      AND (shown.category IS NULL OR v.category = shown.category)
    ORDER BY t.usage_score DESC, v.name, t.id
    LIMIT shown.lim;
END;
