-- Carrier's server schema. Portable SQL: BIGINT millisecond times, TEXT
-- phone numbers in E.164, BLOB keys and envelopes, recipient-first indexes.

-- The seeds' user_db: one row per registered phone.
CREATE TABLE users (
    phone         TEXT PRIMARY KEY,
    key_type      TEXT NOT NULL,
    public_key    BLOB NOT NULL,
    fingerprint   TEXT NOT NULL,
    registered_at BIGINT NOT NULL
);

-- The code currently pending for a phone, with the key it will register.
-- Only an argon2 hash of the code is kept.
CREATE TABLE otp_codes (
    phone       TEXT PRIMARY KEY,
    code_hash   TEXT NOT NULL,
    key_type    TEXT NOT NULL,
    public_key  BLOB NOT NULL,
    issued_at   BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL
);

-- Counters that outlive any single code: how many codes were issued and how
-- many wrong tries were made in the current window.
CREATE TABLE otp_limits (
    phone         TEXT PRIMARY KEY,
    window_start  BIGINT NOT NULL,
    codes_issued  BIGINT NOT NULL,
    wrong_tries   BIGINT NOT NULL
);

-- The seeds' message_queue: sealed envelopes waiting for their recipient, in
-- arrival order. `id` is the sender-chosen 128-bit message id.
CREATE TABLE message_queue (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    id           BLOB NOT NULL UNIQUE,
    recipient    TEXT NOT NULL,
    sender       TEXT NOT NULL,
    envelope     BLOB NOT NULL,
    received_at  BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL
);

CREATE INDEX message_queue_by_recipient ON message_queue (recipient, seq);
