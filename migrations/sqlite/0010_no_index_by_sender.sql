-- The writer reads each sender's share of a recipient's queue in one
-- grouped pass over the recipient's rows (by message_queue_by_device), so
-- the index of (recipient, sender) has no reader left. Keeping it up to date
-- cost a page write per (recipient, sender) pair in every commit: about
-- twice the writes per stored message.
DROP INDEX IF EXISTS message_queue_by_sender;
