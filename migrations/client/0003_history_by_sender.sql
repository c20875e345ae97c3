-- A message is identified by its sender's account and its id
-- (docs/PROTOCOL.md §14.4 step 0, §21.1), not by its id alone: another
-- account may use an id already seen here, by chance or on purpose, and
-- both messages are kept. A received message is stored once per (sender,
-- id); a sent one (this account is its sender) once per id. SQLite cannot
-- change a primary key in place, so the table is rebuilt with every row.
CREATE TABLE history_by_sender (id TEXT NOT NULL, direction TEXT NOT NULL,
    peer TEXT NOT NULL, peer_fingerprint TEXT NOT NULL, counter BIGINT NOT NULL,
    text TEXT NOT NULL, sent_at BIGINT NOT NULL, stored_at BIGINT NOT NULL);
INSERT INTO history_by_sender (id, direction, peer, peer_fingerprint, counter, text,
    sent_at, stored_at)
    SELECT id, direction, peer, peer_fingerprint, counter, text, sent_at, stored_at
    FROM history;
DROP TABLE history;
ALTER TABLE history_by_sender RENAME TO history;

-- The sender of a received message is its peer.
CREATE UNIQUE INDEX history_received ON history (peer, id) WHERE direction = 'in';
CREATE UNIQUE INDEX history_sent ON history (id) WHERE direction = 'out';
-- As before (0002): a v1 counter is used once per direction and peer key.
CREATE UNIQUE INDEX history_counter ON history (direction, peer_fingerprint, counter)
    WHERE counter > 0;
