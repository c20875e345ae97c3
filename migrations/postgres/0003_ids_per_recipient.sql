-- Message ids are unique per recipient, not across the server (see the
-- SQLite migration of the same number). Every key now starts with the
-- recipient (or the neighbour), the column a distributed deployment would
-- shard by.

ALTER TABLE message_queue DROP CONSTRAINT message_queue_id_key;
ALTER TABLE message_queue ADD CONSTRAINT message_queue_recipient_id_key UNIQUE (recipient, id);

ALTER TABLE outbound_queue DROP CONSTRAINT outbound_queue_neighbour_id_key;
ALTER TABLE outbound_queue
    ADD CONSTRAINT outbound_queue_neighbour_recipient_id_key UNIQUE (neighbour, recipient, id);

DROP TABLE relay_seen;
CREATE TABLE relay_seen (
    recipient   TEXT NOT NULL,
    id          BYTEA NOT NULL,
    expires_at  BIGINT NOT NULL,
    PRIMARY KEY (recipient, id)
);
CREATE INDEX relay_seen_by_expiry ON relay_seen (expires_at);
