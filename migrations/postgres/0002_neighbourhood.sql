-- The neighbourhood: users of every server, messages waiting for a
-- neighbour, ids already relayed, and neighbour keys pinned on first contact.

CREATE TABLE directory (
    phone          TEXT PRIMARY KEY,
    key_type       TEXT NOT NULL,
    public_key     BYTEA NOT NULL,
    home_key       BYTEA NOT NULL,
    home_name      TEXT NOT NULL,
    registered_at  BIGINT NOT NULL,
    signature      BYTEA NOT NULL,
    via            TEXT,
    hops           BIGINT NOT NULL
);

CREATE TABLE outbound_queue (
    seq          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    neighbour    TEXT NOT NULL,
    id           BYTEA NOT NULL,
    recipient    TEXT NOT NULL,
    sender       TEXT NOT NULL,
    envelope     BYTEA NOT NULL,
    received_at  BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    path         TEXT NOT NULL,
    UNIQUE (neighbour, id)
);

CREATE INDEX outbound_queue_by_neighbour ON outbound_queue (neighbour, seq);

CREATE TABLE relay_seen (
    id          BYTEA PRIMARY KEY,
    expires_at  BIGINT NOT NULL
);

CREATE TABLE neighbour_pins (
    address      TEXT PRIMARY KEY,
    fingerprint  TEXT NOT NULL
);
