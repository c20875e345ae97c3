-- Several servers ("members") may share this database as one server. The
-- first member to start records the identity they all must present; a
-- member with another key refuses to start.
CREATE TABLE cluster_identity (
    id              SMALLINT PRIMARY KEY CHECK (id = 1),
    fingerprint     TEXT NOT NULL,
    -- HMAC-SHA256 of a fixed label under the one-time-code key: tells a
    -- member whose code key differs without storing the key.
    code_key_check  TEXT NOT NULL,
    recorded_at     BIGINT NOT NULL
);

-- Who is connected to each live member (a JSON array of phone numbers),
-- refreshed by the member's heartbeat; rows of silent members are ignored.
CREATE TABLE cluster_members (
    member   TEXT PRIMARY KEY,
    online   TEXT NOT NULL,
    seen_at  BIGINT NOT NULL
);
