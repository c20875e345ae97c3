-- An acknowledgement names messages by id alone, not by sender, so its
-- delete looks them up by (recipient, device, id). The unique constraint
-- led with (recipient, device, sender): an ack could use only its first
-- two columns and walked the device's whole queue, and draining a long
-- queue took time in the square of its length. The same columns with the
-- id before the sender keep ids unique per sender and serve both lookups.

ALTER TABLE message_queue DROP CONSTRAINT message_queue_recipient_device_sender_id_key;
ALTER TABLE message_queue
    ADD CONSTRAINT message_queue_recipient_device_id_sender_key
    UNIQUE (recipient, device, id, sender);
