-- Carrier's server schema on PostgreSQL: the same tables, columns and
-- versions as on SQLite (migrations/sqlite/), with BYTEA for bytes and
-- identity columns for arrival order. Times are BIGINT milliseconds.

CREATE TABLE users (
    phone         TEXT PRIMARY KEY,
    key_type      TEXT NOT NULL,
    public_key    BYTEA NOT NULL,
    fingerprint   TEXT NOT NULL,
    registered_at BIGINT NOT NULL
);

CREATE TABLE otp_codes (
    phone       TEXT PRIMARY KEY,
    code_hash   TEXT NOT NULL,
    key_type    TEXT NOT NULL,
    public_key  BYTEA NOT NULL,
    issued_at   BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL
);

CREATE TABLE otp_limits (
    phone         TEXT PRIMARY KEY,
    window_start  BIGINT NOT NULL,
    codes_issued  BIGINT NOT NULL,
    wrong_tries   BIGINT NOT NULL
);

CREATE TABLE message_queue (
    seq          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id           BYTEA NOT NULL UNIQUE,
    recipient    TEXT NOT NULL,
    sender       TEXT NOT NULL,
    envelope     BYTEA NOT NULL,
    received_at  BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL
);

CREATE INDEX message_queue_by_recipient ON message_queue (recipient, seq);
