-- An acknowledgement names messages by id alone, not by sender, so its
-- delete looks them up by (recipient, device, id). The unique index led
-- with (recipient, device, sender): an ack could use only its first two
-- columns and walked the device's whole queue for every statement, and
-- draining a long queue took time in the square of its length. The same
-- columns with the id before the sender keep ids unique per sender and
-- serve both lookups.
--
-- SQLite cannot change a table's constraints in place: the queue is copied
-- into a new table. Its position counter is carried over, so a position
-- once handed out (and perhaps held by a client as a fetch cursor) is never
-- handed out again, even when the newest messages have been deleted.

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
    UNIQUE (recipient, device, id, sender)
);
INSERT INTO message_queue_new (seq, id, recipient, device, sender, sender_device, envelope,
        received_at, expires_at)
    SELECT seq, id, recipient, device, sender, sender_device, envelope, received_at, expires_at
    FROM message_queue;
DELETE FROM sqlite_sequence WHERE name = 'message_queue_new';
INSERT INTO sqlite_sequence (name, seq)
    SELECT 'message_queue_new', seq FROM sqlite_sequence WHERE name = 'message_queue';
DROP TABLE message_queue;
ALTER TABLE message_queue_new RENAME TO message_queue;
CREATE INDEX message_queue_by_device ON message_queue (recipient, device, seq);
