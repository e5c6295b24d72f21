-- The WeChat and Alipay mini-program identities linked to residents (docs/decisions/0023-mini-program-accounts.md).
-- A channel identity is found by a keyed hash of (channel, app id, subject) and kept encrypted: the subject is the
-- WeChat openid or the Alipay open_id (user_id for older apps), the union the WeChat unionid or the Alipay user_id
-- (the same person across a channel's apps). The session key (WeChat's session_key, Alipay's access token) is
-- kept encrypted and never leaves the server.
CREATE SCHEMA IF NOT EXISTS mini_programs;

CREATE TABLE mini_programs.identities (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    resident_id      uuid NOT NULL REFERENCES identity.residents(id),
    channel          text NOT NULL CHECK (channel IN ('wechat', 'alipay')),
    app_id           text NOT NULL,
    subject_hash     bytea NOT NULL,
    subject_enc      bytea NOT NULL,
    union_hash       bytea,
    session_key_enc  bytea,
    linked_at        timestamptz NOT NULL DEFAULT now(),
    last_login_at    timestamptz,
    -- One channel identity belongs to at most one resident.
    CONSTRAINT identities_subject_once UNIQUE (subject_hash),
    -- A resident has at most one identity per mini-program: the one its payments are made from.
    CONSTRAINT identities_one_per_app UNIQUE (resident_id, channel, app_id)
);
CREATE INDEX identities_union_idx ON mini_programs.identities (channel, union_hash) WHERE union_hash IS NOT NULL;
