-- A tap uploaded with a scanned code is checked against the platform's own record of where that code was shown
-- online: one operator cannot bill a code another operator's gate verified in transit. Every scan now keeps its
-- code's replay id; found by this index.
CREATE INDEX scans_replay_idx ON codes.scans (replay_id) WHERE replay_id IS NOT NULL;
