-- The neighbourhood: users of every server, messages waiting for a
-- neighbour, ids already relayed, and neighbour keys pinned on first contact.

-- Every user known in the neighbourhood, as signed by their home server.
-- `via` is the neighbour (fingerprint) that leads to the home server, NULL
-- for our own users; `hops` is the number of links to it.
CREATE TABLE directory (
    phone          TEXT PRIMARY KEY,
    key_type       TEXT NOT NULL,
    public_key     BLOB NOT NULL,
    home_key       BLOB NOT NULL,
    home_name      TEXT NOT NULL,
    registered_at  BIGINT NOT NULL,
    signature      BLOB NOT NULL,
    via            TEXT,
    hops           BIGINT NOT NULL
);

-- Messages committed here and waiting for the next hop to acknowledge them,
-- in order, per neighbour.
CREATE TABLE outbound_queue (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    neighbour    TEXT NOT NULL,
    id           BLOB NOT NULL,
    recipient    TEXT NOT NULL,
    sender       TEXT NOT NULL,
    envelope     BLOB NOT NULL,
    received_at  BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    path         TEXT NOT NULL,
    UNIQUE (neighbour, id)
);

CREATE INDEX outbound_queue_by_neighbour ON outbound_queue (neighbour, seq);

-- Ids of messages received from neighbours, so a message re-sent after a
-- lost acknowledgement is delivered once.
CREATE TABLE relay_seen (
    id          BLOB PRIMARY KEY,
    expires_at  BIGINT NOT NULL
);

-- Neighbours configured without a fingerprint, pinned on first contact.
CREATE TABLE neighbour_pins (
    address      TEXT PRIMARY KEY,
    fingerprint  TEXT NOT NULL
);
