-- Protocol v2: this device, its sessions with other devices, and what it
-- has checked about its contacts' devices. Every secret value (the device
-- key, the prekey store, each session) is stored sealed with the home's
-- state key (`state.pem`, encrypted with the passphrase like the identity
-- key), never in the clear.

-- This device: at most one row.
CREATE TABLE device (
    only INTEGER PRIMARY KEY CHECK (only = 1),
    device_id BIGINT NOT NULL,
    name TEXT NOT NULL,
    -- `LocalDevice`, sealed.
    local BLOB NOT NULL,
    -- `PrekeyStore`, sealed.
    prekeys BLOB NOT NULL,
    -- The highest device id this device has given out or seen in its
    -- account's list, so a removed device's id is not given out again.
    highest_id BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);

-- Double Ratchet sessions, up to four per peer device (the least recently
-- used go first). A device sends in the session it most recently opened a
-- message in (`opened_at`), else the one it made last (`created_at`).
CREATE TABLE sessions (
    peer TEXT NOT NULL,
    peer_device BIGINT NOT NULL,
    session_id BLOB NOT NULL,
    -- `Session`, sealed.
    state BLOB NOT NULL,
    created_at BIGINT NOT NULL,
    opened_at BIGINT NOT NULL,
    used_at BIGINT NOT NULL,
    PRIMARY KEY (peer, peer_device, session_id)
);

-- Contacts' (and this account's own) devices as checked against the
-- pinned account key: the chain of docs/PROTOCOL.md §10.1.
CREATE TABLE peer_devices (
    phone TEXT NOT NULL,
    device_id BIGINT NOT NULL,
    account_fingerprint TEXT NOT NULL,
    device_key BLOB NOT NULL,
    name TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (phone, device_id)
);

-- The highest device-list version accepted per account key: an older list
-- is refused, so a server cannot bring back a removed device.
CREATE TABLE peer_lists (
    phone TEXT PRIMARY KEY,
    account_fingerprint TEXT NOT NULL,
    version BIGINT NOT NULL
);

-- Devices a contact added under their pinned account key, not yet told to
-- the user by `fetch` (told once).
CREATE TABLE device_notices (
    phone TEXT NOT NULL,
    device_id BIGINT NOT NULL,
    name TEXT NOT NULL,
    PRIMARY KEY (phone, device_id)
);

-- v2 messages carry no counter (replays fail in the ratchet): they are
-- stored with counter 0, which the replay index of v1 counters leaves out.
DROP INDEX history_counter;
CREATE UNIQUE INDEX history_counter ON history (direction, peer_fingerprint, counter)
    WHERE counter > 0;
