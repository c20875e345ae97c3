-- One-time codes are counted per (phone, client address) as well as per
-- (phone, key) and per phone: a stranger from one address can spend only
-- its address's share of a phone's codes, never all of them. Each pending
-- code keeps the address (an IPv4 address or IPv6 /64, as text) that asked
-- for it, so a registration clears the count of its own address only.
ALTER TABLE otp_codes ADD COLUMN address TEXT NOT NULL DEFAULT '';

CREATE TABLE otp_address_limits (
    phone         TEXT NOT NULL,
    address       TEXT NOT NULL,
    window_start  BIGINT NOT NULL,
    codes_issued  BIGINT NOT NULL,
    PRIMARY KEY (phone, address)
);
