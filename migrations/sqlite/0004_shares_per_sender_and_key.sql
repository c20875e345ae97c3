-- Each sender may hold only a share of a recipient's queue; the server
-- counts what one sender holds there when it first meets the pair.
CREATE INDEX IF NOT EXISTS message_queue_by_sender ON message_queue (recipient, sender);

-- Registration codes and their limits belong to a (phone, key) pair: a
-- stranger's `register` for a phone neither replaces the pending code of
-- another key nor spends its tries. Counters of a phone with no pending code
-- are dropped (they would start afresh at its next code anyway).
CREATE TABLE otp_codes_new (
    phone       TEXT NOT NULL,
    code_hash   TEXT NOT NULL,
    key_type    TEXT NOT NULL,
    public_key  BLOB NOT NULL,
    issued_at   BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    PRIMARY KEY (phone, public_key)
);
INSERT INTO otp_codes_new (phone, code_hash, key_type, public_key, issued_at, expires_at)
    SELECT phone, code_hash, key_type, public_key, issued_at, expires_at FROM otp_codes;

CREATE TABLE otp_limits_new (
    phone         TEXT NOT NULL,
    public_key    BLOB NOT NULL,
    window_start  BIGINT NOT NULL,
    codes_issued  BIGINT NOT NULL,
    wrong_tries   BIGINT NOT NULL,
    PRIMARY KEY (phone, public_key)
);
INSERT INTO otp_limits_new (phone, public_key, window_start, codes_issued, wrong_tries)
    SELECT l.phone, c.public_key, l.window_start, l.codes_issued, l.wrong_tries
    FROM otp_limits l JOIN otp_codes c ON c.phone = l.phone;

DROP TABLE otp_codes;
ALTER TABLE otp_codes_new RENAME TO otp_codes;
DROP TABLE otp_limits;
ALTER TABLE otp_limits_new RENAME TO otp_limits;
