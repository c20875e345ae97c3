-- Link codes' rendezvous shared by the members of a cluster (see the
-- PostgreSQL migration of the same number). A server on SQLite is alone
-- and keeps its rendezvous in memory: the table is here so that both
-- schemas stay the same, and `carrier-server migrate` has nothing to copy
-- (a rendezvous lasts minutes and does not survive a restart).
CREATE TABLE link_rendezvous (
    id          BLOB PRIMARY KEY,
    phone       TEXT NOT NULL,
    expires_at  BIGINT NOT NULL,
    request     BLOB,
    answered    BOOLEAN NOT NULL DEFAULT FALSE,
    response    BLOB
);
CREATE INDEX link_rendezvous_by_phone ON link_rendezvous (phone);
