-- Users an operator has disabled (`carrier-server admin users disable`):
-- they stay registered and keep their queue, but cannot log in.
CREATE TABLE disabled_users (
    phone        TEXT PRIMARY KEY,
    disabled_at  BIGINT NOT NULL
);
