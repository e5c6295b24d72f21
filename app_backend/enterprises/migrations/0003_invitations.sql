-- Members join by invitation, which the invitee accepts or declines from their own account: an administrator
-- enrols nobody without consent and learns nothing about whether a phone has an account. The invitation is
-- addressed to the phone's keyed hash (the same hash identity.residents keeps), so it also waits for a person who
-- has not logged in yet; it expires unanswered.
CREATE TABLE enterprises.member_invitations (
    id             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    enterprise_id  uuid NOT NULL REFERENCES enterprises.enterprises(id),
    phone_hash     bytea NOT NULL,
    phone_masked   text NOT NULL,
    role           text NOT NULL CHECK (role IN ('admin', 'member')),
    status         text NOT NULL DEFAULT 'pending'
                   CHECK (status IN ('pending', 'accepted', 'declined', 'revoked', 'expired')),
    invited_by     uuid NOT NULL,
    invited_at     timestamptz NOT NULL,
    expires_at     timestamptz NOT NULL,
    answered_at    timestamptz
);
-- One open invitation per enterprise and phone: inviting again renews it.
CREATE UNIQUE INDEX member_invitations_open_idx ON enterprises.member_invitations (enterprise_id, phone_hash)
    WHERE status = 'pending';
CREATE INDEX member_invitations_phone_idx ON enterprises.member_invitations (phone_hash) WHERE status = 'pending';
CREATE INDEX member_invitations_enterprise_idx ON enterprises.member_invitations (enterprise_id, invited_at);
