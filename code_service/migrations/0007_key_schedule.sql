-- Signing keys get a schedule (docs/code-format.md 5.1; code_service.keys.service.KeySchedule): a key is published
-- from created_at, signs from signs_from (a day and an hour later, once every verifier has refreshed) until
-- signs_until, when its successor takes over, and stays published until retire_at, when everything it signed
-- has expired. NULL signs_until and retire_at: no successor yet.
ALTER TABLE codes.signing_keys
    ADD COLUMN signs_from  timestamptz,
    ADD COLUMN signs_until timestamptz,
    ADD COLUMN retire_at   timestamptz;

-- Keys made before the schedule signed from their creation; one rotated out signed until then and keeps the 24 h
-- and a minute of publication it was promised.
UPDATE codes.signing_keys SET signs_from = created_at;
UPDATE codes.signing_keys
   SET signs_until = rotated_out_at, retire_at = rotated_out_at + interval '24 hours 1 minute'
 WHERE rotated_out_at IS NOT NULL;

-- The key signing now keeps signing. Should two keys have been left signing, the newest signs, as it did.
UPDATE codes.signing_keys AS k
   SET signs_until = newest.created_at, retire_at = newest.created_at + interval '24 hours 1 minute'
  FROM (SELECT kid, created_at FROM codes.signing_keys WHERE rotated_out_at IS NULL
         ORDER BY created_at DESC, kid DESC LIMIT 1) AS newest
 WHERE k.rotated_out_at IS NULL AND k.kid <> newest.kid;

ALTER TABLE codes.signing_keys
    ALTER COLUMN signs_from SET NOT NULL,
    DROP COLUMN rotated_out_at,
    ADD CONSTRAINT signing_keys_schedule_in_order
        CHECK (signs_from >= created_at AND (signs_until IS NULL OR signs_until >= signs_from));
