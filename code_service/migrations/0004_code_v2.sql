-- Code format version 2 (docs/code-format.md): scene keys, fresh device keys, and the holder's level for the
-- scenes' minimum levels.

-- Scene-key epochs: one 32-byte key per scene (transit, health, medical, enterprise), AES-GCM ciphertext of a JSON
-- object (FieldCipher, as signing keys). Codes carry the epoch id; the platform issues with the newest epoch whose
-- use_from has come, publishes an epoch at least 25 h before its use_from and keeps it until use_until + 24 h
-- (docs/code-format.md 5.4).
CREATE TABLE codes.scene_epochs (
    epoch       bytea PRIMARY KEY CHECK (length(epoch) = 4),
    keys_enc    bytea NOT NULL,
    use_from    timestamptz NOT NULL,
    use_until   timestamptz NOT NULL CHECK (use_until > use_from),
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX scene_epochs_use_idx ON codes.scene_epochs (use_from DESC);

-- Every device key the platform ever bound, as SHA-256 of its compressed point: a phone makes a fresh key pair for
-- each credential, and a key bound once is refused, so a device key links the codes of one credential only.
CREATE TABLE codes.bound_device_keys (
    key_hash  bytea PRIMARY KEY CHECK (length(key_hash) = 32),
    bound_at  timestamptz NOT NULL DEFAULT now()
);
INSERT INTO codes.bound_device_keys (key_hash)
SELECT DISTINCT sha256(device_key) FROM codes.device_credentials ON CONFLICT DO NOTHING;

-- RESIDENT_FACTS answers the resident's level too (code_service/codes/repository.py): a scene's entitlement is
-- only issued to a holder at or above the scene's minimum level (SCENE_MIN_LEVEL). A new column changes the
-- function's type, so it is dropped and created again (0003 stays as it was applied).
DROP FUNCTION code_ports.resident_facts(uuid);

CREATE FUNCTION code_ports.resident_facts(resident uuid)
    RETURNS TABLE (active boolean, name_enc bytea, person_key bytea, may_ride boolean, ride_reason text,
                   level smallint)
    LANGUAGE sql STABLE PARALLEL SAFE
BEGIN ATOMIC
    SELECT coalesce(r.status = 'active', false), r.name_enc, r.id_number_hash, e.reason = '', e.reason,
           coalesce(r.level, 0::smallint)
    FROM (SELECT CASE
                     WHEN NOT EXISTS (SELECT 1 FROM payments.transit_agreements a
                                      WHERE a.resident_id = resident_facts.resident AND a.status = 'active')
                         THEN 'no-agreement'
                     WHEN EXISTS (SELECT 1 FROM payments.transit_blocks b
                                  WHERE b.resident_id = resident_facts.resident)
                         THEN 'blocked'
                     WHEN EXISTS (SELECT 1 FROM payments.transit_deductions d
                                  WHERE d.resident_id = resident_facts.resident AND d.status = 'failed'
                                    AND d.cleared_at IS NULL)
                         THEN 'in-debt'
                     ELSE ''
                 END AS reason
          OFFSET 0) AS e  -- keeps the subquery whole: its CASE is read twice and should run once
    LEFT JOIN identity.residents r ON r.id = resident_facts.resident;
END;
