-- Messages to residents (docs/decisions/0024-one-notification-service.md): every message is in the resident's
-- inbox; each channel it went out on is a delivery with its status and error. Subscribe-message grants are kept
-- per linked mini-program identity and template; a one-time grant is spent by the delivery that claims it.
CREATE SCHEMA IF NOT EXISTS notifications;

-- What the resident reported from wx.requestSubscribeMessage / my.requestSubscribeMessage. `remaining` counts the
-- one-time grants not yet spent (each accepted request allows one message); a long-term grant has no count.
CREATE TABLE notifications.subscribe_grants (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    identity_id  uuid NOT NULL REFERENCES mini_programs.identities(id) ON DELETE CASCADE,
    resident_id  uuid NOT NULL,
    channel      text NOT NULL CHECK (channel IN ('wechat', 'alipay')),
    app_id       text NOT NULL,
    template_id  text NOT NULL,
    grant_kind   text NOT NULL CHECK (grant_kind IN ('one_time', 'long_term')),
    -- accepted: may be used; rejected: the resident said no; banned: the platform banned the template;
    -- revoked: the channel refused a message for want of a grant (turned off in the client's settings).
    status       text NOT NULL CHECK (status IN ('accepted', 'rejected', 'banned', 'revoked')),
    remaining    integer NOT NULL DEFAULT 0 CHECK (remaining >= 0),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT subscribe_grants_once UNIQUE (identity_id, template_id)
);
CREATE INDEX subscribe_grants_resident_idx ON notifications.subscribe_grants (resident_id);

-- The app's push registrations; the provider's token is found by keyed hash and kept encrypted.
CREATE TABLE notifications.push_devices (
    id             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    resident_id    uuid NOT NULL REFERENCES identity.residents(id),
    platform       text NOT NULL CHECK (platform IN ('ios', 'android', 'harmony')),
    token_hash     bytea NOT NULL UNIQUE,
    token_enc      bytea NOT NULL,
    registered_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX push_devices_resident_idx ON notifications.push_devices (resident_id);

-- The inbox: one row per message. `sender` is a platform domain ("payments") or an organisation's id; a sender's
-- own key makes a repeated send the same message.
CREATE TABLE notifications.messages (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    resident_id  uuid NOT NULL REFERENCES identity.residents(id),
    kind         text NOT NULL,
    title        text NOT NULL,
    body         text NOT NULL,
    params       jsonb NOT NULL DEFAULT '{}',
    sender       text NOT NULL,
    sender_name  text NOT NULL,
    sender_key   text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    read_at      timestamptz
);
CREATE INDEX messages_inbox_idx ON notifications.messages (resident_id, created_at DESC, id DESC);
CREATE UNIQUE INDEX messages_sender_key_idx ON notifications.messages (sender, sender_key)
    WHERE sender_key IS NOT NULL;

-- Each channel a message went out on. `pending` deliveries are sent by the job (outside any transaction) and
-- retried at `next_attempt_at`; the grant a delivery spent is named, so a retry never claims another.
CREATE TABLE notifications.deliveries (
    id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    message_id          uuid NOT NULL REFERENCES notifications.messages(id),
    channel             text NOT NULL CHECK (channel IN ('inbox', 'wechat', 'alipay', 'push')),
    app_id              text,
    identity_id         uuid,
    grant_id            uuid REFERENCES notifications.subscribe_grants(id) ON DELETE SET NULL,
    device_id           uuid REFERENCES notifications.push_devices(id) ON DELETE SET NULL,
    template_id         text,
    status              text NOT NULL CHECK (status IN ('pending', 'sent', 'failed')),
    attempts            integer NOT NULL DEFAULT 0,
    error               text,
    channel_message_id  text,
    next_attempt_at     timestamptz,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    sent_at             timestamptz
);
CREATE INDEX deliveries_message_idx ON notifications.deliveries (message_id);
CREATE INDEX deliveries_due_idx ON notifications.deliveries (next_attempt_at) WHERE status = 'pending';
