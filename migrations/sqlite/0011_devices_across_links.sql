-- Protocol v2 across the neighbourhood: messages for a remote user's device
-- wait for the next hop with that device (and the sending device) named, a
-- relayed id is remembered per recipient device, and the device lists and
-- bundles of users of other servers are kept as their home signed them.

CREATE TABLE outbound_queue_new (
    seq            INTEGER PRIMARY KEY AUTOINCREMENT,
    neighbour      TEXT NOT NULL,
    id             BLOB NOT NULL,
    recipient      TEXT NOT NULL,
    device         BIGINT NOT NULL DEFAULT 0,
    sender         TEXT NOT NULL,
    sender_device  BIGINT NOT NULL DEFAULT 0,
    envelope       BLOB NOT NULL,
    received_at    BIGINT NOT NULL,
    expires_at     BIGINT NOT NULL,
    path           TEXT NOT NULL,
    UNIQUE (neighbour, recipient, device, id)
);
INSERT INTO outbound_queue_new (seq, neighbour, id, recipient, sender, envelope, received_at,
        expires_at, path)
    SELECT seq, neighbour, id, recipient, sender, envelope, received_at, expires_at, path
    FROM outbound_queue;
DROP TABLE outbound_queue;
ALTER TABLE outbound_queue_new RENAME TO outbound_queue;
CREATE INDEX outbound_queue_by_neighbour ON outbound_queue (neighbour, seq);

CREATE TABLE relay_seen_new (
    recipient   TEXT NOT NULL,
    device      BIGINT NOT NULL DEFAULT 0,
    id          BLOB NOT NULL,
    expires_at  BIGINT NOT NULL,
    PRIMARY KEY (recipient, device, id)
);
INSERT INTO relay_seen_new (recipient, id, expires_at)
    SELECT recipient, id, expires_at FROM relay_seen;
DROP TABLE relay_seen;
ALTER TABLE relay_seen_new RENAME TO relay_seen;
CREATE INDEX relay_seen_by_expiry ON relay_seen (expires_at);

-- The newest signed device list of each user of another server, and the
-- newest bundle of each of its devices (each `u16` length ‖ bundle), as
-- their home server published them and the neighbourhood passed them on.
CREATE TABLE remote_devices (
    phone       TEXT PRIMARY KEY,
    list        BLOB NOT NULL,
    bundles     BLOB NOT NULL,
    updated_at  BIGINT NOT NULL
);
