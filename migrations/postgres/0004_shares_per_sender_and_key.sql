-- Each sender may hold only a share of a recipient's queue (see the SQLite
-- migration of the same number).
CREATE INDEX message_queue_by_sender ON message_queue (recipient, sender);

-- Registration codes and their limits belong to a (phone, key) pair.
ALTER TABLE otp_codes DROP CONSTRAINT otp_codes_pkey;
ALTER TABLE otp_codes ADD PRIMARY KEY (phone, public_key);

ALTER TABLE otp_limits ADD COLUMN public_key BYTEA;
UPDATE otp_limits l SET public_key = c.public_key FROM otp_codes c WHERE c.phone = l.phone;
DELETE FROM otp_limits WHERE public_key IS NULL;
ALTER TABLE otp_limits ALTER COLUMN public_key SET NOT NULL;
ALTER TABLE otp_limits DROP CONSTRAINT otp_limits_pkey;
ALTER TABLE otp_limits ADD PRIMARY KEY (phone, public_key);
