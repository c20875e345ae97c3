-- The client's store in its home directory (`client.db`). The server's
-- migrator reads only the files directly in `migrations/`, never this
-- directory.
--
-- Homes made before the store had migrations already hold exactly these
-- tables, created by the same statements, but no migration table. Every
-- statement here therefore says IF NOT EXISTS: on such a home this migration
-- changes nothing and is only recorded as applied. Later migrations need no
-- such care.

-- Server keys pinned per address.
CREATE TABLE IF NOT EXISTS servers (addr TEXT PRIMARY KEY, fingerprint TEXT NOT NULL);

-- Contact keys pinned on first use, replaced only by `carrier trust`.
CREATE TABLE IF NOT EXISTS contacts (phone TEXT PRIMARY KEY, key_type TEXT NOT NULL,
    public_key BLOB NOT NULL, fingerprint TEXT NOT NULL, pinned_at BIGINT NOT NULL);

-- The next envelope counter per recipient.
CREATE TABLE IF NOT EXISTS counters (peer TEXT PRIMARY KEY, next BIGINT NOT NULL);

-- Every message sent ('out') or received ('in'). A message to oneself is
-- stored twice, once each way.
CREATE TABLE IF NOT EXISTS history (id TEXT NOT NULL, direction TEXT NOT NULL,
    peer TEXT NOT NULL, peer_fingerprint TEXT NOT NULL, counter BIGINT NOT NULL,
    text TEXT NOT NULL, sent_at BIGINT NOT NULL, stored_at BIGINT NOT NULL,
    PRIMARY KEY (id, direction));

-- A counter is used once per direction and peer key: a replayed message is
-- refused.
CREATE UNIQUE INDEX IF NOT EXISTS history_counter ON history (direction, peer_fingerprint, counter);
