-- Protocol v2: an account's devices, their prekeys, and one queue per device.

-- The current signed device list of each local account (only a higher
-- version replaces it).
CREATE TABLE device_lists (
    phone       TEXT PRIMARY KEY,
    version     BIGINT NOT NULL,
    list        BLOB NOT NULL,
    updated_at  BIGINT NOT NULL
);

-- One row per device of the current list, with its signed certificate.
CREATE TABLE devices (
    phone        TEXT NOT NULL,
    device       BIGINT NOT NULL,
    certificate  BLOB NOT NULL,
    added_at     BIGINT NOT NULL,
    last_seen    BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (phone, device)
);

-- Public prekeys as the device signed them. Kinds 1 and 3 (signed and
-- last-resort ML-KEM) have one current row per device; kinds 2 and 4 are
-- pools of one-time keys, each deleted as it is handed out.
CREATE TABLE prekeys (
    phone      TEXT NOT NULL,
    device     BIGINT NOT NULL,
    kind       BIGINT NOT NULL,
    prekey_id  BIGINT NOT NULL,
    prekey     BLOB NOT NULL,
    stored_at  BIGINT NOT NULL,
    PRIMARY KEY (phone, device, kind, prekey_id)
);

-- Each device has its own queue: `device` is the recipient's device (0 for
-- an account without devices), `sender_device` the sender's. An id is
-- unique per recipient device.
CREATE TABLE message_queue_new (
    seq            INTEGER PRIMARY KEY AUTOINCREMENT,
    id             BLOB NOT NULL,
    recipient      TEXT NOT NULL,
    device         BIGINT NOT NULL DEFAULT 0,
    sender         TEXT NOT NULL,
    sender_device  BIGINT NOT NULL DEFAULT 0,
    envelope       BLOB NOT NULL,
    received_at    BIGINT NOT NULL,
    expires_at     BIGINT NOT NULL,
    UNIQUE (recipient, device, id)
);
INSERT INTO message_queue_new (seq, id, recipient, sender, envelope, received_at, expires_at)
    SELECT seq, id, recipient, sender, envelope, received_at, expires_at FROM message_queue;
DROP TABLE message_queue;
ALTER TABLE message_queue_new RENAME TO message_queue;
CREATE INDEX message_queue_by_device ON message_queue (recipient, device, seq);
-- Dropping the old table dropped every index on it. Besides the one above
-- (which replaces message_queue_by_recipient), the index of senders' shares
-- of a recipient's queue is made again: migration 0004 makes it where it
-- ran, and this one where 0004 is not part of the schema yet.
CREATE INDEX IF NOT EXISTS message_queue_by_sender ON message_queue (recipient, sender);
