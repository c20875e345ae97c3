-- One-time codes counted per (phone, client address) too (see the SQLite
-- migration of the same number).
ALTER TABLE otp_codes ADD COLUMN address TEXT NOT NULL DEFAULT '';

CREATE TABLE otp_address_limits (
    phone         TEXT NOT NULL,
    address       TEXT NOT NULL,
    window_start  BIGINT NOT NULL,
    codes_issued  BIGINT NOT NULL,
    PRIMARY KEY (phone, address)
);
