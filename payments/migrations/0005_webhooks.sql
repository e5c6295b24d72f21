-- A payee's own system is told when its orders are paid or refunded: an outbox written in the same transaction
-- as the payment, delivered by a job with bounded retries.
CREATE TABLE payments.payee_webhooks (
    payee_id    uuid PRIMARY KEY,
    url         text NOT NULL,
    secret_enc  bytea NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE payments.payee_events (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    payee_id         uuid NOT NULL,
    event            text NOT NULL,
    body             jsonb NOT NULL,
    status           text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    last_error       text NOT NULL DEFAULT '',
    created_at       timestamptz NOT NULL DEFAULT now(),
    delivered_at     timestamptz
);
CREATE INDEX payee_events_due_idx ON payments.payee_events (next_attempt_at) WHERE status = 'pending';
