-- A resident deletes messages (docs/decisions/0024): a deleted message leaves the inbox and the unread count, its
-- title, body and params are erased, and its pending deliveries are cancelled. The row stays, without its content,
-- as the sender's record of what was delivered and as the key that keeps a repeated send the same message.
ALTER TABLE notifications.messages ADD COLUMN deleted_at timestamptz;
DROP INDEX notifications.messages_inbox_idx;
CREATE INDEX messages_inbox_idx ON notifications.messages (resident_id, created_at DESC, id DESC)
    WHERE deleted_at IS NULL;

ALTER TABLE notifications.deliveries DROP CONSTRAINT deliveries_status_check;
ALTER TABLE notifications.deliveries ADD CONSTRAINT deliveries_status_check
    CHECK (status IN ('pending', 'sent', 'failed', 'cancelled'));
