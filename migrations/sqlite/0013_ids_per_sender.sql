-- A message id is unique per recipient device and sender, not per device
-- queue: a message from one sender under an id cannot keep another
-- sender's message with the same id (for instance the sync copy of a
-- message whose id its recipient has just seen) out of a device's queue.
-- A retry is still the same sender, id and envelope for the same device.
-- Relayed copies are remembered the same way.

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
    UNIQUE (recipient, device, sender, id)
);
INSERT INTO message_queue_new (seq, id, recipient, device, sender, sender_device, envelope,
        received_at, expires_at)
    SELECT seq, id, recipient, device, sender, sender_device, envelope, received_at, expires_at
    FROM message_queue;
DROP TABLE message_queue;
ALTER TABLE message_queue_new RENAME TO message_queue;
CREATE INDEX message_queue_by_device ON message_queue (recipient, device, seq);

-- A seen id keeps the sender of the copy still queued here or waiting for a
-- neighbour; one whose copy has left this server gets an empty sender (a
-- neighbour's late re-send of it is delivered again, and the client drops
-- the repeat by sender and id). The copies are looked up by (recipient,
-- device, id), which no index of either queue leads with: without these
-- two, each seen id would scan a queue, and a busy relay's upgrade would
-- take time in the product of the two tables' sizes.
CREATE INDEX message_queue_by_slot_0013 ON message_queue (recipient, device, id);
CREATE INDEX outbound_queue_by_slot_0013 ON outbound_queue (recipient, device, id);
CREATE TABLE relay_seen_new (
    recipient   TEXT NOT NULL,
    device      BIGINT NOT NULL DEFAULT 0,
    sender      TEXT NOT NULL DEFAULT '',
    id          BLOB NOT NULL,
    expires_at  BIGINT NOT NULL,
    PRIMARY KEY (recipient, device, sender, id)
);
INSERT INTO relay_seen_new (recipient, device, sender, id, expires_at)
    SELECT s.recipient, s.device,
        COALESCE(
            (SELECT q.sender FROM message_queue q
             WHERE q.recipient = s.recipient AND q.device = s.device AND q.id = s.id
             ORDER BY q.seq LIMIT 1),
            (SELECT o.sender FROM outbound_queue o
             WHERE o.recipient = s.recipient AND o.device = s.device AND o.id = s.id
             ORDER BY o.seq LIMIT 1),
            ''),
        s.id, s.expires_at
    FROM relay_seen s;
DROP INDEX message_queue_by_slot_0013;
DROP INDEX outbound_queue_by_slot_0013;
DROP TABLE relay_seen;
ALTER TABLE relay_seen_new RENAME TO relay_seen;
CREATE INDEX relay_seen_by_expiry ON relay_seen (expires_at);
