-- What opened a session when another domain recognised the resident (a login through a linked mini-program
-- identity is 'mini_programs.identity:<id>'; NULL for an OTP login), so that the sessions one origin opened can
-- end together: unlinking a mini-program identity logs that mini-program out (docs/decisions/0023).
ALTER TABLE identity.sessions ADD COLUMN origin text;
CREATE INDEX sessions_origin_idx ON identity.sessions (resident_id, origin) WHERE origin IS NOT NULL;
