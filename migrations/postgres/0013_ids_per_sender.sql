-- A message id is unique per recipient device and sender, not per device
-- queue: a message from one sender under an id cannot keep another
-- sender's message with the same id (for instance the sync copy of a
-- message whose id its recipient has just seen) out of a device's queue.
-- A retry is still the same sender, id and envelope for the same device.
-- Relayed copies are remembered the same way.

ALTER TABLE message_queue DROP CONSTRAINT message_queue_recipient_device_id_key;
ALTER TABLE message_queue
    ADD CONSTRAINT message_queue_recipient_device_sender_id_key
    UNIQUE (recipient, device, sender, id);

-- A seen id keeps the sender of the copy still queued here or waiting for a
-- neighbour; one whose copy has left this server gets an empty sender (a
-- neighbour's late re-send of it is delivered again, and the client drops
-- the repeat by sender and id). The copies are looked up by (recipient,
-- device, id), which no index of either queue leads with: without these
-- two, each seen id would scan a queue, and a busy relay's upgrade would
-- take time in the product of the two tables' sizes.
CREATE INDEX message_queue_by_slot_0013 ON message_queue (recipient, device, id);
CREATE INDEX outbound_queue_by_slot_0013 ON outbound_queue (recipient, device, id);
-- Tables filled since their last statistics could be planned as small,
-- each lookup then walking a whole queue in `seq` order for its LIMIT 1.
ANALYZE message_queue;
ANALYZE outbound_queue;
ANALYZE relay_seen;
ALTER TABLE relay_seen ADD COLUMN sender TEXT NOT NULL DEFAULT '';
UPDATE relay_seen s SET sender = COALESCE(
    (SELECT q.sender FROM message_queue q
     WHERE q.recipient = s.recipient AND q.device = s.device AND q.id = s.id
     ORDER BY q.seq LIMIT 1),
    (SELECT o.sender FROM outbound_queue o
     WHERE o.recipient = s.recipient AND o.device = s.device AND o.id = s.id
     ORDER BY o.seq LIMIT 1),
    '');
DROP INDEX message_queue_by_slot_0013;
DROP INDEX outbound_queue_by_slot_0013;
ALTER TABLE relay_seen DROP CONSTRAINT relay_seen_pkey;
ALTER TABLE relay_seen ADD PRIMARY KEY (recipient, device, sender, id);
