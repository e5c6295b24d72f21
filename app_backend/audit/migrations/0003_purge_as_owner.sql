-- The server's database role may only read and append to audit.events (app_backend/composition/roles.py). The
-- retention purge is the one deletion it needs: this function runs it with the owner's rights, and deletes only
-- what is past the retention period and at least 185 days old (the trigger refuses younger rows anyway).
CREATE FUNCTION audit.purge_expired(cutoff timestamptz) RETURNS bigint
    LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    WITH gone AS (
        DELETE FROM audit.events WHERE at < least(cutoff, now() - interval '185 days') RETURNING 1
    )
    SELECT count(*) FROM gone
$$;
REVOKE EXECUTE ON FUNCTION audit.purge_expired(timestamptz) FROM PUBLIC;
