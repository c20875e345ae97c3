-- Protocol v2 across the neighbourhood (see the SQLite migration of the
-- same number).

ALTER TABLE outbound_queue ADD COLUMN device BIGINT NOT NULL DEFAULT 0;
ALTER TABLE outbound_queue ADD COLUMN sender_device BIGINT NOT NULL DEFAULT 0;
ALTER TABLE outbound_queue DROP CONSTRAINT outbound_queue_neighbour_recipient_id_key;
ALTER TABLE outbound_queue ADD CONSTRAINT outbound_queue_neighbour_recipient_device_id_key
    UNIQUE (neighbour, recipient, device, id);

ALTER TABLE relay_seen ADD COLUMN device BIGINT NOT NULL DEFAULT 0;
ALTER TABLE relay_seen DROP CONSTRAINT relay_seen_pkey;
ALTER TABLE relay_seen ADD PRIMARY KEY (recipient, device, id);

CREATE TABLE remote_devices (
    phone       TEXT PRIMARY KEY,
    list        BYTEA NOT NULL,
    bundles     BYTEA NOT NULL,
    updated_at  BIGINT NOT NULL
);
