-- One login (OpenID Connect): departments' clients, the provider's signing keys, residents' browser sessions,
-- consents, authorization codes, grants (a token family) with their access and refresh tokens, the releases of
-- personal data the resident sees, and back-channel logouts waiting to be delivered.
CREATE SCHEMA IF NOT EXISTS oidc;

CREATE TABLE oidc.clients (
    client_id                  text PRIMARY KEY,
    organisation_id            uuid NOT NULL REFERENCES organisations.organisations(id),
    name                       text NOT NULL,
    purpose                    text NOT NULL,
    client_type                text NOT NULL CHECK (client_type IN ('confidential', 'public')),
    auth_method                text NOT NULL CHECK (auth_method IN
                                   ('private_key_jwt', 'client_secret_basic', 'client_secret_post', 'none')),
    -- A keyed hash of the secret (shown once): the server compares, it never needs the secret back.
    secret_hash                bytea,
    jwks                       jsonb,
    redirect_uris              text[] NOT NULL,
    post_logout_redirect_uris  text[] NOT NULL DEFAULT '{}',
    backchannel_logout_uri     text,
    -- What the pairwise subject is computed for: the organisation, or the host of sector_identifier_uri.
    sector                     text NOT NULL,
    scopes                     text[] NOT NULL,
    created_at                 timestamptz NOT NULL DEFAULT now(),
    revoked_at                 timestamptz,
    CHECK ((auth_method IN ('client_secret_basic', 'client_secret_post')) = (secret_hash IS NOT NULL)),
    CHECK ((auth_method = 'private_key_jwt') = (jwks IS NOT NULL)),
    CHECK ((client_type = 'public') = (auth_method = 'none'))
);
CREATE INDEX clients_organisation_idx ON oidc.clients (organisation_id);

-- The ID-token signing keys, on the code keys' schedule (docs/decisions/0006): published before they sign.
CREATE TABLE oidc.signing_keys (
    kid          text PRIMARY KEY,
    private_enc  bytea NOT NULL,
    public_jwk   jsonb NOT NULL,
    created_at   timestamptz NOT NULL,
    signs_from   timestamptz NOT NULL,
    signs_until  timestamptz,
    retire_at    timestamptz
);

-- A resident logged in to the provider in one browser (the H5 page, or the app's web-view with its token).
CREATE TABLE oidc.browser_sessions (
    id                   uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    token_hash           bytea NOT NULL UNIQUE,
    resident_id          uuid NOT NULL REFERENCES identity.residents(id),
    identity_session_id  uuid,
    auth_time            timestamptz NOT NULL DEFAULT now(),
    expires_at           timestamptz NOT NULL,
    ended_at             timestamptz
);
CREATE INDEX browser_sessions_resident_idx ON oidc.browser_sessions (resident_id);

-- One row per resident, client and claim: a sensitive claim is consented to on its own (PIPL art. 29).
CREATE TABLE oidc.consents (
    resident_id  uuid NOT NULL REFERENCES identity.residents(id),
    client_id    text NOT NULL REFERENCES oidc.clients(client_id),
    claim        text NOT NULL,
    granted_at   timestamptz NOT NULL DEFAULT now(),
    revoked_at   timestamptz,
    PRIMARY KEY (resident_id, client_id, claim)
);

CREATE TABLE oidc.authorization_codes (
    code_hash              bytea PRIMARY KEY,
    grant_id               uuid NOT NULL UNIQUE,
    client_id              text NOT NULL REFERENCES oidc.clients(client_id),
    resident_id            uuid NOT NULL REFERENCES identity.residents(id),
    browser_session_id     uuid NOT NULL REFERENCES oidc.browser_sessions(id),
    redirect_uri           text NOT NULL,
    scope                  text NOT NULL,
    nonce                  text,
    code_challenge         text,
    code_challenge_method  text,
    acr                    smallint NOT NULL,
    auth_time              timestamptz NOT NULL,
    expires_at             timestamptz NOT NULL,
    used_at                timestamptz
);
CREATE INDEX authorization_codes_expiry_idx ON oidc.authorization_codes (expires_at);

-- A token family: what one code started. Reusing the code or a spent refresh token revokes it all.
CREATE TABLE oidc.grants (
    id                  uuid PRIMARY KEY,
    client_id           text NOT NULL REFERENCES oidc.clients(client_id),
    resident_id         uuid NOT NULL REFERENCES identity.residents(id),
    browser_session_id  uuid NOT NULL REFERENCES oidc.browser_sessions(id),
    scope               text NOT NULL,
    acr                 smallint NOT NULL,
    auth_time           timestamptz NOT NULL,
    created_at          timestamptz NOT NULL DEFAULT now(),
    revoked_at          timestamptz,
    revoked_reason      text
);
CREATE INDEX grants_resident_client_idx ON oidc.grants (resident_id, client_id);
CREATE INDEX grants_session_idx ON oidc.grants (browser_session_id);

CREATE TABLE oidc.access_tokens (
    token_hash  bytea PRIMARY KEY,
    grant_id    uuid NOT NULL REFERENCES oidc.grants(id),
    scope       text NOT NULL,
    expires_at  timestamptz NOT NULL,
    revoked_at  timestamptz
);
CREATE INDEX access_tokens_grant_idx ON oidc.access_tokens (grant_id);
CREATE INDEX access_tokens_expiry_idx ON oidc.access_tokens (expires_at);

CREATE TABLE oidc.refresh_tokens (
    token_hash  bytea PRIMARY KEY,
    grant_id    uuid NOT NULL REFERENCES oidc.grants(id),
    scope       text NOT NULL,
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz
);
CREATE INDEX refresh_tokens_grant_idx ON oidc.refresh_tokens (grant_id);

-- Every release of a resident's data to a department: who received what, when and why. Append-only.
CREATE TABLE oidc.releases (
    id                 bigserial PRIMARY KEY,
    at                 timestamptz NOT NULL DEFAULT now(),
    resident_id        uuid NOT NULL,
    client_id          text NOT NULL,
    client_name        text NOT NULL,
    organisation_id    uuid NOT NULL,
    organisation_name  text NOT NULL,
    claims             text[] NOT NULL,
    purpose            text NOT NULL,
    via                text NOT NULL CHECK (via IN ('id_token', 'userinfo'))
);
CREATE INDEX releases_resident_idx ON oidc.releases (resident_id, at DESC);

CREATE FUNCTION oidc.protect_releases() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'releases of personal data are append-only';
END $$;

CREATE TRIGGER releases_append_only BEFORE UPDATE OR DELETE ON oidc.releases
    FOR EACH ROW EXECUTE FUNCTION oidc.protect_releases();

-- Back-channel logout tokens owed to clients, delivered (and retried) by a job.
CREATE TABLE oidc.logout_deliveries (
    id               bigserial PRIMARY KEY,
    client_id        text NOT NULL REFERENCES oidc.clients(client_id),
    subject          text NOT NULL,
    sid              text NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    attempts         int NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    delivered_at     timestamptz,
    abandoned_at     timestamptz,
    last_error       text
);
CREATE INDEX logout_deliveries_due_idx ON oidc.logout_deliveries (next_attempt_at)
    WHERE delivered_at IS NULL AND abandoned_at IS NULL;
