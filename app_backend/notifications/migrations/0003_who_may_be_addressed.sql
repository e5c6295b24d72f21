-- Whom an organisation may message (docs/decisions/0024): the residents who used its service, and the residents
-- of the regions operations allow it to address. (Residents who logged in to one of its apps through one login
-- are asked of oidc when a message is sent.)

-- A resident used an organisation's service: paid one of its orders (as its payee or a payee its splits name),
-- recorded in the paying transaction; 'tile' is for the residents who open its tiles (tiles' usage, to come).
CREATE TABLE notifications.service_users (
    organisation_id  uuid NOT NULL,
    resident_id      uuid NOT NULL,
    via              text NOT NULL CHECK (via IN ('paid_order', 'tile')),
    first_at         timestamptz NOT NULL DEFAULT now(),
    last_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (organisation_id, resident_id, via)
);
-- The orders paid before this table existed.
INSERT INTO notifications.service_users (organisation_id, resident_id, via, first_at, last_at)
SELECT payee_id, payer_id, 'paid_order', min(paid_at), max(paid_at)
FROM (
    SELECT o.payee_id, o.payer_id, o.paid_at FROM payments.orders o
    WHERE o.paid_at IS NOT NULL AND o.payer_id IS NOT NULL
    UNION ALL
    SELECT s.payee_id, o.payer_id, o.paid_at FROM payments.order_shares s JOIN payments.orders o ON o.id = s.order_id
    WHERE o.paid_at IS NOT NULL AND o.payer_id IS NOT NULL
) paid
GROUP BY payee_id, payer_id
ON CONFLICT DO NOTHING;

-- The regions (app_backend/kernel/regions.py) an organisation may address, granted by operations
-- (PUT /api/v1/admin/organisations/{id}/message-regions, audited): broadcasts to them, and messages to their
-- residents whether or not they used its service. The city's code covers every district.
CREATE TABLE notifications.message_regions (
    organisation_id  uuid NOT NULL REFERENCES organisations.organisations(id),
    region           text NOT NULL CHECK (region ~ '^[0-9]{6}$'),
    granted_at       timestamptz NOT NULL DEFAULT now(),
    granted_by       text NOT NULL,
    PRIMARY KEY (organisation_id, region)
);
