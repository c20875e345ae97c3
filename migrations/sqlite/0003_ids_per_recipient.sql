-- Message ids are unique per recipient, not across the server: the same id
-- may reach two recipients, and a different envelope under an id already in
-- a recipient's queue is refused rather than taken for a retry. Relayed ids
-- and messages waiting for a neighbour are scoped the same way.

CREATE TABLE message_queue_new (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    id           BLOB NOT NULL,
    recipient    TEXT NOT NULL,
    sender       TEXT NOT NULL,
    envelope     BLOB NOT NULL,
    received_at  BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    UNIQUE (recipient, id)
);
INSERT INTO message_queue_new (seq, id, recipient, sender, envelope, received_at, expires_at)
    SELECT seq, id, recipient, sender, envelope, received_at, expires_at FROM message_queue;
DROP TABLE message_queue;
ALTER TABLE message_queue_new RENAME TO message_queue;
CREATE INDEX message_queue_by_recipient ON message_queue (recipient, seq);

CREATE TABLE outbound_queue_new (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    neighbour    TEXT NOT NULL,
    id           BLOB NOT NULL,
    recipient    TEXT NOT NULL,
    sender       TEXT NOT NULL,
    envelope     BLOB NOT NULL,
    received_at  BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    path         TEXT NOT NULL,
    UNIQUE (neighbour, recipient, id)
);
INSERT INTO outbound_queue_new (seq, neighbour, id, recipient, sender, envelope, received_at,
        expires_at, path)
    SELECT seq, neighbour, id, recipient, sender, envelope, received_at, expires_at, path
    FROM outbound_queue;
DROP TABLE outbound_queue;
ALTER TABLE outbound_queue_new RENAME TO outbound_queue;
CREATE INDEX outbound_queue_by_neighbour ON outbound_queue (neighbour, seq);

-- Seen ids keep their recipient where a queue still tells it; an id whose
-- message has left this server is forgotten (a neighbour's late re-send of
-- it is delivered again, and the client drops the repeat by id).
CREATE TABLE relay_seen_new (
    recipient   TEXT NOT NULL,
    id          BLOB NOT NULL,
    expires_at  BIGINT NOT NULL,
    PRIMARY KEY (recipient, id)
);
INSERT OR IGNORE INTO relay_seen_new (recipient, id, expires_at)
    SELECT q.recipient, s.id, s.expires_at FROM relay_seen s JOIN message_queue q ON q.id = s.id
    UNION ALL
    SELECT o.recipient, s.id, s.expires_at FROM relay_seen s JOIN outbound_queue o ON o.id = s.id;
DROP TABLE relay_seen;
ALTER TABLE relay_seen_new RENAME TO relay_seen;
CREATE INDEX relay_seen_by_expiry ON relay_seen (expires_at);
