-- Protocol v2: an account's devices, their prekeys, and one queue per
-- device (see the SQLite migration of the same number).

CREATE TABLE device_lists (
    phone       TEXT PRIMARY KEY,
    version     BIGINT NOT NULL,
    list        BYTEA NOT NULL,
    updated_at  BIGINT NOT NULL
);

CREATE TABLE devices (
    phone        TEXT NOT NULL,
    device       BIGINT NOT NULL,
    certificate  BYTEA NOT NULL,
    added_at     BIGINT NOT NULL,
    last_seen    BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (phone, device)
);

CREATE TABLE prekeys (
    phone      TEXT NOT NULL,
    device     BIGINT NOT NULL,
    kind       BIGINT NOT NULL,
    prekey_id  BIGINT NOT NULL,
    prekey     BYTEA NOT NULL,
    stored_at  BIGINT NOT NULL,
    PRIMARY KEY (phone, device, kind, prekey_id)
);

ALTER TABLE message_queue ADD COLUMN device BIGINT NOT NULL DEFAULT 0;
ALTER TABLE message_queue ADD COLUMN sender_device BIGINT NOT NULL DEFAULT 0;
ALTER TABLE message_queue DROP CONSTRAINT message_queue_recipient_id_key;
ALTER TABLE message_queue
    ADD CONSTRAINT message_queue_recipient_device_id_key UNIQUE (recipient, device, id);
DROP INDEX message_queue_by_recipient;
CREATE INDEX message_queue_by_device ON message_queue (recipient, device, seq);
-- The index of senders' shares of a recipient's queue, as the SQLite
-- migration of this number makes it again after its table rebuild (already
-- there where migration 0004 ran).
CREATE INDEX IF NOT EXISTS message_queue_by_sender ON message_queue (recipient, sender);
