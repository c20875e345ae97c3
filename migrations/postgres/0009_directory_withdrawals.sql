-- Users withdrawn from the neighbourhood by their home server (`admin users
-- delete`): a tombstone per phone, so a stale or replayed entry for the
-- withdrawn registration does not bring its route back. `registered_at`
-- and the home key (by its fingerprint) are the version of the registration
-- withdrawn. An empty `signature` (and `home_key`) marks one of our own
-- withdrawals recorded while the server was stopped, to be signed and
-- flooded at its next start.
-- Kept until `withdrawn_at` is older than the tombstone lifetime.
CREATE TABLE directory_withdrawals (
    phone          TEXT PRIMARY KEY,
    registered_at  BIGINT NOT NULL,
    withdrawn_at   BIGINT NOT NULL,
    home_key       BYTEA NOT NULL,
    signature      BYTEA NOT NULL
);

CREATE INDEX directory_withdrawals_by_age ON directory_withdrawals (withdrawn_at);
